#!/usr/bin/python3
"""Runs runc's integration tests (bats) against one runtime, and compares two runs.

  runner.py run --runtime PATH --label NAME --images DIR --work DIR --json OUT [options]
  runner.py report --reference runc.json --candidate nvbind.json --expect DIR --out RESULTS.md

`run` executes each test on its own: `bats --filter '^NAME$' FILE` on a new pty (stdin, stdout
and stderr, as a controlling terminal, the way runc's CI runs them from a terminal), with a
time limit, in a private temporary directory. The runner is a child subreaper, so whatever a
test leaves running (detached containers, recvtty, the seccomp agent) is re-parented to it and
reaped as it exits; after each test it deletes the test's containers through the runtime,
kills what is left by PID, detaches mounts under the test's directory and removes the empty
cgroups named after the test's containers or under the suite's own cgroup parent. What it had
to clean up is recorded with the test (a runtime that leaks shows there).

Tests run one at a time: runc's tests use fixed container ids and cgroup paths
(/runc-cgroups-integration-test, /<id> by default), so two at once would share cgroups.
scripts/runc-integration holds a host-wide lock around the whole run.

`report` writes the side-by-side table and checks the candidate against the reference: it
fails when the candidate fails a test the reference passes that is not in
expected-failures.tsv, or when a listed test now passes (the list must shrink with each fix).
"""
import argparse
import ctypes
import datetime
import errno
import fcntl
import glob
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import termios
import time

HERE = os.path.dirname(os.path.abspath(__file__))
UPSTREAM = os.path.join(HERE, "upstream")
HELPERS = os.path.join(HERE, "helpers")  # sd-helper (a script); the rest are built
SUITE_CGROUP_PARENT = "runc-cgroups-integration-test"  # helpers.bash set_cgroups_path
MIN_FREE = 512 << 20  # bytes free under the work directory before each test (debian.tar: 100 MB)
CAUSES = ("spec-defaults", "cli", "lifecycle", "cgroups", "terminal", "seccomp",
          "mounts-hooks", "pid-reuse")

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_CHILD_SUBREAPER = 36
MNT_DETACH = 2


# ---------------------------------------------------------------------------------------------
# The suite


def list_tests(integration_dir: str, files: "list[str] | None") -> "list[tuple[str, str]]":
    """(file, name) of every @test, in file order. bats names a test by its description."""
    out = []
    for path in sorted(glob.glob(os.path.join(integration_dir, "*.bats"))):
        base = os.path.basename(path)
        if files and base not in files and base.removesuffix(".bats") not in files:
            continue
        with open(path) as f:
            for line in f:
                m = re.match(r'^@test "(.*)" \{\s*$', line)
                if m:
                    out.append((base, m.group(1)))
    return out


def prepare_suite(work: str, busybox: str, debian: str, helpers: str) -> str:
    """Lays the suite out as in runc's repository (tests/integration next to contrib/cmd), with
    our helper programs where helpers.bash looks for runc's, and a get-images.sh that names the
    local images instead of downloading docker-library's. Returns tests/integration."""
    suite = os.path.join(work, "suite")
    shutil.rmtree(suite, ignore_errors=True)
    integ = os.path.join(suite, "tests", "integration")
    shutil.copytree(os.path.join(UPSTREAM, "tests", "integration"), integ, symlinks=True)
    with open(os.path.join(integ, "get-images.sh"), "w") as f:
        f.write("#!/bin/bash\n# Written by tests/runc-integration/runner.py: local images, "
                "made from Debian packages.\n"
                f"echo BUSYBOX_IMAGE={busybox}\necho DEBIAN_IMAGE={debian}\n")
    os.chmod(os.path.join(integ, "get-images.sh"), 0o755)
    patch_suite(integ)
    for name, where in (("recvtty", helpers), ("seccompagent", helpers), ("sd-helper", HELPERS)):
        d = os.path.join(suite, "contrib", "cmd", name)
        os.makedirs(d, exist_ok=True)
        os.symlink(os.path.join(where, name), os.path.join(d, name))
    gen = "contrib/cmd/seccompagent/gen-seccomp-example-cfg.sh"
    os.symlink(os.path.join(UPSTREAM, gen), os.path.join(suite, gen))
    return integ


