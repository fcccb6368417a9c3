#!/usr/bin/env python3
"""Writes truth files for the transport captures. Evidence frames are read with tshark
(including its own TCP analysis), independently of lbdiag."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from truth import write  # noqa: E402


def tshark(path, filt, *fields):
    args = ["tshark", "-r", path, "-Y", filt, "-T", "fields", "-E", "separator=,"]
    for f in fields:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True).stdout
    return [line.split(",") for line in out.splitlines() if line]


NOISE = ["packet_loss", "mtu_blackhole", "zero_window", "connection_reset", "high_rtt",
         "syn_retransmitted", "handshake_refused", "syn_unanswered", "icmp_frag_needed"]


def main(out):
    p = lambda n: os.path.join(out, n)

    f = p("accept-queue-full.pcap")
    syns = tshark(f, "tcp.flags.syn==1 && tcp.flags.ack==0", "tcp.stream", "frame.number")
    synacks = tshark(f, "tcp.flags.syn==1 && tcp.flags.ack==1", "tcp.stream", "frame.number")
    by_stream = {}
    for s, n in syns:
        by_stream.setdefault(s, []).append(int(n))
    expect = []
    for s, frames in sorted(by_stream.items(), key=lambda kv: kv[1][0]):
        if len(frames) > 1:
            synack = min(int(n) for st, n in synacks if st == s)
            expect.append({"kind": "syn_retransmitted", "status": 502, "server_port": 8090,
                           "frames": [frames[0], synack]})
    write(out, "accept-queue-full.pcap", "backend",
          "Captured on the backend. A Python listener with backlog 1 accepts nothing for 3 s while five curl clients connect at once: the kernel answers the first SYNs, then drops the rest until the application accepts, so those handshakes complete only after SYN retransmissions.",
          expect, ["handshake_refused", "syn_unanswered", "packet_loss", "mtu_blackhole"])

    f = p("mtu-blackhole.pcap")
    big = tshark(f, "tcp.analysis.retransmission && ip.len > 1280", "frame.number")
    write(out, "mtu-blackhole.pcap", "client",
          "Client, router, server. The router's link to the server has MTU 1280 and the router's ICMP fragmentation-needed messages are dropped by iptables. A small GET to nginx works; a 20 KB POST to a Python server that reads the whole body sends 1500-byte packets that are retransmitted and never acknowledged until curl gives up after 8 s.",
          [{"kind": "mtu_blackhole", "status": 502, "server_port": 8093, "frames": [int(big[0][0])]}],
          ["icmp_frag_needed", "handshake_refused", "syn_unanswered", "zero_window"],
          also=["packet_loss", "connection_reset", "client_closed_early", "no_response", "request_body_truncated", "oversize_packet"])

    f = p("pmtud-works.pcap")
    icmp = tshark(f, "icmp.type==3 && icmp.code==4", "frame.number")
    write(out, "pmtud-works.pcap", "client",
          "The same path with ICMP allowed: the router sends fragmentation-needed with next-hop MTU 1280, the client lowers its packet size and the 20 KB POST to the Python server succeeds.",
          [{"kind": "icmp_frag_needed", "frames": [int(icmp[0][0])]}],
          ["mtu_blackhole", "packet_loss", "connection_reset", "handshake_refused", "syn_unanswered",
           "zero_window", "malformed_response", "no_response"])

    write(out, "heavy-loss.pcap", "client",
          "iptables on the router drops 15% of the server's packets at random while curl downloads 300 KB: many retransmissions and duplicate ACKs.",
          [{"kind": "packet_loss", "status": 504, "server_port": 80}],
          ["mtu_blackhole", "handshake_refused", "zero_window"],
          also=["syn_retransmitted", "connection_reset", "capture_gap", "high_rtt"])

    write(out, "light-loss-recovered.pcap", "client",
          "The router drops one packet in 150 from the server during a 300 KB download; TCP recovers with a few fast retransmissions. Healthy: nothing a balancer would notice.",
          [], NOISE + ["error_status", "no_response"], healthy=True)

    f = p("zero-window.pcap")
    zw = tshark(f, "tcp.analysis.zero_window && tcp.srcport != 8091", "frame.number")
    write(out, "zero-window.pcap", "client",
          "A Python client with a 4 KB receive buffer reads 1 KB of a 2 MB response, stops reading for 3 s, then reads the rest: it advertises a zero window and the server stalls.",
          [{"kind": "zero_window", "status": 408, "server_port": 8091, "frames": [int(zw[0][0])]}],
          ["packet_loss", "mtu_blackhole", "handshake_refused", "connection_reset"],
          also=["oversize_packet"])

    f = p("offload-superframes.pcap")
    sf = tshark(f, "ip.len > 1500", "frame.number")
    write(out, "offload-superframes.pcap", "backend",
          "Captured on the sending host with TSO/GSO on: tcpdump sees IP packets of up to 64 KB that the NIC (here the veth) splits before the wire. Healthy: they are acknowledged and are not a path MTU problem.",
          [{"kind": "oversize_packet", "server_port": 80, "frames": [int(sf[0][0])]}],
          ["mtu_blackhole", "packet_loss", "connection_reset", "icmp_frag_needed", "zero_window",
           "high_rtt", "syn_retransmitted", "error_status"],
          healthy=True)

    f = p("high-rtt.pcap")
    syn = tshark(f, "tcp.flags.syn==1 && tcp.flags.ack==0", "frame.number")
    synack = tshark(f, "tcp.flags.syn==1 && tcp.flags.ack==1", "frame.number")
    write(out, "high-rtt.pcap", "client",
          "A userspace Ethernet bridge (tools/delay_bridge.py) between client and server holds every frame 200 ms each way: a 400 ms round trip for a small request.",
          [{"kind": "high_rtt", "status": 408, "server_port": 8092, "frames": [int(syn[0][0]), int(synack[0][0])]}],
          ["packet_loss", "mtu_blackhole", "zero_window", "handshake_refused", "syn_unanswered", "connection_reset"],
          also=["syn_retransmitted"])

    write(out, "keepalive-idle-close.pcap", "client",
          "One request to nginx (keepalive_timeout 2s) on a keep-alive connection; the connection sits idle until nginx closes it, then the client closes too. Healthy.",
          [], NOISE + ["closed_before_response", "no_response", "error_status"], healthy=True)


if __name__ == "__main__":
    main(sys.argv[1])
