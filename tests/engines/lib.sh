# Shared helpers for the engine suites (sourced, bash only).
#
# Environment:
#   RUNTIME   the OCI runtime the engines must call (default: nvbind, found as below); set
#             RUNTIME=$(command -v runc) to check the harness itself against the reference.
#   NVBIND    the nvbind binary (default: the first of $CARGO_TARGET_DIR/{release,debug}/nvbind
#             and target/{release,debug}/nvbind in the repository).
#   KEEP=1    keep the temp dir for inspection.
set -uo pipefail

ENGINES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$ENGINES_DIR/../.." && pwd)
if [ -z "${NVBIND:-}" ]; then
  for c in "${CARGO_TARGET_DIR:-$REPO/target}"/{release,debug}/nvbind "$REPO"/target/{release,debug}/nvbind; do
    [ -x "$c" ] && { NVBIND=$c; break; }
  done
fi
NVBIND=${NVBIND:-}
RUNTIME=${RUNTIME:-$NVBIND}
[ -n "$RUNTIME" ] && [ -x "$RUNTIME" ] || {
  echo "engines: no runtime binary (build nvbind with cargo build --release -p nvbind, or set RUNTIME)" >&2
  exit 2
}
RUNTIME=$(readlink -f "$RUNTIME")
RUNTIME_KIND=$(basename "$RUNTIME")   # nvbind or runc: a few messages differ
SUITE=${SUITE:-engine}
PASS=0
FAIL=0
FAILED_NAMES=()
CLEANUPS=()

say() { printf '# %s\n' "$*"; }

