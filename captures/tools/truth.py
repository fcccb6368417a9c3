#!/usr/bin/env python3
"""Writes NAME.truth.json beside each TCP capture. The evidence frames come from tshark, not
from lbdiag, so the test compares lbdiag with an independent reading of the same file."""
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile

FIELDS = ["frame.number", "tcp.stream", "tcp.srcport", "tcp.dstport", "tcp.flags.syn",
          "tcp.flags.ack", "tcp.flags.reset", "tcp.flags.fin", "tcp.len"]


def rows(path):
    tmp = None
    if path.endswith(".gz"):
        tmp = tempfile.NamedTemporaryFile(suffix=".pcap", delete=False)
        with gzip.open(path) as src:
            shutil.copyfileobj(src, tmp)
        tmp.close()
        path = tmp.name
    args = ["tshark", "-r", path, "-T", "fields", "-E", "separator=,"]
    for f in FIELDS:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True).stdout
    if tmp:
        os.unlink(tmp.name)
    result = []
    for line in out.splitlines():
        v = line.split(",")
        if not v[1]:
            continue
        as_bool = lambda x: x in ("1", "True")
        result.append(dict(frame=int(v[0]), stream=int(v[1]), sport=int(v[2]), dport=int(v[3]),
                           syn=as_bool(v[4]), ack=as_bool(v[5]), rst=as_bool(v[6]),
                           fin=as_bool(v[7]), len=int(v[8] or 0)))
    return result


def refused(r, port):
    out = []
    for p in r:
        if p["rst"] and p["sport"] == port:
            syn = max(q["frame"] for q in r if q["syn"] and not q["ack"] and q["dport"] == port
                      and q["stream"] == p["stream"] and q["frame"] < p["frame"])
            out.append({"kind": "handshake_refused", "status": 502, "server_port": port,
                        "frames": [syn, p["frame"]]})
    return out


def unanswered(r, port):
    first = min(p["frame"] for p in r if p["syn"] and not p["ack"] and p["dport"] == port)
    return [{"kind": "syn_unanswered", "status": 504, "server_port": port, "frames": [first]}]


def resets(r, port, by, status, stream=None):
    src = (lambda p: p["sport"] == port) if by == "server" else (lambda p: p["dport"] == port)
    frames = [p["frame"] for p in r if p["rst"] and src(p) and (stream is None or p["stream"] == stream)]
    return [{"kind": "connection_reset", "status": status, "server_port": port, "frames": [frames[0]]}]


TCP_KINDS = ["handshake_refused", "syn_unanswered", "connection_reset"]


def write(out, capture, vantage, story, expect, must_not, healthy=False, warnings=None, also=None):
    base = capture
    for ext in (".gz", ".pcapng", ".pcap"):
        base = base[: -len(ext)] if base.endswith(ext) else base
    truth = {"capture": capture, "vantage": vantage, "story": story, "args": [],
             "healthy": healthy, "expect": expect, "also_acceptable": also or [],
             "must_not": must_not, "warnings": warnings or []}
    with open(os.path.join(out, base + ".truth.json"), "w") as f:
        json.dump(truth, f, indent=2)
        f.write("\n")


