"""Interleaved timing for scripts/bench-gpu: python3 interleave.py CASES_JSON ROUNDS.

CASES_JSON is a list of [name, shell command]. Each round runs every case once, in turn, so a
load change on a shared machine hits all cases alike (3 warm-up rounds are not counted); the
order turns by one case each round, so no case always runs right after the same other one (a
fixed order moved the 8-GPU extra by 0.2-0.4 ms here: bench/analysis.md, session 9). Per
case: the median and minimum wall time, and of the CPU time (user + system of the process and
its reaped children, from wait4's rusage), in ms, and the median page faults (minor + major,
the process and its reaped children; the shell's fork of this Python adds about the same to
every case), as JSON; not peak RSS, in which wait4 counts the fork of this Python before its
exec. A case that exits non-zero stops it.
"""
import os, subprocess, sys, time, json, statistics
cases = json.loads(sys.argv[1]); rounds = int(sys.argv[2])
res = {n: {"wall": [], "cpu": [], "faults": []} for n, _ in cases}
for r in range(rounds + 3):
    k = r % len(cases)
    for name, cmd in cases[k:] + cases[:k]:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        err = p.stderr.read(); p.stderr.close()
        if status != 0:
            sys.exit(f"{name}: exit status {status}: {err.decode()}")
        if r >= 3:  # warm-up rounds
            res[name]["wall"].append(wall * 1000)
            res[name]["cpu"].append((ru.ru_utime + ru.ru_stime) * 1000)
            res[name]["faults"].append(ru.ru_minflt + ru.ru_majflt)
out = {}
for n, _ in cases:
    w, c = res[n]["wall"], res[n]["cpu"]
    out[n] = {"wall_median_ms": round(statistics.median(w), 2), "wall_min_ms": round(min(w), 2),
              "cpu_median_ms": round(statistics.median(c), 2), "cpu_min_ms": round(min(c), 2),
              "faults_median": statistics.median(res[n]["faults"])}
print(json.dumps(out, indent=1))
