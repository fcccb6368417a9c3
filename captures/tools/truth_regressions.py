#!/usr/bin/env python3
"""Writes truth files for the captures of captures/make-transport-regressions.sh. Evidence frames
are read with tshark, independently of lbdiag; each capture is first checked to show its story
(the script stops with an error when one does not)."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from truth import write  # noqa: E402

TCP_NOISE = ["packet_loss", "mtu_blackhole", "zero_window", "high_rtt", "syn_retransmitted",
             "icmp_frag_needed", "capture_gap"]
HTTP_ERRORS = ["no_response", "client_closed_early", "closed_before_response",
               "response_body_truncated", "malformed_response", "malformed_request",
               "request_incomplete", "slow_response"]
TLS_KINDS = ["tls_cert_expired", "tls_sni_mismatch", "tls_handshake_failure", "tls_no_sni",
             "tls_cert_unverifiable"]


def fail(name, why):
    sys.exit(f"truth_regressions: {name}: {why}")


def fields(path, filt, *names):
    args = ["tshark", "-r", path, "-Y", filt, "-T", "fields", "-E", "separator=\t",
            "-E", "occurrence=f"]
    for n in names:
        args += ["-e", n]
    out = subprocess.run(args, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def frames(path, filt):
    return [int(r[0]) for r in fields(path, filt, "frame.number")]


def certificate_end_frame(path, port):
    """The frame holding the last byte of the record in which the server's Certificate
    message ends, from the server's reassembled TCP payload."""
    rows = fields(path, f"tcp.srcport=={port} && tcp.len>0", "frame.number", "tcp.seq",
                  "tcp.len", "tcp.payload")
    stream = bytearray()
    ends = []  # (stream offset of the segment's end, frame)
    for frame, seq, length, payload in rows:
        seq, length = int(seq) - 1, int(length)
        if seq != len(stream):
            if seq + length <= len(stream):
                continue  # retransmission
            fail(path, "hole in the server's stream")
        stream += bytes.fromhex(payload.replace(":", ""))
        ends.append((len(stream), int(frame)))
    at, hs, hs_record_ends = 0, bytearray(), []
    while at + 5 <= len(stream):
        kind, length = stream[at], int.from_bytes(stream[at + 3:at + 5], "big")
        if kind == 22:
            hs += stream[at + 5:at + 5 + length]
            hs_record_ends.append((len(hs), at + 5 + length))
        at += 5 + length
    off = 0
    while off + 4 <= len(hs):
        t, n = hs[off], int.from_bytes(hs[off + 1:off + 4], "big")
        if t == 11:
            cert_end = off + 4 + n
            if n < 300_000:
                fail(path, f"Certificate message is only {n} bytes")
            record_end = next(e for h, e in hs_record_ends if h >= cert_end)
            return next(f for end, f in ends if end >= record_end)
        off += 4 + n
    fail(path, "no Certificate message in the server's stream")