# The only changes made to runc's files, in the work copy: its helpers start recvtty and the
# seccomp agent in the background and go on at once, so a container created right after may
# dial the socket before it exists ("connect: no such file or directory"). runc's own CI wins
# that race; a loaded 2-core machine lost it for runc and nvbind alike (2 of 191 tests). Each
# setup now waits for the socket (what update.bats already does for its own recvtty).
SUITE_PATCHES = [
    ("helpers.bash",
     '\t("$RECVTTY" --pid-file "$dir/pid" --mode null "$CONSOLE_SOCKET" &) &\n',
     '\t("$RECVTTY" --pid-file "$dir/pid" --mode null "$CONSOLE_SOCKET" &) &\n'
     '\tretry 100 0.05 [ -S "$CONSOLE_SOCKET" ] # nvbind runner: wait for the socket\n'),
    ("helpers.bash",
     '\t("${SECCOMP_AGENT}" -socketfile="$SECCCOMP_AGENT_SOCKET" -pid-file "$BATS_TMPDIR/seccompagent.pid" &) &\n',
     '\t("${SECCOMP_AGENT}" -socketfile="$SECCCOMP_AGENT_SOCKET" -pid-file "$BATS_TMPDIR/seccompagent.pid" &) &\n'
     '\tretry 100 0.05 [ -S "$SECCCOMP_AGENT_SOCKET" ] # nvbind runner: wait for the socket\n'),
]


def patch_suite(integ: str) -> None:
    for file, old, new in SUITE_PATCHES:
        path = os.path.join(integ, file)
        with open(path) as f:
            text = f.read()
        if text.count(old) != 1:
            raise SystemExit(f"runner.py: {file} of this runc tag does not have the line "
                             f"SUITE_PATCHES changes: {old.strip()}")
        with open(path, "w") as f:
            f.write(text.replace(old, new))


def bats_filter(name: str) -> str:
    """An anchored bash ERE that matches exactly this description (bats --filter)."""
    return "^" + re.sub(r'([\\.^$|?*+()\[\]{}])', r"\\\1", name) + "$"


# ---------------------------------------------------------------------------------------------
# Processes, mounts and cgroups the tests leave


def children_of(pid: int) -> "list[int]":
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            out.append(int(d))
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:120]
    except OSError:
        return "?"


def reap_nohang(keep: "set[int]") -> "dict[int, int]":
    """Reaps every exited child; returns the statuses of those in keep."""
    got = {}
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return got
        if pid == 0:
            return got
        if pid in keep:
            got[pid] = status


def kill_orphans(notes: "list[str]", grace: float = 10.0) -> None:
    """Kills, by PID, every process re-parented to this subreaper (all the test started and
    left), until none is left or the grace period ends (a process in a frozen cgroup cannot
    die until thawed)."""
    me = os.getpid()
    seen = set()
    deadline = time.monotonic() + grace
    while True:
        reap_nohang(set())
        left = [p for p in children_of(me) if not _is_zombie(p)]
        if not left:
            return
        for p in left:
            if p not in seen:
                notes.append(f"killed pid {p} ({cmdline(p)})")
                seen.add(p)
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            notes.append("still alive after SIGKILL: " + ", ".join(
                f"{p} ({cmdline(p)})" for p in left))
            return
        time.sleep(0.05)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        return s[s.rindex(")") + 2] == "Z"
    except OSError:
        return True


def mounts_under(prefix: str) -> "list[str]":
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].encode().decode("unicode_escape")
            if mp == prefix or mp.startswith(prefix.rstrip("/") + "/"):
                out.append(mp)
    return out


