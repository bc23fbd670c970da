#!/usr/bin/python3
"""A pod as the kubelet runs one on a systemd host, through containerd's CRI and a runtime
handler (a RuntimeClass's `handler`): RunPodSandbox under a kubelet-style pod slice ->
CreateContainer with memory and CPU limits -> StartContainer -> ExecSync (limits and the GPU
seen inside) -> UpdateContainerResources -> StopContainer -> RemoveContainer -> StopPodSandbox
-> RemovePodSandbox, and nothing of the pod left on the host (scopes, cgroups, mounts, shim).
Must run as root on the host of the containerd it talks to (it reads /proc and asks systemd).

usage: cri-pod.py SOCKET HANDLER IMAGE WORKDIR SLICE BINARY GPU [ANNOTATION=VALUE...]
  SLICE      the pod's cgroup parent, a systemd slice as the kubelet's systemd driver names it
  BINARY     the handler's options.BinaryName to expect ("" for none: containerd's runc)
  GPU        yes: /dev/nvidia0 must open inside; no: it must not exist (the control)
  ANNOTATION the pod's annotations (e.g. cdi.k8s.io/gpu=nvidia.com/gpu=0)
Prints "ok NAME" or "FAIL NAME" and the detail indented, one per check, as tests/hosts suites do.
"""
import json
import os
import subprocess
import sys
import time
import uuid

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cri_wire import (EXITED, RUNNING, Cri, container_config, decode, decode_map,  # noqa: E402
                      f_bytes, f_int, f_strs, first, pod_config, resources)

sock, handler, image, workdir, pod_slice, binary, gpu = sys.argv[1:8]
annotations = dict(a.split("=", 1) for a in sys.argv[8:])
cri = Cri(sock)
failed = 0
MIB = 1024 * 1024


def check(name, cond, detail=""):
    global failed
    print(("ok cri/%s: %s" % (handler, name)) if cond else ("FAIL cri/%s: %s" % (handler, name)), flush=True)
    if not cond:
        failed += 1
        for line in str(detail).splitlines()[-20:]:
            print("    " + line, flush=True)
    return cond


def sh(*args):
    p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    return p.stdout.strip()


def slice_path(name):
    """systemd's cgroup of a slice: a-b-c.slice is /a.slice/a-b.slice/a-b-c.slice."""
    parts = name[:-len(".slice")].split("-")
    return "".join("/" + "-".join(parts[:i + 1]) + ".slice" for i in range(len(parts)))


def wait_for(cond, seconds=30):
    """A bounded wait on a condition of the host (a shim exiting, a unit going away)."""
    end = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.2)
    return True


def leftovers(ids):
    """What is left on the host of the pod's sandbox and container IDs."""
    found = []
    units = sh("systemctl", "list-units", "--all", "--no-legend", "--plain")
    found += ["unit " + u.split()[0] for u in units.splitlines() if any(i in u for i in ids)]
    root = "/sys/fs/cgroup" + slice_path(pod_slice)
    if os.path.isdir(root):
        found += ["cgroup " + d for d, _, _ in os.walk(root) if d != root]
    with open("/proc/self/mountinfo") as f:
        found += ["mount " + m.split()[4] for m in f if any(i in m for i in ids)]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "containerd-shim" in cmd and any(i in cmd for i in ids):
            found.append("process %s %s" % (pid, cmd))
    return found