def main(out):
    p = lambda n: os.path.join(out, n)

    f = p("icmp-reject.pcap")
    expect = []
    for port, icmp, code in [(8101, "icmp", 3), (8102, "icmp", 10), (8103, "icmpv6", 4)]:
        syns = frames(f, f"tcp.flags.syn==1 && tcp.flags.ack==0 && tcp.dstport=={port} && !icmp && !icmpv6")
        msgs = frames(f, f"{icmp} && {icmp}.code=={code} && tcp.dstport=={port}")
        if not syns or not msgs or msgs[0] < syns[0]:
            fail(f, f"port {port}: no SYN answered by {icmp} code {code}")
        if frames(f, f"tcp.flags.syn==1 && tcp.flags.ack==1 && tcp.srcport=={port}"):
            fail(f, f"port {port} was accepted")
        expect.append({"kind": "handshake_refused", "status": 502, "server_port": port,
                       "frames": [syns[0], msgs[0]]})
    write(out, "icmp-reject.pcap", "client",
          "iptables REJECT in the server's namespace: port 8101 with the default (ICMP port unreachable), 8102 with --reject-with icmp-host-prohibited, and ip6tables REJECT on 8103 (ICMPv6 port unreachable). curl gives up on the first two at the first ICMP message and on the IPv6 one after its retransmitted SYN is rejected too.",
          expect, ["syn_unanswered", "connection_reset"] + TCP_NOISE)

    f = p("syn-repeated-after-synack.pcap")
    syns = frames(f, "tcp.flags.syn==1 && tcp.flags.ack==0")
    synacks = frames(f, "tcp.flags.syn==1 && tcp.flags.ack==1")
    if len(syns) < 2 or not synacks or synacks[0] > syns[1]:
        fail(f, "the first SYN-ACK does not come before the repeated SYN")
    write(out, "syn-repeated-after-synack.pcap", "backend",
          "Captured on the server. iptables in the client's namespace drops the server's first SYN-ACK, so the client repeats its SYN a second later; the server had answered the first SYN at once (and retransmits its SYN-ACK), and the request then succeeds. The repeated SYN is not an accept-queue symptom, and the second of retransmission is no slow round trip.",
          [], ["syn_retransmitted", "syn_unanswered", "handshake_refused", "connection_reset"]
          + TCP_NOISE + HTTP_ERRORS, healthy=True)

    for name, side, port_field in [("one-sided-client", "client", "tcp.srcport"),
                                   ("one-sided-server", "server", "tcp.dstport")]:
        f = p(name + ".pcap")
        if frames(f, f"{port_field}==8105"):
            fail(f, "packets in both directions")
        if not frames(f, "tcp.len>0"):
            fail(f, "no data")
        how = "-Q out: only what the client sent" if side == "client" else "-Q in: only what the client received"
        write(out, name + ".pcap", "client",
              f"tcpdump {how} while curl fetches a page from Python's http.server: the capture holds one direction of a healthy exchange (as with asymmetric routing or a one-way span port).",
              [], ["syn_unanswered", "handshake_refused", "connection_reset"] + TCP_NOISE
              + HTTP_ERRORS, healthy=True, warnings=["show only one direction"])

    f = p("synack-not-captured.pcap")
    if frames(f, "tcp.flags.syn==1 && tcp.flags.ack==1"):
        fail(f, "holds a SYN-ACK")
    if not frames(f, "tcp.srcport==8105 && tcp.len>0"):
        fail(f, "no server data")
    write(out, "synack-not-captured.pcap", "client",
          "A capture filter leaves out the SYN-ACK of a healthy exchange: the client ACKs and sends its request, the server answers. The SYN was answered, though the answer is not in the file.",
          [], ["syn_unanswered", "handshake_refused", "connection_reset"] + TCP_NOISE
          + HTTP_ERRORS, healthy=True)

    f = p("tls13-hrr-ccs.pcap")
    hellos = frames(f, "tls.handshake.type==2")
    ccs = frames(f, "tls.record.content_type==20")
    if len(hellos) != 2 or not ccs or not hellos[0] <= ccs[0] < hellos[1]:
        fail(f, "no HelloRetryRequest and ChangeCipherSpec before the real ServerHello")
    write(out, "tls13-hrr-ccs.pcap", "client",
          "openssl s_server allows only P-256; openssl s_client sends a key share for X25519 only, so the server answers with a HelloRetryRequest followed by a middlebox-compatibility ChangeCipherSpec, the client sends ChangeCipherSpec and a second ClientHello, and the real ServerHello follows. A healthy TLS 1.3 exchange: the only note is that the encrypted certificate cannot be checked, tied to the real ServerHello.",
          [{"kind": "tls_cert_unverifiable", "server_port": 9461, "frames": [hellos[1]]}],
          ["tls_cert_expired", "tls_sni_mismatch", "tls_handshake_failure", "tls_no_sni",
           "syn_unanswered", "handshake_refused", "connection_reset"] + TCP_NOISE, healthy=True)

    f = p("tls-fast-open.pcap")
    tfo = frames(f, "tcp.flags.syn==1 && tcp.flags.ack==0 && tcp.len>0")
    if len(tfo) != 2:
        fail(f, "the ClientHellos are not carried on the SYNs")
    write(out, "tls-fast-open.pcap", "client",
          "TCP Fast Open without cookies (client sysctl 0x5, server 0x602): curl --tcp-fastopen sends its ClientHello on the SYN; a TLS 1.3 and then a TLS 1.2 exchange with openssl s_server complete, carry a request and a response, and close with FIN.",
          [{"kind": "tls_cert_unverifiable", "server_port": 9462}],
          ["tls_handshake_failure", "tls_cert_expired", "tls_sni_mismatch", "tls_no_sni",
           "syn_unanswered", "handshake_refused", "connection_reset"] + TCP_NOISE + HTTP_ERRORS,
          healthy=True)

    f = p("tls-sslv2-hello-expired.pcap")
    hello = frames(f, "tcp.dstport==9464 && tcp.len>0")
    cert = frames(f, "tls.handshake.type==11")
    if not hello or not cert:
        fail(f, "no SSLv2 hello or no certificate")
    first = fields(f, f"frame.number=={hello[0]}", "tcp.payload")[0][0].replace(":", "")
    if not (int(first[:2], 16) & 0x80 and first[4:6] == "01"):
        fail(f, "the client's first record is not an SSLv2-format ClientHello")
    write(out, "tls-sslv2-hello-expired.pcap", "client",
          "A Python client opens with an SSLv2-format ClientHello offering TLS 1.2 (RFC 5246 E.2); openssl s_server answers with an ordinary TLS 1.2 flight whose certificate expired about 400 days before the capture. The client reads the flight and closes; the server then sends a decode_error alert.",
          [{"kind": "tls_cert_expired", "status": 502, "server_port": 9464, "frames": cert[:1]},
           {"kind": "tls_no_sni", "server_port": 9464, "frames": hello[:1]}],
          ["tls_sni_mismatch", "tls_cert_unverifiable", "syn_unanswered", "handshake_refused"]
          + TCP_NOISE, also=["tls_handshake_failure", "connection_reset"])

    f = p("tls-large-certificate.pcap")
    end = certificate_end_frame(f, 9465)
    write(out, "tls-large-certificate.pcap", "client",
          "openssl s_server presents an expired certificate with 13,000 subjectAltNames: a Certificate message of about 340 KB spread over some twenty TLS records. A Python client sends a TLS 1.2 ClientHello, reads the whole flight and closes (OpenSSL clients refuse chains over 100 KB); the server then sends a decode_error alert. The certificate is judged, not reported as missing.",
          [{"kind": "tls_cert_expired", "status": 502, "server_port": 9465, "frames": [end]}],
          ["tls_cert_unverifiable", "tls_sni_mismatch", "tls_no_sni", "syn_unanswered",
           "handshake_refused"] + TCP_NOISE, also=["tls_handshake_failure", "connection_reset"])


if __name__ == "__main__":
    main(sys.argv[1])
