#!/usr/bin/env python3
"""Writes NAME.truth.json beside each capture made by captures/make-captures.sh.

The evidence frames are read with tshark, not with lbdiag, so tests/truth.rs compares lbdiag
with an independent reading of the same file. Before writing anything, each capture is checked
to really show its story (a refusal is a SYN answered by RST, the late reset comes after both
FINs, the VLAN frames carry tag 100, ...); the script stops with an error when one does not.

  python3 captures/tools/make_truth.py CAPTURES_DIR
"""
import json
import os
import subprocess
import sys

FIELDS = ["frame.number", "frame.interface_id", "tcp.stream", "ip.src", "ipv6.src", "tcp.srcport",
          "tcp.dstport", "tcp.flags.syn", "tcp.flags.ack", "tcp.flags.reset", "tcp.flags.fin",
          "tcp.len", "vlan.id", "frame.encap_type"]
TCP_KINDS = ["handshake_refused", "syn_unanswered", "connection_reset"]


class Pkt:
    def __init__(self, values):
        v = dict(zip(FIELDS, values))
        b = lambda k: v[k] in ("1", "True")
        self.frame = int(v["frame.number"])
        self.iface = int(v["frame.interface_id"] or 0)
        self.stream = int(v["tcp.stream"]) if v["tcp.stream"] else None
        self.src = v["ip.src"] or v["ipv6.src"]
        self.sport = int(v["tcp.srcport"] or 0)
        self.dport = int(v["tcp.dstport"] or 0)
        self.syn, self.ack, self.rst, self.fin = (b("tcp.flags.syn"), b("tcp.flags.ack"),
                                                  b("tcp.flags.reset"), b("tcp.flags.fin"))
        self.len = int(v["tcp.len"] or 0)
        self.vlan = v["vlan.id"]
        self.encap = v["frame.encap_type"]


def read(path):
    args = ["tshark", "-r", path, "-T", "fields", "-E", "separator=\t", "-E", "occurrence=f"]
    for f in FIELDS:
        args += ["-e", f]
    res = subprocess.run(args, capture_output=True, text=True)
    # A cut file makes tshark exit non-zero after printing every whole frame.
    return [Pkt(line.split("\t")) for line in res.stdout.splitlines()]


def fail(name, why):
    sys.exit(f"make_truth: {name}: {why}")


def refusals(name, pkts, port, count):
    out = []
    for p in pkts:
        if p.rst and p.sport == port:
            syns = [q for q in pkts if q.syn and not q.ack and q.dport == port
                    and q.stream == p.stream and q.frame < p.frame]
            if not syns or not p.ack:
                fail(name, f"RST frame {p.frame} does not answer a SYN")
            if any(q.syn and q.ack and q.stream == p.stream for q in pkts):
                fail(name, f"stream {p.stream} was accepted, not refused")
            out.append({"kind": "handshake_refused", "status": 502, "server_port": port,
                        "frames": [syns[-1].frame, p.frame]})
    if len(out) != count:
        fail(name, f"expected {count} refusals on {port}, found {len(out)}")
    return out


def healthy_exchange(name, pkts, port, requests=1):
    conn = [p for p in pkts if port in (p.sport, p.dport)]
    if not conn:
        fail(name, f"no healthy connection to {port}")
    if any(p.rst for p in conn):
        fail(name, f"the connection to {port} has a reset")
    if not (any(p.fin and p.sport == port for p in conn) and any(p.fin and p.dport == port for p in conn)):
        fail(name, f"the connection to {port} does not end with FINs both ways")
    n = sum(1 for p in conn if p.dport == port and p.len > 0)
    if n != requests:
        fail(name, f"expected {requests} request segments to {port}, found {n}")
    if len({p.stream for p in conn}) != 1:
        fail(name, f"expected one connection to {port}")