logdir = os.path.join(workdir, "pods-" + handler)
os.makedirs(logdir, exist_ok=True)
uid = str(uuid.uuid4())
sandbox = pod_config("nvbind-" + handler, uid, logdir, pod_slice, annotations)
pod = cid = None
ids = []
try:
    r = cri.call("RunPodSandbox", f_bytes(1, sandbox) + f_bytes(2, handler), timeout=120)
    pod = first(r, 1).decode()
    ids.append(pod)
    check("RunPodSandbox with runtime_handler %s under %s" % (handler, pod_slice), bool(pod))

    st = cri.call("PodSandboxStatus", f_bytes(1, pod) + f_int(2, 1))
    info = json.loads(decode_map(st.get(2, [])).get("info", "{}"))
    opts = info.get("runtimeOptions") or {}
    # The runc shim's options as containerd shows them (its JSON names, or the TOML's).
    systemd = opts.get("systemd_cgroup", opts.get("SystemdCgroup"))
    name = opts.get("binary_name", opts.get("BinaryName", ""))
    check("the sandbox runs under the handler %s (SystemdCgroup %s, BinaryName %r)" % (handler, systemd, name),
          info.get("runtimeHandler") == handler and systemd is True and name == binary,
          json.dumps(info.get("runtimeOptions")))

    cfg = container_config("main", image, ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"],
                           res=resources(memory=64 * MIB, cpu_period=100000, cpu_quota=50000))
    cid = first(cri.call("CreateContainer", f_bytes(1, pod) + f_bytes(2, cfg) + f_bytes(3, sandbox),
                         timeout=120), 1).decode()
    ids.append(cid)
    cri.call("StartContainer", f_bytes(1, cid), timeout=120)
    st = cri.call("ContainerStatus", f_bytes(1, cid) + f_int(2, 1))
    pid = json.loads(decode_map(st.get(2, [])).get("info", "{}")).get("pid", 0)
    check("CreateContainer + StartContainer: running", first(decode(first(st, 1)), 3) == RUNNING and pid > 0,
          repr(decode(first(st, 1))))

    scope = "cri-containerd-%s.scope" % cid
    with open("/proc/%d/cgroup" % pid) as f:
        cg = f.read().split("::", 1)[1].strip()
    check("the container runs in the systemd scope %s under the pod's slice" % scope[:30],
          cg == slice_path(pod_slice) + "/" + scope and sh("systemctl", "is-active", scope) == "active",
          "cgroup " + cg)

    def execsync(script):
        r = cri.call("ExecSync", f_bytes(1, cid) + f_strs(2, ["sh", "-c", script]) + f_int(3, 60), timeout=90)
        return first(r, 1, b"").decode().strip(), first(r, 3, 0)

    # The container's own cgroup files, whether or not it has a cgroup namespace.
    own = 'd=/sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup); cat $d/memory.max; cat $d/cpu.max'
    out, code = execsync(own)
    check("memory and CPU limits seen inside (memory.max, cpu.max)", out.split("\n") == ["67108864", "50000 100000"],
          "%r exit %d" % (out, code))
    unit = sh("systemctl", "show", scope, "-p", "MemoryMax", "-p", "CPUQuotaPerSecUSec")
    check("the scope carries them (%s)" % unit.replace("\n", " "),
          "MemoryMax=67108864" in unit and "CPUQuotaPerSecUSec=500ms" in unit, unit)

    if gpu == "yes":
        out, code = execsync("exec 3>/dev/nvidia0 && echo opened")
        check("the GPU of the pod's CDI annotation opens inside", out == "opened", "%r exit %d" % (out, code))
    else:
        out, code = execsync("test -e /dev/nvidia0 && echo present || echo absent")
        check("control: the pod's CDI annotation gives no GPU node", out == "absent", "%r exit %d" % (out, code))

    cri.call("UpdateContainerResources", f_bytes(1, cid) + f_bytes(2, resources(memory=128 * MIB,
             cpu_period=100000, cpu_quota=50000)), timeout=90)
    out, code = execsync(own)
    unit = sh("systemctl", "show", scope, "-p", "MemoryMax", "--value")
    check("UpdateContainerResources: 128 MiB inside and on the scope (MemoryMax %s)" % unit,
          out.split("\n")[0] == "134217728" and unit == "134217728", "%r exit %d" % (out, code))

    cri.call("StopContainer", f_bytes(1, cid) + f_int(2, 30), timeout=90)
    s = decode(first(cri.call("ContainerStatus", f_bytes(1, cid)), 1))
    check("StopContainer: exited 0 on SIGTERM", first(s, 3) == EXITED and first(s, 7, 0) == 0, repr(s))
    cri.call("RemoveContainer", f_bytes(1, cid), timeout=90)
    cid = None
    cri.call("StopPodSandbox", f_bytes(1, pod), timeout=120)
    cri.call("RemovePodSandbox", f_bytes(1, pod), timeout=120)
    pod = None
    check("RemoveContainer, StopPodSandbox, RemovePodSandbox", True)
    left = []
    ok = wait_for(lambda: not leftovers(ids) or left.append(leftovers(ids)))
    check("nothing of the pod is left (scopes, cgroups, mounts, shim)", ok, "\n".join(left[-1] if left else []))
except grpc.RpcError as e:
    check("the pod through CRI", False, "%s: %s" % (e.code(), e.details()))
finally:
    # A pod that failed half way is removed as the kubelet would, so nothing is left behind.
    try:
        if cid:
            cri.call("RemoveContainer", f_bytes(1, cid), timeout=90)
        if pod:
            cri.call("StopPodSandbox", f_bytes(1, pod), timeout=120)
            cri.call("RemovePodSandbox", f_bytes(1, pod), timeout=120)
    except grpc.RpcError as e:
        check("removing the pod after a failure", False, "%s: %s" % (e.code(), e.details()))
sys.exit(1 if failed else 0)
