"""Report what this container may do: writes, sockets, identity, capabilities, limits -> /output/probe.json.

Socket probes send nothing: a UDP connect() is only a route lookup, and the TCP target is TEST-NET-1
(192.0.2.1, RFC 5737), an address reserved for documentation; with no network the kernel refuses both
before any packet exists.
"""

import errno
import json
import os
import socket


def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))


def write(path):
    def go():
        with open(path, "w") as fh:
            fh.write("probe")
    return go


def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))
    finally:
        s.close()


def tcp():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect(("192.0.2.1", 9))
    finally:
        s.close()


def status_field(name):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    return None


def read_first(*paths):
    for p in paths:
        try:
            with open(p) as fh:
                return fh.read().strip()
        except OSError:
            continue
    return None


report = {
    "uid": os.getuid(),
    "gid": os.getgid(),
    "write_input": attempt(write("/input/probe.txt")),
    "write_root": attempt(write("/probe.txt")),
    "write_etc": attempt(write("/etc/probe.txt")),
    "write_tmp": attempt(write("/tmp/probe.txt")),
    "write_output": attempt(write("/output/probe.txt")),
    "input_listing": sorted(os.listdir("/input")),
    "interfaces": sorted(os.listdir("/sys/class/net")),
    "udp_connect": attempt(udp),
    "tcp_connect": attempt(tcp),
    "cap_eff": status_field("CapEff"),
    "no_new_privs": status_field("NoNewPrivs"),
    # cgroup v1 paths first, then v2
    "pids_max": read_first("/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max"),
    "memory_max": read_first("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"),
    "memsw_max": read_first("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes", "/sys/fs/cgroup/memory.swap.max"),
    # "quota period" (v1) or "quota period" from cpu.max (v2)
    "cpu_quota": (
        " ".join(filter(None, [read_first("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
                               read_first("/sys/fs/cgroup/cpu/cpu.cfs_period_us")]))
        or read_first("/sys/fs/cgroup/cpu.max")
    ),
}
with open("/output/probe.json", "w") as fh:
    json.dump(report, fh, indent=1)
print(json.dumps(report))