def main(out):
    p = lambda name: os.path.join(out, name)
    r = rows(p("refused.pcap"))
    write(out, "refused.pcap", "client",
          "curl on the client asks 10.77.0.2:8081 twice, where nothing listens: the server's kernel answers each SYN with RST/ACK. A request to nginx on 8080 in between succeeds.",
          refused(r, 8081), ["syn_unanswered", "connection_reset"])
    r = rows(p("cut-mid-record.pcap"))
    write(out, "cut-mid-record.pcap", "client",
          "refused.pcap with its last 20 bytes removed, so the final record (the second refusal's RST) is cut in the middle. Everything before the cut is still analyzed: the first refusal and the healthy request; the second SYN is at most an informational note, since the capture ends right after it.",
          refused(rows(p("refused.pcap")), 8081)[:1], ["connection_reset"],
          warnings=["cut"], also=["handshake_refused", "syn_unanswered"])
    r = rows(p("syn-unanswered.pcap"))
    write(out, "syn-unanswered.pcap", "client",
          "iptables on the server drops SYNs to port 8082; curl retransmits its SYN until its 4-second connect timeout and gives up.",
          unanswered(r, 8082), ["handshake_refused", "connection_reset"])
    r = rows(p("server-reset-awaiting-response.pcap"))
    write(out, "server-reset-awaiting-response.pcap", "client",
          "A Python server on 8083 reads curl's request, waits 0.3 s and closes with SO_LINGER 0: an RST while the client waits for its response.",
          resets(r, 8083, "server", 502), ["handshake_refused", "syn_unanswered", "closed_before_response", "malformed_response"])
    r = rows(p("client-reset.pcap"))
    write(out, "client-reset.pcap", "client",
          "A Python client sends a request to a server that takes 2 s, gives up after 0.5 s and closes with SO_LINGER 0: an RST from the client while awaiting the response.",
          resets(r, 8084, "client", 499), ["handshake_refused", "syn_unanswered", "closed_before_response"],
          also=["client_closed_early"])
    r = rows(p("reused-4tuple.pcap"))
    second = max(q["stream"] for q in r)
    write(out, "reused-4tuple.pcap", "client",
          "A Python client binds source port 45000 twice to reach 8085. The first connection is answered and closed by the server; the second, on the same 4-tuple, is reset by the server while its request waits.",
          resets(r, 8085, "server", 502, stream=second), ["handshake_refused", "syn_unanswered"])
    write(out, "reset-after-fin.pcap", "client",
          "A Python server answers, sends FIN, waits for the client's FIN and then closes with SO_LINGER 0: a late RST after both FINs, which is normal teardown.",
          [], TCP_KINDS + ["closed_before_response", "client_closed_early", "response_body_truncated"], healthy=True)
    write(out, "healthy-keepalive.pcap", "client",
          "curl fetches three pages from nginx over one keep-alive connection and closes normally.",
          [], TCP_KINDS + ["packet_loss", "zero_window", "high_rtt", "error_status", "no_response"], healthy=True)
    r = rows(p("two-linktypes.pcapng"))
    write(out, "two-linktypes.pcapng", "proxy",
          "mergecap of two captures: the client's Ethernet view of a refused connection to 8081 and the server host's Linux cooked (-i any) view of a healthy request to 8080: one pcapng, two interfaces, two link types.",
          refused(r, 8081), ["syn_unanswered", "connection_reset"])
    r = rows(p("sll2-refused.pcap"))
    write(out, "sll2-refused.pcap", "client",
          "tcpdump -i any -y LINUX_SLL2 on the client: a refused connection to 8081 and a healthy request to 8080.",
          refused(r, 8081), ["syn_unanswered", "connection_reset"])
    r = rows(p("vlan-refused.pcap"))
    write(out, "vlan-refused.pcap", "client",
          "A refused connection to 8081 and a healthy request to 8080, captured on the client and tagged with 802.1Q VLAN 100 by tcprewrite (this kernel has no VLAN module).",
          refused(r, 8081), ["syn_unanswered", "connection_reset"])
    r = rows(p("ipv6-refused.pcap"))
    write(out, "ipv6-refused.pcap", "client",
          "Over IPv6 (fd77::1 to fd77::2): a refused connection to 8081 and a healthy request to 8080.",
          refused(r, 8081), ["syn_unanswered", "connection_reset"])
    r = rows(p("server-reset.pcap.gz"))
    write(out, "server-reset.pcap.gz", "client",
          "The server on 8083 resets while curl waits for its response; the file is gzip-compressed and must be recognised by its magic bytes.",
          resets(r, 8083, "server", 502), ["handshake_refused", "syn_unanswered"])
    write(out, "snaplen-cut.pcap", "client",
          "curl downloads a 30 KB page from nginx while tcpdump keeps only the first 96 bytes of each frame: the response head and body are mostly missing from the capture. Healthy traffic; the only honest finding is that the capture misses bytes.",
          [{"kind": "capture_gap", "server_port": 8080}],
          TCP_KINDS + ["malformed_response", "response_body_truncated", "response_body_overrun",
                       "no_response", "closed_before_response", "packet_loss", "error_status"],
          healthy=True, warnings=[])
    r = rows(p("nanosecond-reset.pcap"))
    write(out, "nanosecond-reset.pcap", "client",
          "The same server reset, captured with tcpdump --time-stamp-precision nano (legacy pcap, nanosecond magic).",
          resets(r, 8083, "server", 502), ["handshake_refused", "syn_unanswered"])


if __name__ == "__main__":
    main(sys.argv[1])
