# shellcheck shell=bash
# Counts a suite's log: the sum of cargo's "test result:" lines plus the last
# "N passed, N failed" line (a suite's own checks); with neither, the exit status as one
# case. A suite that exits non-zero with nothing counted as failed counts one failure.
count_log() { # LOG EXIT -> "PASSED FAILED"
  local log=$1 rc=$2 p=0 f=0 line found=0
  if grep -qE '^test result: ' "$log"; then
    found=1
    p=$(grep -E '^test result: ' "$log" | grep -oE '[0-9]+ passed' | awk '{s += $1} END {print s + 0}')
    f=$(grep -E '^test result: ' "$log" | grep -oE '[0-9]+ failed' | awk '{s += $1} END {print s + 0}')
  fi
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
  if [ -n "$line" ]; then
    found=1
    p=$((p + $(echo "$line" | grep -oE '^[0-9]+')))
    f=$((f + $(echo "$line" | grep -oE '[0-9]+ failed' | grep -oE '^[0-9]+')))
  fi
  if [ $found = 0 ]; then
    if [ "$rc" = 0 ]; then p=1; else f=1; fi
  fi
  [ "$rc" != 0 ] && [ "$f" = 0 ] && f=1
  echo "$p $f"
}