# ensure_packages PKG...: install the Debian packages that are missing (CI starts bare).
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Cleanup actions run last-registered first, on any exit (failure and interrupt included).
on_exit() { CLEANUPS+=("$1"); }
run_cleanups() {
  local i
  for ((i = ${#CLEANUPS[@]} - 1; i >= 0; i--)); do
    eval "${CLEANUPS[$i]}" >/dev/null 2>&1 || true
  done
  CLEANUPS=()
}
trap 'run_cleanups' EXIT
trap 'exit 130' INT TERM

# make_tmp: the suite's private directory (on the root fs: overlay needs ext4-like storage).
make_tmp() {
  T=$(mktemp -d "/var/tmp/nvbind-$SUITE.XXXXXX")
  chmod 755 "$T"
  on_exit "remove_tmp '$T'"
}
remove_tmp() {
  local dir=$1 m
  [ "${KEEP:-0}" = 1 ] && { echo "# kept $dir" >&2; return 0; }
  # Unmount whatever the engines left mounted under it, deepest first (again, if a late
  # cleanup process of the engine mounted something meanwhile).
  local try
  for try in 1 2 3; do
    for m in $(awk -v d="$dir/" 'index($2 "/", d) == 1 {print $2}' /proc/self/mounts | sort -r); do
      umount -l "$m" 2>/dev/null || true
    done
    awk -v d="$dir/" 'index($2 "/", d) == 1 {f = 1} END {exit !f}' /proc/self/mounts || break
    sleep 1
  done
  rm -rf --one-file-system "$dir" 2>/dev/null || rm -rf "$dir"
}

# stop_pid PID [SECONDS]: TERM, wait, then KILL; only ever the PID we started.
stop_pid() {
  local pid=$1 t=${2:-15} i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < t * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
}

# wait_for SECONDS CMD...: poll until CMD succeeds.
wait_for() {
  local t=$1 i
  shift
  for ((i = 0; i < t * 10; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

# make_rootfs DIR: a busybox-static root filesystem.
make_rootfs() {
  local dir=$1 bb applet
  bb=/bin/busybox
  file -L "$bb" 2>/dev/null | grep -q 'statically linked' || bb=$(dpkg -L busybox-static | grep -m1 '/busybox$')
  mkdir -p "$dir"/{bin,proc,sys,dev,tmp,etc,root,run,data}
  cp "$bb" "$dir/bin/busybox"
  for applet in $("$bb" --list); do
    [ -e "$dir/bin/$applet" ] || ln -s busybox "$dir/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' >"$dir/etc/group"
  chmod 1777 "$dir/tmp"
}

# --- results ----------------------------------------------------------------------------
_n=0
pass() { _n=$((_n + 1)); PASS=$((PASS + 1)); echo "ok $_n - $SUITE: $1"; }
fail() {
  _n=$((_n + 1)); FAIL=$((FAIL + 1)); FAILED_NAMES+=("$1")
  echo "not ok $_n - $SUITE: $1"
  shift
  [ $# -gt 0 ] && printf '%s\n' "$@" | sed 's/^/#   /' | head -40
  return 0
}

# expect NAME WANT_RC WANT_REGEX CMD...: run CMD (stdout+stderr in $OUT), check rc and output.
# WANT_RC "any" skips the rc check; WANT_REGEX "" skips the output check.
OUT=
RC=
expect() {
  local name=$1 want_rc=$2 want_re=$3
  shift 3
  OUT=$("$@" 2>&1)
  RC=$?
  if [ "$want_rc" != any ] && [ "$RC" != "$want_rc" ]; then
    fail "$name" "command: $*" "exit code $RC, want $want_rc" "output: $OUT"
  elif [ -n "$want_re" ] && ! grep -Eq -- "$want_re" <<<"$OUT"; then
    fail "$name" "command: $*" "output does not match /$want_re/:" "$OUT"
  else
    pass "$name"
  fi
}

# check NAME CMD...: CMD must succeed.
check() { local name=$1; shift; expect "$name" 0 "" "$@"; }

# tty_run CMD...: run CMD under a pseudo-terminal (script(1)), feeding it "$TTY_INPUT".
tty_run() {
  local cmd
  printf -v cmd '%q ' "$@"
  # script(1) runs the command through $SHELL: hand it this shell's functions and variables.
  export T RUNTIME NVBIND CONTAINERS_CONF CONTAINERS_STORAGE_CONF DOCKER_HOST DOCKER CTR_SOCK 2>/dev/null
  { sleep 1; printf '%s' "${TTY_INPUT:-}"; sleep 2; } |
    SHELL=/bin/bash timeout 30 script -qefc "$(declare -f); $cmd" /dev/null
}

# elapsed CMD...: seconds (integer, rounded down) CMD took, in $ELAPSED; rc in $RC.
elapsed() {
  local s e
  s=$(date +%s%N)
  OUT=$("$@" 2>&1)
  RC=$?
  e=$(date +%s%N)
  ELAPSED=$(((e - s) / 1000000000))
}

# dump_logs FILE...: print the tails of the engine's and the runtime's logs after a failure.
dump_logs() {
  local f
  for f in "$@"; do
    [ -s "$f" ] || continue
    echo "# ---- $f (last 60 lines)"
    tail -n 60 "$f" | sed 's/^/#   /'
  done
}

# runtime_logs DIR: the runtime's own log files the engines keep under DIR (log.json, --log).
runtime_logs() {
  find "$1" \( -name 'log.json' -o -name 'nvbind*.log' -o -name 'oci-log' -o -name 'runtime.log' \) -type f 2>/dev/null | head -20
}

# finish: print the summary; exit status is the number of failures (capped).
finish() {
  local secs=$((SECONDS))
  echo "# $SUITE with $RUNTIME_KIND: $PASS passed, $FAIL failed (${secs}s)"
  [ $FAIL -gt 0 ] && printf '#   failed: %s\n' "${FAILED_NAMES[@]}"
  [ $FAIL -eq 0 ]
}

# Messages a missing executable produces: nvbind's own, or runc's when checking the harness.
missing_exec_re() {
  case $RUNTIME_KIND in
    runc) echo 'stat /nonexistent-cmd: no such file or directory' ;;
    *) echo "executable '/nonexistent-cmd' not found" ;;
  esac
}

# --- the scenario shared by the docker-like CLIs (docker, podman) --------------------------
# cli_scenario E IMAGE: E is a function that runs the engine's CLI with its private flags.
cli_scenario() {
  local E=$1 img=$2 id t code vol=$T/vol
  mkdir -p "$vol"
  echo "from-host" >"$vol/host.txt"

  expect "run --rm passes stdout through" 0 '^hello-from-busybox$' \
    $E run --rm "$img" echo hello-from-busybox
  expect "run --rm passes a non-zero exit code through" 3 '' \
    $E run --rm "$img" sh -c 'exit 3'
  expect "env and workdir" 0 '^bar /tmp$' \
    $E run --rm -e FOO=bar -w /tmp "$img" sh -c 'echo $FOO $(pwd)'
  expect "memory limit visible inside" 0 '^67108864$' \
    $E run --rm --memory 64m "$img" sh -c \
    'cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max'
  expect "pids limit visible inside" 0 '^50$' \
    $E run --rm --pids-limit 50 "$img" sh -c \
    'cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max'
  expect "bind-mounted volume, both directions" 0 '^from-host$' \
    $E run --rm -v "$vol:/data" "$img" sh -c 'cat /data/host.txt; echo from-container >/data/out.txt'
  if [ "$(cat "$vol/out.txt" 2>/dev/null)" = from-container ]; then pass "volume write reaches the host"; else fail "volume write reaches the host"; fi

  # -d, exec, logs
  expect "run -d" 0 '' $E run -d --name c-detached "$img" sh -c 'echo log-line-1; exec sleep 1000'
  expect "exec passes stdout through" 0 '^in-exec$' $E exec c-detached echo in-exec
  expect "exec passes a non-zero exit code through" 5 '' $E exec c-detached sh -c 'exit 5'
  expect "exec sees the container's env and processes" 0 'sleep 1000' $E exec c-detached ps
  wait_for 10 sh -c "$E logs c-detached 2>&1 | grep -q log-line-1" >/dev/null 2>&1 || true
  expect "logs of the container" 0 'log-line-1' $E logs c-detached

  # exec -it: a pty for the exec'd process (the runtime's exec with a console socket)
  OUT=$(TTY_INPUT=$'exec-typed\r' tty_run $E exec -it c-detached sh -c '[ -t 0 ] && echo exec-stdin-is-a-tty; read x; echo "got:$x"' 2>&1)
  if grep -q 'exec-stdin-is-a-tty' <<<"$OUT" && grep -q 'got:exec-typed' <<<"$OUT"; then
    pass "exec -it: tty inside, input echoed through the pty"
  else
    fail "exec -it: tty inside, input echoed through the pty" "$OUT"
  fi

  # update: new limits on a running container (the runtime's update verb)
  expect "update --memory on a running container" 0 '' $E update --memory 128m --memory-swap 256m c-detached
  expect "new memory limit visible inside" 0 '^134217728$' $E exec c-detached sh -c \
    'cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max'

  # pause / unpause
  expect "pause" 0 '' $E pause c-detached
  expect "paused state" 0 '^paused$' $E inspect -f '{{.State.Status}}' c-detached
  expect "unpause" 0 '' $E unpause c-detached
  expect "exec after unpause" 0 '^back$' $E exec c-detached echo back

  # restart: stop (kill after 1s: sleep as pid 1 ignores TERM), then create + start again
  expect "restart" 0 '' $E restart -t 1 c-detached
  expect "exec after restart" 0 '^restarted$' $E exec c-detached echo restarted

  # kill
  expect "kill" 0 '' $E kill c-detached
  wait_for 10 sh -c "[ \"\$($E inspect -f '{{.State.Running}}' c-detached)\" = false ]"
  expect "killed container exits with 137" 0 '^137$' $E inspect -f '{{.State.ExitCode}}' c-detached
  expect "rm" 0 '' $E rm c-detached

  # stop: SIGTERM honoured quickly; ignored -> SIGKILL after the timeout
  $E run -d --name c-term "$img" sh -c 'trap "exit 42" TERM; while :; do sleep 0.1; done' >/dev/null 2>&1
  sleep 1
  elapsed $E stop -t 20 c-term
  code=$($E inspect -f '{{.State.ExitCode}}' c-term 2>&1)
  if [ "$RC" = 0 ] && [ "$ELAPSED" -lt 10 ] && [ "$code" = 42 ]; then
    pass "stop: SIGTERM honoured (${ELAPSED}s, exit $code)"
  else
    fail "stop: SIGTERM honoured" "rc $RC after ${ELAPSED}s, exit code $code" "$OUT"
  fi
  $E run -d --name c-stubborn "$img" sh -c 'trap "" TERM; while :; do sleep 0.1; done' >/dev/null 2>&1
  sleep 1
  elapsed $E stop -t 2 c-stubborn
  code=$($E inspect -f '{{.State.ExitCode}}' c-stubborn 2>&1)
  if [ "$RC" = 0 ] && [ "$ELAPSED" -ge 2 ] && [ "$ELAPSED" -lt 15 ] && [ "$code" = 137 ]; then
    pass "stop: TERM ignored, SIGKILL after the timeout (${ELAPSED}s, exit $code)"
  else
    fail "stop: TERM ignored, SIGKILL after the timeout" "rc $RC after ${ELAPSED}s, exit code $code" "$OUT"
  fi
  $E rm -f c-term c-stubborn >/dev/null 2>&1

  # rm -f of a running container
  $E run -d --name c-rmf "$img" sleep 1000 >/dev/null 2>&1
  expect "rm -f of a running container" 0 '' $E rm -f c-rmf
  if ! $E inspect c-rmf >/dev/null 2>&1; then pass "container is gone after rm -f"; else fail "container is gone after rm -f"; fi

  # -it: a pty, echo through it
  OUT=$(TTY_INPUT=$'typed-line\r' tty_run $E run --rm -it "$img" sh -c '[ -t 0 ] && echo stdin-is-a-tty; read x; echo "got:$x"' 2>&1)
  if grep -q 'stdin-is-a-tty' <<<"$OUT" && grep -q 'got:typed-line' <<<"$OUT"; then
    pass "-it: tty inside, input echoed through the pty"
  else
    fail "-it: tty inside, input echoed through the pty" "$OUT"
  fi

  # A config the runtime rejects: its JSON-logged error must reach the user through the engine.
  expect "runtime error surfaces in the engine's message" any "$(missing_exec_re)" \
    $E run --rm "$img" /nonexistent-cmd
  say "the engine said: $(grep -v '^time=' <<<"$OUT" | tail -n 2 | tr '\n' ' ')"
  if [ "$RC" != 0 ]; then pass "failed create gives a non-zero exit"; else fail "failed create gives a non-zero exit"; fi
}

# kill_tree_under DIR: stop, one PID at a time, the processes still running from our temp dir
# (an engine's shims, conmon) after the daemon itself was stopped.
kill_leftovers() {
  local dir=$1 pid
  for pid in $(pgrep -f -- "$dir" 2>/dev/null); do
    [ "$pid" = $$ ] && continue
    stop_pid "$pid" 5
  done
}

# cdi_rejects_unknown: true when the runtime under test refuses a bundle that asks for a CDI
# device no spec provides (nvbind once CDI injection is wired into create; never runc).
CDI_BAD_ANNOTATION=cdi.k8s.io/engines-test=nvbind.test/gpu=does-not-exist
cdi_rejects_unknown() {
  [ "$RUNTIME_KIND" = runc ] && return 1
  local b=$T/cdi-probe out
  NVBIND=$NVBIND "$REPO/scripts/mkbundle" "$b/bundle" true >/dev/null 2>&1 || return 1
  jq --arg k "${CDI_BAD_ANNOTATION%%=*}" --arg v "${CDI_BAD_ANNOTATION#*=}" \
    '.annotations[$k] = $v' "$b/bundle/config.json" >"$b/c.json" && mv "$b/c.json" "$b/bundle/config.json"
  out=$("$RUNTIME" --root "$b/state" run -b "$b/bundle" cdi-probe 2>&1)
  local rc=$?
  "$RUNTIME" --root "$b/state" delete -f cdi-probe >/dev/null 2>&1
  CDI_ERROR=$(tail -n 1 <<<"$out")
  [ $rc != 0 ] && grep -q 'does-not-exist' <<<"$out"
}