def reset_awaiting(name, pkts, port, by, status, stream=None):
    conn = [p for p in pkts if port in (p.sport, p.dport) and (stream is None or p.stream == stream)]
    resets = [p for p in conn if p.rst]
    if len(resets) != 1:
        fail(name, f"expected one RST, found {len(resets)}")
    rst = resets[0]
    if (rst.sport == port) != (by == "server"):
        fail(name, f"the RST in frame {rst.frame} is not from the {by}")
    before = [p for p in conn if p.frame < rst.frame]
    if not any(p.dport == port and p.len > 0 for p in before):
        fail(name, "no request before the RST")
    if any(p.sport == port and p.len > 0 for p in before):
        fail(name, "the server answered before the RST")
    if any(p.fin for p in before):
        fail(name, "a FIN precedes the RST")
    return [{"kind": "connection_reset", "status": status, "server_port": port,
             "frames": [rst.frame]}]


def magic(path):
    with open(path, "rb") as f:
        return f.read(4)


def main(out):
    truths = []

    def write(capture, story, expect, must_not, healthy=False, also=None, warnings=None):
        base = capture
        for ext in (".gz", ".pcapng", ".pcap"):
            if base.endswith(ext):
                base = base[: -len(ext)]
        truth = {"capture": capture, "vantage": "client", "story": story, "args": [],
                 "healthy": healthy, "expect": expect, "also_acceptable": also or [],
                 "must_not": must_not, "warnings": warnings or []}
        with open(os.path.join(out, base + ".truth.json"), "w") as f:
            json.dump(truth, f, indent=2)
            f.write("\n")
        truths.append((capture, len(pkts), expect))

    path = lambda n: os.path.join(out, n)
    refused_only = ["syn_unanswered", "connection_reset"]

    name = "refused.pcap"
    pkts = read(path(name))
    healthy_exchange(name, pkts, 8080)
    refused_expect = refusals(name, pkts, 8081, 2)
    write(name, "curl on the client (10.10.0.1) asks 10.10.0.2:8081 twice, where nothing listens: "
          "the server's kernel answers each SYN with RST/ACK. A request to nginx on 8080 in between "
          "succeeds.", refused_expect, refused_only)

    name = "cut-mid-record.pcap"
    pkts = read(path(name))
    full = read(path("refused.pcap"))
    if len(pkts) != len(full) - 1 or not full[-1].rst:
        fail(name, "expected refused.pcap less its last record, the second refusal's RST")
    if os.path.getsize(path(name)) != os.path.getsize(path("refused.pcap")) - 20:
        fail(name, "expected refused.pcap less its last 20 bytes")
    write(name, "refused.pcap with its last 20 bytes removed, so its final record (the second "
          "refusal's RST) is cut in the middle. The frames before the cut still show the first "
          "refusal and the healthy request; the second SYN is left without its answer, at most "
          "worth a note since the capture ends right after it.",
          refused_expect[:1], ["connection_reset"], also=["handshake_refused", "syn_unanswered"],
          warnings=["cut"])

    name = "syn-unanswered.pcap"
    pkts = read(path(name))
    syns = [p for p in pkts if p.syn and not p.ack and p.dport == 8082]
    if len(syns) < 2 or len(pkts) != len(syns):
        fail(name, "expected only SYNs (and their retransmissions) to 8082")
    write(name, "iptables in the server namespace drops SYNs to port 8082; curl --connect-timeout 4 "
          "sends its SYN and the kernel retransmits it (1 s apart: Linux's linear SYN timeouts) "
          "until curl gives up after 4 s.",
          [{"kind": "syn_unanswered", "status": 504, "server_port": 8082, "frames": [syns[0].frame]}],
          ["handshake_refused", "connection_reset"])

    name = "server-reset-awaiting-response.pcap"
    pkts = read(path(name))
    write(name, "A Python server on 10.10.0.2:8083 reads curl's whole request, waits 0.3 s and "
          "closes with SO_LINGER 0: an RST while the client waits for its response (502).",
          reset_awaiting(name, pkts, 8083, "server", 502),
          ["handshake_refused", "syn_unanswered", "closed_before_response", "malformed_response"])

    name = "client-reset.pcap"
    pkts = read(path(name))
    write(name, "A Python client sends a request to a server on 8084 that takes 2 s; it gives up "
          "after 0.5 s and closes with SO_LINGER 0: an RST from the client while awaiting the "
          "response (499).",
          reset_awaiting(name, pkts, 8084, "client", 499),
          ["handshake_refused", "syn_unanswered", "closed_before_response"],
          also=["client_closed_early"])

    name = "reused-4tuple.pcap"
    pkts = read(path(name))
    streams = sorted({p.stream for p in pkts})
    tuples = {(p.src, p.sport) for p in pkts if p.dport == 8089}
    if len(streams) != 2 or len(tuples) != 1:
        fail(name, f"expected two connections on one 4-tuple, found streams {streams}, {tuples}")
    first = [p for p in pkts if p.stream == streams[0]]
    if any(p.rst for p in first):
        fail(name, "the first connection has a reset")
    fins = [p for p in first if p.fin]
    if len(fins) != 2 or fins[0].sport != 8089:
        fail(name, "the server should close the first connection first")
    write(name, "A Python client binds source port 40501 twice to reach 10.10.0.2:8089. The first "
          "connection is answered and the server closes it first (so the client keeps no "
          "TIME_WAIT); the second, on the same 4-tuple, is reset by the server while its request "
          "waits. Two connections, one reset, on the second only.",
          reset_awaiting(name, pkts, 8089, "server", 502, stream=streams[1]),
          ["handshake_refused", "syn_unanswered"])

    name = "reset-after-fin.pcap"
    pkts = read(path(name))
    rsts = [p for p in pkts if p.rst]
    if len(rsts) != 1:
        fail(name, f"expected one RST, found {len(rsts)}")
    server_fin = [p for p in pkts if p.fin and p.sport == 8086]
    client_fin = [p for p in pkts if p.fin and p.dport == 8086]
    if not server_fin or not client_fin or max(server_fin[0].frame, client_fin[0].frame) > rsts[0].frame:
        fail(name, "both FINs must precede the RST")
    if not any(p.sport == 8086 and p.len > 0 for p in pkts):
        fail(name, "the request was not answered")
    write(name, "Healthy: a Python server on 8086 answers and closes (FIN); the client reads the "
          "whole response and sends a stray CRLF in the same segment as its own FIN. The server's "
          "socket is already closed, so its kernel answers that segment with RST: a late reset "
          "after both FINs, not a failure.",
          [], TCP_KINDS + ["closed_before_response", "client_closed_early", "response_body_truncated"],
          healthy=True)

    name = "healthy-keepalive.pcap"
    pkts = read(path(name))
    healthy_exchange(name, pkts, 8080, requests=3)
    write(name, "Healthy: curl fetches three pages from nginx on 10.10.0.2:8080 over one keep-alive "
          "connection and closes it normally.",
          [], TCP_KINDS + ["packet_loss", "zero_window", "high_rtt", "error_status", "no_response"],
          healthy=True)

    name = "two-linktypes.pcapng"
    pkts = read(path(name))
    by_iface = {}
    for p in pkts:
        by_iface.setdefault(p.iface, set()).add(p.encap)
    if len(by_iface) != 2 or len(set.union(*by_iface.values())) != 2:
        fail(name, f"expected two interfaces with different link types, found {by_iface}")
    if {p.iface for p in pkts if 8081 in (p.sport, p.dport)} == {p.iface for p in pkts if 8080 in (p.sport, p.dport)}:
        fail(name, "the refusal and the healthy request should be on different interfaces")
    healthy_exchange(name, pkts, 8080)
    exp = refusals(name, pkts, 8081, 1)
    if max(p.frame for p in pkts if 8080 in (p.sport, p.dport)) > exp[0]["frames"][0]:
        fail(name, "the healthy request should come first in the file")
    write(name, "dumpcap in the client namespace captures two interfaces into one pcapng: 'any' "
          "(Linux cooked) with filter port 8080, where a request to nginx succeeds first, and the "
          "veth (Ethernet) with filter port 8081, where a connection is then refused. Frame "
          "numbers count both interfaces in file order, so the refusal is frames %d and %d."
          % tuple(exp[0]["frames"]), exp, refused_only)

    name = "sll2-refused.pcap"
    pkts = read(path(name))
    healthy_exchange(name, pkts, 8080)
    write(name, "tcpdump -i any -y LINUX_SLL2 in the client namespace: a connection refused by "
          "10.10.0.2:8081 and a healthy request to nginx on 8080.",
          refusals(name, pkts, 8081, 1), refused_only)

    name = "vlan-refused.pcap"
    pkts = read(path(name))
    if any(p.vlan != "100" for p in pkts):
        fail(name, "every frame should carry 802.1Q tag 100")
    healthy_exchange(name, pkts, 8080)
    how = ("VLAN subinterfaces on both ends of a veth pair" if os.environ.get("VLAN_MODE") == "8021q"
           else "eBPF programs on both ends of a veth pair that push and pop the tag "
           "(bpf_skb_vlan_push/pop; the kernel has no 8021q driver)")
    write(name, "802.1Q VLAN 100 between 10.10.100.1 and 10.10.100.2, made by " + how + ", "
          "captured on the client's parent veth: a connection refused on 8081 and a healthy "
          "request to nginx on 8080.",
          refusals(name, pkts, 8081, 1), refused_only)

    name = "ipv6-refused.pcap"
    pkts = read(path(name))
    if not all(":" in p.src for p in pkts):
        fail(name, "expected only IPv6")
    healthy_exchange(name, pkts, 8080)
    write(name, "Over IPv6 (fd00:10::1 to fd00:10::2): a connection refused on 8081 and a healthy "
          "request to nginx on 8080.",
          refusals(name, pkts, 8081, 1), refused_only)

    name = "server-reset.pcap.gz"
    if magic(path(name))[:2] != b"\x1f\x8b":
        fail(name, "not gzip")
    pkts = read(path(name))
    write(name, "A Python server on 8087 reads curl's request and resets the connection (SO_LINGER "
          "0) while curl waits for the response; the capture is compressed with gzip -n and must "
          "be recognised by its magic bytes.",
          reset_awaiting(name, pkts, 8087, "server", 502),
          ["handshake_refused", "syn_unanswered", "closed_before_response", "malformed_response"])

    name = "nanosecond-reset.pcap"
    if magic(path(name)) != b"\x4d\x3c\xb2\xa1":
        fail(name, "expected the nanosecond pcap magic (a1b23c4d, little-endian)")
    pkts = read(path(name))
    write(name, "A server on 8088 resets the connection while curl waits for the response, "
          "captured with tcpdump --time-stamp-precision nano (legacy pcap, nanosecond magic).",
          reset_awaiting(name, pkts, 8088, "server", 502),
          ["handshake_refused", "syn_unanswered", "closed_before_response", "malformed_response"])

    name = "snaplen-cut.pcap"
    pkts = read(path(name))
    if not any(p.len > 0 and p.sport == 8080 for p in pkts):
        fail(name, "no response data")
    res = subprocess.run(["capinfos", "-l", "-M", path(name)], capture_output=True, text=True)
    if "96 bytes" not in res.stdout:
        fail(name, f"expected a 96-byte snaplen: {res.stdout}")
    write(name, "curl downloads a 30 KB page from nginx on 8080 while tcpdump (-s 96) keeps only "
          "the first 96 bytes of each frame: the response head and body are mostly missing from "
          "the capture. Healthy traffic; the only honest finding is that the capture misses bytes.",
          [{"kind": "capture_gap", "server_port": 8080}],
          TCP_KINDS + ["malformed_response", "response_body_truncated", "response_body_overrun",
                       "no_response", "closed_before_response", "packet_loss", "error_status"],
          healthy=True)

    for capture, n, expect in truths:
        found = ", ".join(f"{e['kind']} {e.get('status', '-')} port {e['server_port']} frames {e.get('frames', '-')}"
                          for e in expect) or "nothing (healthy)"
        print(f"{capture:38} {n:3} frames  expect: {found}")


if __name__ == "__main__":
    main(sys.argv[1])