def detach_mounts(prefix: str, notes: "list[str]") -> None:
    for _ in range(20):
        mps = mounts_under(prefix)
        if not mps:
            return
        for mp in sorted(set(mps), key=len, reverse=True):
            if libc.umount2(mp.encode(), MNT_DETACH) == 0:
                notes.append(f"unmounted {mp}")


def cgroup_mounts() -> "list[str]":
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if post.split()[0] in ("cgroup", "cgroup2"):
                out.append(pre.split()[4])
    return out


def leftover_cgroups(ids: "set[str]") -> "list[str]":
    """Cgroup directories named after one of the test's containers (runc's default /<id>,
    or a driver's '...:<id>' / '<prefix>-<id>.scope' forms) up to four levels deep, and the
    suite's own parent, deepest first."""
    found = []
    for mnt in cgroup_mounts():
        base_depth = mnt.rstrip("/").count("/")
        for root, dirs, _files in os.walk(mnt):
            depth = root.rstrip("/").count("/") - base_depth
            if depth >= 4:
                dirs[:] = []
            if root == mnt:
                continue
            name = os.path.basename(root)
            if name == SUITE_CGROUP_PARENT or root.count("/" + SUITE_CGROUP_PARENT + "/") or \
                    any(name == i or name.endswith(":" + i) or name.endswith("-" + i + ".scope")
                        for i in ids):
                found.append(root)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def thaw(cg: str) -> None:
    for f, v in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
        try:
            with open(os.path.join(cg, f), "w") as fh:
                fh.write(v)
        except OSError:
            pass


