#!/usr/bin/python3
"""A minimal CRI (runtime.v1) client, enough to drive a containerd runtime handler the way the
kubelet does for a pod with a RuntimeClass: RunPodSandbox(runtime_handler) -> CreateContainer ->
StartContainer -> ExecSync -> StopContainer -> Remove*. Messages are encoded by hand (cri_wire.py:
field numbers from k8s.io/cri-api pkg/apis/runtime/v1/api.proto), so only python3-grpcio is needed.

usage: cri-client.py SOCKET HANDLER IMAGE WORKDIR RUNTIME_PATH MISSING_EXEC_REGEX
Prints one "PASS name" or "FAIL name: detail" line per check.
"""
import json
import os
import re
import sys
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cri_wire import NODE, decode, decode_map, f_bytes, f_int, f_strs, first  # noqa: E402


# --- the scenario ---------------------------------------------------------------------------
sock, handler, image, workdir, runtime_path, missing_re = sys.argv[1:7]
chan = grpc.insecure_channel("unix://" + sock)


def call(method, req, timeout=60):
    rpc = chan.unary_unary("/runtime.v1.RuntimeService/" + method)
    return decode(rpc(req, timeout=timeout))


def check(name, cond, detail=""):
    print(("PASS %s" % name) if cond else ("FAIL %s: %s" % (name, detail)), flush=True)


logdir = os.path.join(workdir, "pods")
os.makedirs(logdir, exist_ok=True)
sandbox_config = (
    f_bytes(1, f_bytes(1, "nvbind-pod") + f_bytes(2, "uid-1") + f_bytes(3, "default"))
    + f_bytes(3, logdir)
    + f_bytes(8, f_bytes(2, f_bytes(1, f_int(1, NODE))))
)

try:
    v = call("Version", f_bytes(1, "v1"))
    check("CRI Version answers", first(v, 2) is not None, repr(v))
except grpc.RpcError as e:
    check("CRI Version answers", False, e.details())
    sys.exit(0)

pod = None
try:
    r = call("RunPodSandbox", f_bytes(1, sandbox_config) + f_bytes(2, handler), timeout=120)
    pod = first(r, 1).decode()
    check("RunPodSandbox with runtime_handler %s" % handler, bool(pod))
except grpc.RpcError as e:
    check("RunPodSandbox with runtime_handler %s" % handler, False, e.details())
    sys.exit(0)

try:
    st = call("PodSandboxStatus", f_bytes(1, pod) + f_int(2, 1))
    info = decode_map(st.get(2, []))
    verbose = json.loads(info.get("info", "{}"))
    opts = json.dumps(verbose.get("runtimeOptions"))
    check("sandbox runs under handler %s" % handler, verbose.get("runtimeHandler") == handler, info.get("info", "")[:300])
    check("handler's BinaryName is the runtime", runtime_path in opts, opts)
    check("sandbox is ready", first(decode(first(st, 1)), 3, 0) == 0, repr(st))
except grpc.RpcError as e:
    check("PodSandboxStatus", False, e.details())


def container(name, command, envs=None, cwd="", memory=0):
    cfg = (
        f_bytes(1, f_bytes(1, name))
        + f_bytes(2, f_bytes(1, image))
        + f_strs(3, command)
        + (f_bytes(5, cwd) if cwd else b"")
        + b"".join(f_bytes(6, f_bytes(1, k) + f_bytes(2, v)) for k, v in (envs or {}).items())
        + f_bytes(11, name + ".log")
        + (f_bytes(15, f_bytes(1, f_int(4, memory))) if memory else b"")
    )
    r = call("CreateContainer", f_bytes(1, pod) + f_bytes(2, cfg) + f_bytes(3, sandbox_config), timeout=120)
    return first(r, 1).decode()


def status(cid):
    s = decode(first(call("ContainerStatus", f_bytes(1, cid)), 1))
    return first(s, 3, 0), first(s, 7, 0)  # state, exit_code


try:
    cid = container("main", ["sh", "-c", "trap '' TERM; echo from-cri $FOO; while :; do sleep 1; done"],
                    envs={"FOO": "bar"}, cwd="/tmp", memory=64 * 1024 * 1024)
    call("StartContainer", f_bytes(1, cid), timeout=120)
    check("CreateContainer + StartContainer", status(cid)[0] == 1, repr(status(cid)))

    def execsync(cmd):
        r = call("ExecSync", f_bytes(1, cid) + f_strs(2, cmd) + f_int(3, 30))
        return first(r, 1, b"").decode(), first(r, 3, 0)

    out, code = execsync(["sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"])
    check("memory limit visible inside (ExecSync)", out.strip() == "67108864" and code == 0, "%r exit %d" % (out, code))
    out, code = execsync(["sh", "-c", "echo $FOO $(pwd)"])
    check("env and workdir (ExecSync)", out.strip() == "bar /tmp", repr(out))
    out, code = execsync(["sh", "-c", "exit 7"])
    check("ExecSync passes the exit code through", code == 7, "exit %d" % code)

    logfile = os.path.join(logdir, "main.log")
    for _ in range(50):
        if os.path.exists(logfile) and "from-cri bar" in open(logfile).read():
            break
        time.sleep(0.1)
    text = open(logfile).read() if os.path.exists(logfile) else "(no log file)"
    check("container log in the pod's log directory", "from-cri bar" in text, text[-300:])

    t0 = time.time()
    call("StopContainer", f_bytes(1, cid) + f_int(2, 2), timeout=60)
    took = time.time() - t0
    state, code = status(cid)
    check("StopContainer: TERM ignored, SIGKILL after the 2s timeout", state == 2 and code == 137 and 1.5 <= took < 15,
          "state %d exit %d after %.1fs" % (state, code, took))
    call("RemoveContainer", f_bytes(1, cid))
    check("RemoveContainer", True)

    cid = container("term", ["sh", "-c", "trap 'exit 42' TERM; while :; do sleep 0.1; done"])
    call("StartContainer", f_bytes(1, cid), timeout=120)
    time.sleep(0.5)
    t0 = time.time()
    call("StopContainer", f_bytes(1, cid) + f_int(2, 20), timeout=60)
    took = time.time() - t0
    state, code = status(cid)
    check("StopContainer: SIGTERM honoured", state == 2 and code == 42 and took < 10,
          "state %d exit %d after %.1fs" % (state, code, took))
    call("RemoveContainer", f_bytes(1, cid))
except grpc.RpcError as e:
    check("container lifecycle through CRI", False, e.details())

try:
    bad = container("bad", ["/nonexistent-cmd"])
    try:
        call("StartContainer", f_bytes(1, bad), timeout=120)
        check("runtime error surfaces in the CRI error", False, "StartContainer succeeded")
    except grpc.RpcError as e:
        check("runtime error surfaces in the CRI error", re.search(missing_re, e.details() or "") is not None, e.details())
    call("RemoveContainer", f_bytes(1, bad))
except grpc.RpcError as e:
    check("runtime error surfaces in the CRI error", re.search(missing_re, e.details() or "") is not None, e.details())

try:
    call("StopPodSandbox", f_bytes(1, pod), timeout=120)
    call("RemovePodSandbox", f_bytes(1, pod), timeout=120)
    check("StopPodSandbox + RemovePodSandbox", True)
except grpc.RpcError as e:
    check("StopPodSandbox + RemovePodSandbox", False, e.details())
