#!/usr/bin/env python3
"""Makes one interface a VLAN trunk port without the kernel's 8021q driver (this kernel is built
without CONFIG_VLAN_8021Q, so `ip link add ... type vlan` fails with "Unknown device type").

Two tiny eBPF programs are attached with tcx (BPF_LINK_CREATE, kernel >= 6.6):
  egress:  bpf_skb_vlan_push(skb, 0x8100, VID)  - every frame leaves with an 802.1Q tag
  ingress: bpf_skb_vlan_pop(skb)                - the tag is removed before IP sees the frame
These helpers call the kernel's own skb_vlan_push()/skb_vlan_pop(), which is what a VLAN
subinterface does, so tcpdump on the interface sees tagged frames both ways (libpcap rebuilds
the tag from the packet socket's auxdata, as it does for any VLAN device).

Usage (inside the namespace that owns IFNAME): vlan_tcx.py IFNAME VID SECONDS READYFILE
The programs stay attached while this process lives: until SIGTERM/SIGINT or SECONDS pass.
"""
import ctypes
import os
import signal
import socket
import struct
import sys
import time

SYS_BPF = 321  # x86_64
BPF_PROG_LOAD, BPF_LINK_CREATE = 5, 28
BPF_PROG_TYPE_SCHED_CLS = 3
BPF_TCX_INGRESS, BPF_TCX_EGRESS = 46, 47
FUNC_SKB_VLAN_PUSH, FUNC_SKB_VLAN_POP = 18, 19

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def insn(code, dst=0, src=0, off=0, imm=0):
    return struct.pack("<BBhi", code, dst | (src << 4), off, imm)


MOV64_IMM, CALL, EXIT = 0xB7, 0x85, 0x95


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, len(attr))
    fd = libc.syscall(SYS_BPF, cmd, buf, len(attr))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


def load(code, name):
    prog = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(65536)
    attr = struct.pack("<IIQQIIQII16s", BPF_PROG_TYPE_SCHED_CLS, len(code) // 8,
                       ctypes.addressof(prog), ctypes.addressof(lic), 1, len(log),
                       ctypes.addressof(log), 0, 0, name)
    attr += b"\0" * (128 - len(attr))
    try:
        return bpf(BPF_PROG_LOAD, attr)
    except OSError as e:
        sys.exit(f"vlan_tcx: BPF_PROG_LOAD {name!r}: {e}\n{log.value.decode(errors='replace')}")


def attach(prog_fd, ifindex, attach_type):
    attr = struct.pack("<IIII", prog_fd, ifindex, attach_type, 0)
    attr += b"\0" * (64 - len(attr))
    return bpf(BPF_LINK_CREATE, attr)


def main():
    ifname, vid, seconds, ready = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    ifindex = socket.if_nametoindex(ifname)
    tpid = struct.unpack("<H", struct.pack(">H", 0x8100))[0]  # __be16 as the helper wants it
    push = (insn(MOV64_IMM, dst=2, imm=tpid) + insn(MOV64_IMM, dst=3, imm=vid)
            + insn(CALL, imm=FUNC_SKB_VLAN_PUSH) + insn(MOV64_IMM, dst=0, imm=0) + insn(EXIT))
    pop = insn(CALL, imm=FUNC_SKB_VLAN_POP) + insn(MOV64_IMM, dst=0, imm=0) + insn(EXIT)
    links = [attach(load(push, b"vlan_push"), ifindex, BPF_TCX_EGRESS),
             attach(load(pop, b"vlan_pop"), ifindex, BPF_TCX_INGRESS)]
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    with open(ready, "w") as f:
        f.write("ready\n")
    deadline = time.time() + seconds
    while not stop and time.time() < deadline:
        time.sleep(0.1)
    for fd in links:
        os.close(fd)


if __name__ == "__main__":
    main()
