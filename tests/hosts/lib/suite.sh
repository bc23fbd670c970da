# shellcheck shell=bash
# Sourced by the suites of tests/hosts/suites when they run in a VM: counted checks and
# bundles. A suite prints "ok NAME" / "FAIL NAME" per check and ends with summary's line.
passed=0
failed=0
failures=()

# check NAME COMMAND...: runs COMMAND (output shown only when it fails) and counts it.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    passed=$((passed + 1))
    echo "ok $name"
  else
    failed=$((failed + 1))
    failures+=("$name")
    echo "FAIL $name"
    printf '%s\n' "$out" | tail -n 20 | sed 's/^/    /'
  fi
}

# The suite's last line, which scripts/hosts counts; non-zero when a check failed.
summary() {
  [ ${#failures[@]} -eq 0 ] || printf 'failed: %s\n' "${failures[*]}"
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

# bundle DIR ARGS...: a busybox-static bundle (scripts/mkbundle) running ARGS (default sh).
# scripts/mkbundle makes each of busybox's 400 applet links with a process of its own, 20-30 s
# under TCG: it runs once a boot, into a template on the VM's disk, and each bundle is a copy
# of that with its own process.args.
BUNDLE_TEMPLATE=/var/tmp/nvbind-bundle-template
bundle() {
  local dir=$1 t=$BUNDLE_TEMPLATE args
  shift
  if [ ! -f "$t/config.json" ]; then
    rm -rf "$t.new"
    NVBIND=$NVBIND "$REPO/scripts/mkbundle" "$t.new" >/dev/null && mv "$t.new" "$t" || return 1
  fi
  [ $# -gt 0 ] || set -- sh
  args=$(printf '%s\n' "$@" | jq -R . | jq -s .) || return 1
  mkdir -p "$dir/rootfs" && cp -a "$t/rootfs/." "$dir/rootfs/" &&
    jq --argjson a "$args" '.process.args = $a' "$t/config.json" >"$dir/config.json"
}

# The runtimes every suite compares: the VM's own runc (the reference), crun, and nvbind.
declare -A RUNTIMES=([runc]=/usr/sbin/runc [crun]=/usr/bin/crun [nvbind]="${NVBIND:-}")