def cgroup_procs(cg: str) -> "list[int]":
    try:
        with open(os.path.join(cg, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


class HostGuard:
    """What runc's tests change outside their own directory, put back after each test (a
    failed test stops before its own cleanup): checkpoint.bats writes /etc/criu/default.conf
    (read by every criu on the host) and mktemp files /tmp/runc-criu-*; "checkpoint and
    restore in external network namespace" adds a network namespace (`ip netns add tmp.X`);
    "per-device io weight for bfq" attaches a loop device to a file in the test's bundle."""

    CRIU_CONF = "/etc/criu/default.conf"

    def __init__(self) -> None:
        self.criu_dir = os.path.isdir(os.path.dirname(self.CRIU_CONF))
        try:
            with open(self.CRIU_CONF, "rb") as f:
                self.criu_conf: "bytes | None" = f.read()
        except FileNotFoundError:
            self.criu_conf = None
        self.tmp_criu = set(glob.glob("/tmp/runc-criu-*"))
        self.netns = self._netns()

    @staticmethod
    def _netns() -> "set[str]":
        try:
            return set(os.listdir("/run/netns"))
        except FileNotFoundError:
            return set()

    def restore(self, tmp: str, notes: "list[str]") -> None:
        for backing in glob.glob("/sys/block/loop*/loop/backing_file"):
            try:
                with open(backing) as f:
                    path = f.read().strip().removesuffix(" (deleted)")
            except OSError:
                continue
            if path.startswith(tmp.rstrip("/") + "/"):
                dev = "/dev/" + backing.split("/")[3]
                subprocess.run(["losetup", "-d", dev], capture_output=True)
                notes.append(f"detached {dev} (backed by {path})")
        for ns in sorted(self._netns() - self.netns):
            if re.fullmatch(r"tmp\.[A-Za-z0-9]{10}", ns):  # mktemp's names, as the test makes
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
                notes.append(f"deleted network namespace {ns}")
        try:
            with open(self.CRIU_CONF, "rb") as f:
                now: "bytes | None" = f.read()
        except FileNotFoundError:
            now = None
        if now != self.criu_conf:
            if self.criu_conf is None:
                os.remove(self.CRIU_CONF)
            else:
                with open(self.CRIU_CONF + ".tmp", "wb") as f:
                    f.write(self.criu_conf)
                os.replace(self.CRIU_CONF + ".tmp", self.CRIU_CONF)
            notes.append(f"{'removed' if self.criu_conf is None else 'restored'} {self.CRIU_CONF}")
        if not self.criu_dir and os.path.isdir(os.path.dirname(self.CRIU_CONF)):
            try:
                os.rmdir(os.path.dirname(self.CRIU_CONF))
            except OSError as e:
                notes.append(f"{os.path.dirname(self.CRIU_CONF)}: {e.strerror}")
        for f in sorted(set(glob.glob("/tmp/runc-criu-*")) - self.tmp_criu):
            os.remove(f)


# ---------------------------------------------------------------------------------------------
# One test


def container_ids(tmp: str) -> "set[tuple[str, str]]":
    """(state root, id) of the containers the test's runtime knows (helpers.bash keeps every
    state under $BATS_RUN_TMPDIR/runc.XXXXXX/state)."""
    out = set()
    for d in glob.glob(os.path.join(tmp, "bats-run-*", "runc.*", "state", "*")):
        if os.path.isdir(d):
            out.add((os.path.dirname(d), os.path.basename(d)))
    return out


def spawn_on_pty(argv: "list[str]", env: "dict[str, str]", cwd: str) -> "tuple[int, int]":
    master, slave = os.openpty()
    pid = os.fork()
    if pid == 0:  # child: new session, the pty as controlling terminal and stdio
        try:
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
            for fd in (0, 1, 2):
                os.dup2(slave, fd)
            os.closerange(3, 65536)
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    os.close(slave)
    return pid, master


def run_one(runtime: str, integ: str, file: str, name: str, tmp: str, timeout: float,
            systemd: bool, keep_failed: bool) -> dict:
    os.makedirs(tmp)
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "TERM": os.environ.get("TERM", "xterm") if os.environ.get("TERM") != "dumb" else "xterm",
        "LANG": "C.UTF-8",
        "TMPDIR": tmp,
        "RUNC": runtime,
    }
    if systemd:
        env["RUNC_USE_SYSTEMD"] = "yes"
    argv = [shutil.which("bats") or "/usr/bin/bats", "--tap", "--no-tempdir-cleanup",
            "--filter", bats_filter(name), os.path.join(integ, file)]
    guard = HostGuard()
    start = time.monotonic()
    pid, master = spawn_on_pty(argv, env, integ)
    out = bytearray()
    ids: "set[tuple[str, str]]" = set()
    status = None
    timed_out = False
    next_scan = 0.0
    while status is None:
        now = time.monotonic()
        if now - start > timeout and not timed_out:
            timed_out = True
            _signal_group(pid, signal.SIGTERM)
            kill_at = now + 5
        if timed_out and now > kill_at:
            _signal_group(pid, signal.SIGKILL)
            kill_at = now + 3600
        r, _, _ = select.select([master], [], [], 0.05)
        if r:
            try:
                out += os.read(master, 65536)
            except OSError:  # EIO: no process holds the pty any more
                pass
        got = reap_nohang({pid})
        if pid in got:
            status = got[pid]
        if now >= next_scan:
            ids |= container_ids(tmp)
            next_scan = now + 0.25
    # Containers started detached may still hold the pty: take what is there, do not wait.
    while select.select([master], [], [], 0)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    seconds = time.monotonic() - start
    notes: "list[str]" = []
    ids |= container_ids(tmp)
    _signal_group(pid, signal.SIGKILL)
    for root, cid in sorted(container_ids(tmp)):
        notes.append(f"deleted container {cid} (left by the test)")
        try:
            r = subprocess.run([runtime, "--root", root, "delete", "--force", cid],
                               capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                notes.append(f"  delete --force {cid}: {r.stderr.strip()[:200]}")
        except subprocess.TimeoutExpired:
            notes.append(f"  delete --force {cid} timed out")
    names = {cid for _root, cid in ids}
    for cg in leftover_cgroups(names):
        thaw(cg)
    kill_orphans(notes)
    os.close(master)
    detach_mounts(tmp, notes)
    guard.restore(tmp, notes)
    for cg in leftover_cgroups(names):
        procs = cgroup_procs(cg)
        if procs:
            notes.append(f"cgroup {cg} still holds {procs}: not removed")
            continue
        try:
            os.rmdir(cg)
            notes.append(f"removed cgroup {cg}")
        except OSError as e:
            if e.errno != errno.ENOENT:
                notes.append(f"cgroup {cg}: {e.strerror}")
    text = out.decode(errors="replace").replace("\r\n", "\n")
    result, reason = parse_tap(text, name)
    if timed_out:
        result, reason = "timeout", f"no result within {timeout:.0f} s"
    elif result is None:
        code = os.waitstatus_to_exitcode(status)
        result, reason = "fail", f"bats gave no result (exit status {code})"
    if mounts_under(tmp):  # never remove through a mount that would not go
        notes.append(f"mounts remain under {tmp}: not removed")
    elif keep_failed and result in ("fail", "timeout"):
        notes.append(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.exists(tmp):
            notes.append(f"could not remove {tmp}")
    return {"file": file, "name": name, "result": result, "reason": reason,
            "seconds": round(seconds, 2), "cleanup": notes, "output": text[-6000:]}


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def parse_tap(text: str, name: str) -> "tuple[str | None, str]":
    for line in text.splitlines():
        m = re.match(r"^(not ok|ok) \d+ (.*)$", line)
        if not m:
            continue
        rest = m.group(2)
        if m.group(1) == "not ok":
            return "fail", ""
        # bats 1.5+: "ok 1 NAME # skip REASON" (older ones put the reason in parentheses)
        sk = re.match(r"^(.*?) # skip(?:\s+\(?(.*?)\)?)?\s*$", rest)
        if sk:
            return "skip", sk.group(2) or ""
        return "pass", ""
    return None, ""


def loadavg() -> "list[str]":
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def open_to_mapped_users(work: str) -> "list[str]":
    """Lets users other than root traverse the work directory (mode o+x), and names each
    directory above it they cannot traverse. The bundles of userns.bats live under it, and a
    runtime mounts the rootfs after joining the user namespace, as the mapped root (uid
    100000 there): runc's helpers.bash opens its own directories with `chmod a+x` for this,
    but mktemp makes the work directory 0700, and runc failed every userns test with
    "mount ...rootfs... permission denied"."""
    st = os.stat(work)
    if not st.st_mode & 0o001:
        os.chmod(work, (st.st_mode & 0o7777) | 0o111)
    closed = []
    parent = os.path.dirname(work)
    while True:
        if not os.stat(parent).st_mode & 0o001:
            closed.append(parent)
        if parent == os.path.dirname(parent):
            return closed
        parent = os.path.dirname(parent)


def cmd_run(a: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("runner.py: run as root (the tests create containers)", file=sys.stderr)
        return 2
    for prog in ("recvtty", "seccompagent"):
        if not os.access(os.path.join(a.helpers, prog), os.X_OK):
            print(f"runner.py: {prog} not found in {a.helpers} (cargo build -p "
                  "nvbind-runc-helpers)", file=sys.stderr)
            return 2
    for img in (a.busybox, a.debian):
        if not os.path.isfile(img):
            print(f"runner.py: image {img} not found (scripts/runc-integration images makes it)",
                  file=sys.stderr)
            return 2
    runtime = shutil.which(a.runtime) or a.runtime
    if not os.access(runtime, os.X_OK):
        print(f"runner.py: runtime {a.runtime} is not an executable", file=sys.stderr)
        return 2
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("runner.py: cannot become a child subreaper", file=sys.stderr)
        return 2
    os.umask(0o022)
    work = os.path.abspath(a.work)
    os.makedirs(work, exist_ok=True)
    for d in open_to_mapped_users(work):
        print(f"runner.py: warning: other users cannot traverse {d}: the user-namespace tests "
              "(userns.bats) will fail for every runtime; use a --work directory under one "
              "they can", file=sys.stderr)
    integ = prepare_suite(work, os.path.abspath(a.busybox), os.path.abspath(a.debian),
                          os.path.abspath(a.helpers))
    tests = list_tests(integ, a.files.split(",") if a.files else None)
    if a.filter:
        tests = [t for t in tests if re.search(a.filter, f"{t[0]}: {t[1]}")]
    version = subprocess.run([runtime, "--version"], capture_output=True, text=True).stdout
    results = []
    started = time.monotonic()
    counts = {"pass": 0, "fail": 0, "skip": 0, "timeout": 0}
    for i, (file, name) in enumerate(tests):
        tmp = os.path.join(work, a.label, f"t{i}")
        shutil.rmtree(tmp, ignore_errors=True)
        st = os.statvfs(work)
        if st.f_bavail * st.f_frsize < MIN_FREE:
            # A test that cannot write its files fails for the disk, not for the runtime.
            print(f"runner.py: only {st.f_bavail * st.f_frsize >> 20} MiB free under {work}; "
                  f"stopping before {file}: {name}", file=sys.stderr)
            return 2
        try:
            r = run_one(runtime, integ, file, name, tmp, a.timeout, a.systemd, a.keep_failed)
        except OSError as e:  # the host, not the test (a full disk): stop, say which
            print(f"runner.py: cannot run {file}: {name}: {e}", file=sys.stderr)
            return 2
        results.append(r)
        counts[r["result"]] += 1
        extra = f" ({r['reason']})" if r["reason"] else ""
        print(f"{r['result'].upper():7} {file}: {name}{extra} [{r['seconds']:.1f}s]", flush=True)
        if r["result"] in ("fail", "timeout") and a.verbose:
            print("    " + r["output"].strip().replace("\n", "\n    "), flush=True)
        for n in r["cleanup"]:
            print(f"    harness: {n}", flush=True)
    total = time.monotonic() - started
    doc = {"label": a.label, "runtime": runtime, "version": version.strip(),
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "kernel": os.uname().release, "systemd_cgroup": a.systemd,
           "load": loadavg(),
           "seconds": round(total, 1), "timeout": a.timeout, "tests": results}
    tmpjson = a.json + ".tmp"
    with open(tmpjson, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmpjson, a.json)
    failed = counts["fail"] + counts["timeout"]
    print(f"# {a.label}: {total:.0f} s")
    print(f"{counts['pass']} passed, {failed} failed, {counts['skip']} skipped")
    return 0


# ---------------------------------------------------------------------------------------------
# Comparison


def read_tsv(path: str, ncols: int) -> "dict[tuple[str, str], list[str]]":
    """file<TAB>test name<TAB>... lines; # comments and blank lines ignored."""
    out = {}
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) != ncols:
                raise SystemExit(f"{path}:{n}: expected {ncols} tab-separated columns, "
                                 f"found {len(cols)}")
            key = (cols[0], cols[1])
            if key in out:
                raise SystemExit(f"{path}:{n}: {cols[0]}: {cols[1]} is listed twice")
            out[key] = cols[2:]
    return out


def cell(r: "dict | None") -> str:
    if r is None:
        return "-"
    res = r["result"]
    return {"pass": "pass", "skip": "skip", "fail": "**FAIL**", "timeout": "**TIMEOUT**"}[res]


def md(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def cmd_report(a: argparse.Namespace) -> int:
    with open(a.reference) as f:
        ref = json.load(f)
    with open(a.candidate) as f:
        cand = json.load(f)
    reasons = read_tsv(os.path.join(a.expect, "runc-reasons.tsv"), 3)
    expected = read_tsv(os.path.join(a.expect, "expected-failures.tsv"), 5)
    for key, (cause, _sym, _src) in expected.items():
        if cause.removeprefix("flaky:") not in CAUSES:
            raise SystemExit(f"expected-failures.tsv: {key[0]}: {key[1]}: cause {cause!r} "
                             f"is not one of {', '.join(CAUSES)} (or flaky:CAUSE)")
    rr = {(t["file"], t["name"]): t for t in ref["tests"]}
    cr = {(t["file"], t["name"]): t for t in cand["tests"]}
    keys = list(dict.fromkeys(list(rr) + list(cr)))

    def bad(t: "dict | None") -> bool:
        return t is not None and t["result"] in ("fail", "timeout")

    new, stale, unexplained, listed_ref_not_pass = [], [], [], []
    for k in keys:
        r, c = rr.get(k), cr.get(k)
        cause = expected.get(k, [None])[0]
        if r is not None and r["result"] == "pass" and c is not None and c["result"] != "pass":
            if cause is None:
                new.append(k)
        if cause is not None and c is not None and c["result"] == "pass" \
                and not cause.startswith("flaky:"):
            stale.append(k)
        if cause is not None and r is not None and r["result"] != "pass":
            listed_ref_not_pass.append(k)
        if bad(r) and k not in reasons:
            unexplained.append(k)

    def counts(doc: dict) -> "tuple[int, int, int]":
        t = doc["tests"]
        return (sum(x["result"] == "pass" for x in t),
                sum(x["result"] in ("fail", "timeout") for x in t),
                sum(x["result"] == "skip" for x in t))

    L = []
    L.append("# runc's integration tests: runc vs nvbind")
    L.append("")
    L.append("Written by `scripts/runc-integration` (tests/runc-integration/runner.py report). "
             "The tests are runc's own tests/integration/*.bats of the tag named in "
             "tests/runc-integration/NOTICE, run one at a time under a new pty with a "
             f"{cand['timeout']:.0f} s limit each; the helper programs and images are described in "
             "tests/runc-integration/README.md.")
    L.append("")
    L.append("| runtime | version | passed | failed | skipped | seconds | load (1/5/15 min) |")
    L.append("|---|---|---|---|---|---|---|")
    for doc in (ref, cand):
        p, f, s = counts(doc)
        ver = md(doc["version"].splitlines()[0] if doc["version"] else "?")
        L.append(f"| {doc['label']} (`{doc['runtime']}`) | {ver} | {p} | {f} | {s} | "
                 f"{doc['seconds']:.0f} | {' / '.join(doc['load'])} |")
    L.append("")
    L.append(f"Host: kernel {cand['kernel']}, "
             f"{'systemd' if cand['systemd_cgroup'] else 'cgroupfs'} cgroup driver, {cand['date']}.")
    L.append("")
    nv_only = [k for k in keys if (rr.get(k) or {}).get("result") == "pass"
               and (cr.get(k) or {}).get("result") not in (None, "pass")]
    L.append(f"Tests {cand['label']} fails that {ref['label']} passes: {len(nv_only)} "
             f"({len(nv_only) - len(new)} listed in expected-failures.tsv with their cause, "
             f"{len(new)} new).")
    if stale:
        L.append(f"Listed in expected-failures.tsv but passing now (remove them): {len(stale)}.")
    if unexplained:
        L.append(f"{ref['label']} failures without a reason in runc-reasons.tsv: {len(unexplained)}.")
    L.append("")
    by_cause: "dict[str, list]" = {}
    for k in nv_only:
        if k in expected:
            by_cause.setdefault(expected[k][0].removeprefix("flaky:"), []).append(k)
    if by_cause:
        L.append("## nvbind's failures by cause")
        L.append("")
        L.append("From expected-failures.tsv (cause, symptom, where the fix belongs); a symptom is "
                 "the first assertion that fails, later ones may show once it is fixed.")
        L.append("")
        L.append("| cause | tests |")
        L.append("|---|---|")
        for cause in CAUSES:
            if cause in by_cause:
                L.append(f"| {cause} | {len(by_cause[cause])} |")
        L.append("")
    L.append("## Deliberate differences")
    L.append("")
    # The rows of expected-failures.tsv whose symptom starts "deliberate:".
    deliberate = [k for k in nv_only if k in expected and expected[k][1].startswith("deliberate")]
    L.append("Tests nvbind fails on purpose, each with its reason (expected-failures.tsv rows "
             "whose symptom starts \"deliberate:\")" + (": none." if not deliberate else ":"))
    L.append("")
    for k in deliberate:
        L.append(f"- `{md(k[0])}`: {md(k[1])}: {md(expected[k][1].removeprefix('deliberate: '))}")
    if deliberate:
        L.append("")
    L.append("## Every test")
    L.append("")
    L.append(f"| test | {ref['label']} | {cand['label']} | why |")
    L.append("|---|---|---|---|")
    for k in keys:
        r, c = rr.get(k), cr.get(k)
        why = []
        if bad(r):
            why.append(f"{ref['label']}: " + (reasons[k][0] if k in reasons else "UNEXPLAINED"))
        if k in expected:
            cause, symptom, src = expected[k]
            why.append(f"{cand['label']} [{cause}]: {symptom} ({src})")
        elif r is not None and r["result"] == "pass" and c is not None and c["result"] != "pass":
            why.append(f"{cand['label']}: NEW failure")
        if (r or {}).get("result") == "skip" and (c or {}).get("result") == "skip":
            why.append("skipped: " + (r["reason"] or "?"))
        L.append(f"| `{md(k[0])}`: {md(k[1])} | {cell(r)} | {cell(c)} | {md('; '.join(why))} |")
    L.append("")
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(L))
    os.replace(tmp, a.out)

    status = 0
    for k in new:
        print(f"NEW FAILURE: {k[0]}: {k[1]}: {cand['label']} {cr[k]['result']}s, "
              f"{ref['label']} passes (fix it, or list it in expected-failures.tsv with its cause)")
        status = 1
    for k in stale:
        print(f"FIXED: {k[0]}: {k[1]}: passes on {cand['label']} now; remove it from "
              f"{os.path.join(a.expect, 'expected-failures.tsv')}")
        status = 1
    for k in listed_ref_not_pass:
        print(f"note: {k[0]}: {k[1]} is listed as an expected failure, but {ref['label']} "
              f"did not pass it in this run ({rr[k]['result']})")
    for k in unexplained:
        print(f"note: {ref['label']} {rr[k]['result']}s {k[0]}: {k[1]} and runc-reasons.tsv "
              f"does not say why")
    p, f, s = counts(cand)
    print(f"{p} passed, {f} failed, {s} skipped")
    return status


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the suite against one runtime")
    r.add_argument("--runtime", required=True, help="the runtime binary ($RUNC of the suite)")
    r.add_argument("--label", required=True, help="name of this run (runc, nvbind)")
    r.add_argument("--busybox", required=True, help="busybox rootfs tar")
    r.add_argument("--debian", required=True, help="debian rootfs tar")
    r.add_argument("--helpers", required=True,
                   help="directory holding the recvtty and seccompagent binaries")
    r.add_argument("--work", required=True, help="directory for the suite and the tests' state")
    r.add_argument("--json", required=True, help="where to write the results")
    r.add_argument("--timeout", type=float, default=60, help="seconds per test (default 60)")
    r.add_argument("--files", default="", help="only these .bats files (comma-separated)")
    r.add_argument("--filter", default="", help="only tests whose 'file: name' matches")
    r.add_argument("--systemd", action="store_true", help="RUNC_USE_SYSTEMD (systemd driver)")
    r.add_argument("--verbose", action="store_true", help="print the output of failed tests")
    r.add_argument("--keep-failed", action="store_true",
                   help="keep the temporary files of failed tests (containers, processes and "
                        "mounts are still cleaned up)")
    c = sub.add_parser("report", help="compare two runs, write RESULTS.md, check the list")
    c.add_argument("--reference", required=True, help="results of the reference (runc)")
    c.add_argument("--candidate", required=True, help="results of the candidate (nvbind)")
    c.add_argument("--expect", required=True,
                   help="directory of runc-reasons.tsv and expected-failures.tsv")
    c.add_argument("--out", required=True, help="RESULTS.md to write")
    a = p.parse_args()
    return cmd_run(a) if a.cmd == "run" else cmd_report(a)


if __name__ == "__main__":
    sys.exit(main())
