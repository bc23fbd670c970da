# Sourced by scripts/bench (inside its private mount namespace): throughput of each runtime,
# all in one run (issue 19 item 4).
# shellcheck shell=bash
#
#   throughput WORK BUNDLE SEQ PAR NAME=BINARY...
#
# For each runtime, in the order given: SEQ `run`s of the bundle one after another (crun's
# published benchmark: 100 sequential /bin/true containers), then PAR create+start+delete
# lifecycles all started at once (xargs -P PAR), each in its own --root. Each batch is timed by
# /usr/bin/time: wall seconds, and user and system CPU seconds of everything it ran (the
# runtime, its helpers and the containers: all are reaped below the timed shell). The same
# loops run once with /bin/true in place of the runtime (NAME "loop"): the cost of the loop
# itself (bash, timeout, sh, xargs), which every runtime's figure includes.
# Writes WORK/throughput.tsv: name, batch (seq|par), count, wall_s, user_s, sys_s, failed.
#
# Every `run` has the same `timeout -s KILL 5` watchdog (youki 0.7.0's foreground run can
# lose the SIGCHLD of a payload that exits at once and wait forever); a killed or failed run
# counts as failed and its container is deleted (untimed cost: after the batch).

throughput_seq() { # BINARY ROOT BUNDLE N FAILS
  local b=$1 r=$2 bundle=$3 n=$4 fails=$5 i
  for ((i = 1; i <= n; i++)); do
    if [ "$b" = /bin/true ]; then
      timeout -s KILL 5 /bin/true || echo "$i" >>"$fails"
    else
      timeout -s KILL 5 "$b" --root "$r" run -b "$bundle" "s$i" >/dev/null 2>&1 || echo "$i" >>"$fails"
    fi
  done
}

throughput_par() { # BINARY ROOT BUNDLE N FAILS
  local b=$1 r=$2 bundle=$3 n=$4 fails=$5
  # One sh per lifecycle (the loop's cost, measured by the "loop" row); the container id is
  # sh's $1. `delete -f` as an engine does after the payload exited (or while it exits).
  # shellcheck disable=SC2016
  seq "$n" | xargs -P "$n" -I{} sh -c '
    if [ "$0" = /bin/true ]; then /bin/true; exit; fi
    "$0" --root "$1" create -b "$2" "p$3" >/dev/null 2>&1 &&
      "$0" --root "$1" start "p$3" >/dev/null 2>&1 &&
      "$0" --root "$1" delete -f "p$3" >/dev/null 2>&1 || echo "$3" >>"$4"' \
    "$b" "$r" "$bundle" {} "$fails"
}

throughput() { # WORK BUNDLE SEQ PAR NAME=BINARY...
  local work=$1 bundle=$2 seq=$3 par=$4 nb name b r batch t
  shift 4
  : >"$work/throughput.tsv"
  export -f throughput_seq throughput_par
  for nb in loop=/bin/true "$@"; do
    name=${nb%%=*} b=${nb#*=} r=$work/root-tp-$name
    mkdir -p "$r"
    for batch in seq par; do
      local n=$seq fails=$work/tp-fails-$name-$batch
      [ "$batch" = par ] && n=$par
      : >"$fails"
      # A batch that hangs as a whole (it should not: each run has its watchdog) is killed.
      /usr/bin/time -f '%e %U %S' -o "$work/tp-time" \
        timeout -s KILL 600 bash -c "throughput_$batch \"\$@\"" bash "$b" "$r" "$bundle" "$n" "$fails" ||
        echo "batch" >>"$fails"
      t=$(tail -1 "$work/tp-time")
      printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$batch" "$n" "${t// /$'\t'}" "$(wc -l <"$fails")" >>"$work/throughput.tsv"
      # What a failed or killed lifecycle left behind (untimed).
      if [ "$b" != /bin/true ]; then
        local d
        for d in "$r"/*/; do
          if [ -d "$d" ]; then "$b" --root "$r" delete -f "$(basename "$d")" >/dev/null 2>&1 || true; fi
        done
      fi
    done
  done
}

# Markdown from WORK/throughput.tsv; ratios are nvbind's figure minus the loop's over this
# runtime's minus the loop's (< 1: nvbind faster).
throughput_table() { # WORK
  local tsv=$1/throughput.tsv
  awk -F'\t' '
    { wall[$1,$2]=$4; cpu[$1,$2]=$5+$6; fail[$1,$2]=$7; cnt[$2]=$3; if (!seen[$1]++) names[++k]=$1 }
    function net(n, b, v) { return v - (b == "w" ? wall["loop",n] : cpu["loop",n]) }
    function ratio(a, c) { return c > 0 ? sprintf("%.2f", a / c) : "-" }
    END {
      printf "| runtime | %d sequential run: wall s | CPU s | failed | %d parallel lifecycles: wall s | CPU s | failed | nvbind ÷ this: sequential wall | sequential CPU | parallel wall | parallel CPU |\n", cnt["seq"], cnt["par"]
      print "|---|---|---|---|---|---|---|---|---|---|---|"
      for (i = 1; i <= k; i++) {
        n = names[i]
        if (n == "loop") continue
        printf "| %s | %.2f | %.2f | %d | %.2f | %.2f | %d | %s | %s | %s | %s |\n", n,
          wall[n,"seq"], cpu[n,"seq"], fail[n,"seq"], wall[n,"par"], cpu[n,"par"], fail[n,"par"],
          ratio(net("seq","w",wall["nvbind","seq"]), net("seq","w",wall[n,"seq"])),
          ratio(net("seq","c",cpu["nvbind","seq"]), net("seq","c",cpu[n,"seq"])),
          ratio(net("par","w",wall["nvbind","par"]), net("par","w",wall[n,"par"])),
          ratio(net("par","c",cpu["nvbind","par"]), net("par","c",cpu[n,"par"]))
      }
      printf "| the loop alone (/bin/true for the runtime) | %.2f | %.2f | | %.2f | %.2f | | | | | |\n",
        wall["loop","seq"], cpu["loop","seq"], wall["loop","par"], cpu["loop","par"]
    }' "$tsv"
}
