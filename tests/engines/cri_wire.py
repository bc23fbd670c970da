"""The CRI (k8s.io/cri-api, runtime.v1) over gRPC with messages encoded by hand: the field
numbers are those of pkg/apis/runtime/v1/api.proto, which containerd 1.6 and 1.7 serve alike,
so python3-grpcio is all a client needs (no protoc, no generated code, no protobuf runtime whose
version would have to match it on every Debian release). Used by cri-client.py and cri-pod.py.
"""
import grpc


# --- protobuf wire format -----------------------------------------------------------------
def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def f_int(num, v):
    return varint(num << 3) + varint(v) if v else b""


def f_bytes(num, b):
    if isinstance(b, str):
        b = b.encode()
    return varint((num << 3) | 2) + varint(len(b)) + b


def f_strs(num, items):
    return b"".join(f_bytes(num, s) for s in items)


def f_map(num, d):
    return b"".join(f_bytes(num, f_bytes(1, k) + f_bytes(2, v)) for k, v in d.items())


def decode(buf):
    """field number -> list of values (int for varints, bytes for length-delimited)."""
    out, i = {}, 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 2:
            n, i = _varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError("unsupported wire type %d" % wt)
        out.setdefault(num, []).append(v)
    return out


def _varint(buf, i):
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def first(d, num, default=None):
    return d.get(num, [default])[0]


def decode_map(entries):
    return {first(decode(e), 1, b"").decode(): first(decode(e), 2, b"").decode() for e in entries}


# --- the service ----------------------------------------------------------------------------
# NamespaceMode: POD (shared by the pod's containers), CONTAINER (each its own), NODE (the host's)
POD, CONTAINER, NODE = 0, 1, 2

# ContainerState
CREATED, RUNNING, EXITED = 0, 1, 2


class Cri:
    def __init__(self, sock):
        self.chan = grpc.insecure_channel("unix://" + sock)

    def call(self, method, req, timeout=60):
        rpc = self.chan.unary_unary("/runtime.v1.RuntimeService/" + method)
        return decode(rpc(req, timeout=timeout))


def pod_config(name, uid, logdir, cgroup_parent="", annotations=None):
    """PodSandboxConfig: metadata 1, log_directory 3, annotations 7, linux 8 (cgroup_parent 1,
    security_context 2 -> namespace_options 1 -> network 1, pid 2, ipc 3). The namespaces are the
    kubelet's for a hostNetwork pod: the host's network (no CNI needed here), a PID namespace
    per container, the pod's IPC namespace."""
    linux = f_bytes(1, cgroup_parent) if cgroup_parent else b""
    linux += f_bytes(2, f_bytes(1, f_int(1, NODE) + f_int(2, CONTAINER) + f_int(3, POD)))
    return (
        f_bytes(1, f_bytes(1, name) + f_bytes(2, uid) + f_bytes(3, "default"))
        + f_bytes(3, logdir)
        + f_map(7, annotations or {})
        + f_bytes(8, linux)
    )


def resources(memory=0, cpu_period=0, cpu_quota=0):
    """LinuxContainerResources: cpu_period 1, cpu_quota 2, memory_limit_in_bytes 4."""
    return f_int(1, cpu_period) + f_int(2, cpu_quota) + f_int(4, memory)


def container_config(name, image, command, envs=None, cwd="", res=b"", annotations=None):
    """ContainerConfig: metadata 1, image 2, command 3, working_dir 5, envs 6, annotations 10,
    log_path 11, linux 15 (resources 1)."""
    return (
        f_bytes(1, f_bytes(1, name))
        + f_bytes(2, f_bytes(1, image))
        + f_strs(3, command)
        + (f_bytes(5, cwd) if cwd else b"")
        + b"".join(f_bytes(6, f_bytes(1, k) + f_bytes(2, v)) for k, v in (envs or {}).items())
        + f_map(10, annotations or {})
        + f_bytes(11, name + ".log")
        + (f_bytes(15, f_bytes(1, res)) if res else b"")
    )
