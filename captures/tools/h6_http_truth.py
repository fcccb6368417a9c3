#!/usr/bin/env python3
"""Writes NAME.truth.json beside each capture made by make-http-captures.sh.

The evidence frames come from tshark's reading of the capture (each TCP direction is rebuilt
from tcp.seq and tcp.payload, so "the frame holding byte N" is exact), never from lbdiag. Every
capture is also checked: if it did not come out as intended (a missing status, an unexpected
reset, a lost packet) this exits non-zero and the build script keeps the old captures.

  h6_http_truth.py DIR            # DIR holds the NAME.pcap files; truth files are written there
  h6_http_truth.py --clean FILE   # exit 1 if TCP itself misbehaved in FILE (the script retries)
"""
import json
import os
import re
import subprocess
import sys

HTTP_KINDS = ["malformed_response", "malformed_request", "response_body_truncated",
              "response_body_overrun", "conflicting_content_length", "content_length_with_chunked",
              "malformed_chunked", "request_body_truncated", "request_incomplete", "header_too_large",
              "uri_too_long", "trace_method", "http_on_tls_port", "alb_trace_loop", "alb_qps_limited",
              "error_status", "slow_response", "no_response", "closed_before_response",
              "client_closed_early"]
TCP_KINDS = ["handshake_refused", "syn_unanswered", "connection_reset", "packet_loss",
             "zero_window", "syn_retransmitted", "mtu_blackhole"]
FIELDS = ["frame.number", "frame.time_relative", "tcp.stream", "tcp.srcport", "tcp.dstport",
          "tcp.flags.syn", "tcp.flags.fin", "tcp.flags.reset", "tcp.seq", "tcp.len", "tcp.payload",
          "tcp.analysis.retransmission", "tcp.analysis.lost_segment", "http.response.code",
          "http.request.method"]


class Capture:
    def __init__(self, path, port):
        self.path, self.port = path, port
        args = ["tshark", "-r", path, "-o", "tcp.relative_sequence_numbers:TRUE",
                "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=,"]
        for f in FIELDS:
            args += ["-e", f]
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        self.rows = []
        for line in out.splitlines():
            v = dict(zip(FIELDS, line.split("\t")))
            b = lambda k: v[k] in ("1", "True")
            self.rows.append(dict(
                frame=int(v["frame.number"]), t=float(v["frame.time_relative"]),
                stream=int(v["tcp.stream"]), sport=int(v["tcp.srcport"]), dport=int(v["tcp.dstport"]),
                syn=b("tcp.flags.syn"), fin=b("tcp.flags.fin"), rst=b("tcp.flags.reset"),
                seq=int(v["tcp.seq"]), len=int(v["tcp.len"] or 0),
                payload=bytes.fromhex(v["tcp.payload"].replace(":", "")),
                retrans=bool(v["tcp.analysis.retransmission"]), lost=bool(v["tcp.analysis.lost_segment"]),
                codes=[int(c) for c in v["http.response.code"].split(",") if c],
                methods=[m for m in v["http.request.method"].split(",") if m]))
        # Each direction of each connection as one byte string, and which frame carried each byte.
        self.data, self.spans = {}, {}
        for r in self.rows:
            if not r["len"]:
                continue
            key = (r["stream"], "up" if r["dport"] == port else "down")
            buf = self.data.setdefault(key, bytearray())
            off = r["seq"] - 1
            if off + r["len"] > len(buf):
                buf[off:] = r["payload"][:r["len"]]
            self.spans.setdefault(key, []).append((off, off + r["len"], r["frame"]))

    def stream(self, n=0):
        streams = sorted({r["stream"] for r in self.rows})
        return streams[n]

    def at(self, direction, offset, stream=None):
        key = (self.stream() if stream is None else stream, direction)
        for lo, hi, frame in self.spans[key]:
            if lo <= offset < hi:
                return frame
        raise SystemExit(f"{self.path}: no frame holds {direction} byte {offset}")

    def find(self, direction, needle, stream=None, nth=0):
        """Offset of the nth occurrence of needle in one direction of a connection."""
        buf = bytes(self.data.get((self.stream() if stream is None else stream, direction), b""))
        pos = -1
        for _ in range(nth + 1):
            pos = buf.find(needle, pos + 1)
            if pos < 0:
                raise SystemExit(f"{self.path}: {needle[:40]!r} not in the {direction} bytes")
        return pos

    def holding(self, direction, needle, nth=0, stream=None):
        return self.at(direction, self.find(direction, needle, stream, nth), stream)

    def flag(self, who, flag):
        """First frame with FIN or RST sent by the client or the server."""
        for r in self.rows:
            sent_by_server = r["sport"] == self.port
            if r[flag] and sent_by_server == (who == "server"):
                return r["frame"]
        return None

    def time_of(self, frame):
        return next(r["t"] for r in self.rows if r["frame"] == frame)

    def codes(self):
        return [c for r in self.rows for c in r["codes"]]

    def check_clean(self, allow_rst=False):
        bad = [r["frame"] for r in self.rows if r["retrans"] or r["lost"]]
        if bad:
            raise SystemExit(f"{self.path}: retransmissions or lost segments at {bad}")
        if not allow_rst and (self.flag("client", "rst") or self.flag("server", "rst")):
            raise SystemExit(f"{self.path}: unexpected reset")


def need(cond, msg):
    if not cond:
        raise SystemExit(msg)


def write(out, name, cap, story, expect, also=(), args=(), healthy=False, extra_must_not=()):
    for e in expect:
        e.setdefault("server_port", cap.port)
    kinds = {e["kind"] for e in expect} | set(also)
    must_not = [k for k in HTTP_KINDS + TCP_KINDS + list(extra_must_not) if k not in kinds]
    truth = {"capture": name + ".pcap", "vantage": "client", "story": story, "args": list(args),
             "healthy": healthy, "expect": expect, "also_acceptable": list(also),
             "must_not": must_not, "warnings": []}
    with open(os.path.join(out, name + ".truth.json"), "w") as f:
        json.dump(truth, f, indent=2)
        f.write("\n")
    frames = "; ".join(f"{e['kind']} {e['status']} {e.get('frames', '-')}" for e in expect) or "nothing"
    print(f"{name}: {len(cap.rows)} packets; {frames}; also {list(also)}")


def e(kind, status, *frames):
    d = {"kind": kind, "status": status}
    if frames:
        d["frames"] = sorted(set(frames))
    return d


def main(out):
    cap = lambda name, port: Capture(os.path.join(out, name + ".pcap"), port)

    # ---- nginx
    def big_request(name, status, what, start, reason):
        c = cap(name, 80)
        need(status in c.codes(), f"{name}: no {status}")
        c.check_clean(allow_rst=True)
        resp = c.holding("down", b"HTTP/1.1 %d" % status)
        last_up = max(r["frame"] for r in c.rows if r["dport"] == 80 and r["len"])
        sfin, srst = c.flag("server", "fin"), c.flag("server", "rst")
        if resp < last_up:
            how = (f"nginx answers {status} {reason} (frame {resp}) while curl is still sending: the "
                   f"request's last segment is frame {last_up}.")
        else:
            how = (f"The whole request has arrived (frame {last_up}) when nginx answers {status} {reason} "
                   f"(frame {resp}).")
        if sfin:
            how += f" nginx closes with FIN (frame {sfin})"
            how += (", reading and discarding what still arrives (lingering close)." if sfin < last_up else ".")
        if srst:
            how += (f" nginx closed its socket with request bytes still unread, so its kernel resets the "
                    f"connection (RST, frame {srst}) instead of sending FIN.")
        rst = srst or c.flag("client", "rst")
        write(out, name, c, f"curl sends {what} to nginx 1.22 (large_client_header_buffers 4 8k). " + how,
              [e(kind_of[name], status, c.holding("up", start)), e("error_status", status, resp)],
              ["connection_reset"] if rst else [])

    kind_of = {"nginx-header-too-large": "header_too_large", "nginx-uri-too-long": "uri_too_long"}
    big_request("nginx-header-too-large", 400, "GET /a.html with a 40 KB X-Big header", b"X-Big: ",
                "Request Header Or Cookie Too Large")
    big_request("nginx-uri-too-long", 414, "GET with a 40 KB URI (/aaaa...)", b"GET /aaaa",
                "Request-URI Too Large")

    c = cap("nginx-trace", 80)
    need(405 in c.codes(), "nginx-trace: no 405")
    c.check_clean()
    write(out, "nginx-trace", c,
          "curl -X TRACE http://10.60.0.2/a.html; nginx 1.22 answers 405 Not Allowed and closes.",
          [e("trace_method", 405, c.holding("up", b"TRACE /a.html")),
           e("error_status", 405, c.holding("down", b"HTTP/1.1 405"))])

    c = cap("nginx-http-to-tls-port", 443)
    need(400 in c.codes(), "nginx-http-to-tls-port: no 400")
    need(b"plain HTTP request was sent to HTTPS port" in bytes(c.data[(c.stream(), "down")]),
         "nginx-http-to-tls-port: not nginx's plain-HTTP page")
    c.check_clean()
    write(out, "nginx-http-to-tls-port", c,
          "curl http://10.60.0.2:443/ sends plain HTTP to nginx's ssl listener; nginx answers 400 "
          "'The plain HTTP request was sent to HTTPS port' (in plain HTTP) and closes.",
          [e("http_on_tls_port", 400, c.holding("up", b"GET / HTTP/1.1")),
           e("error_status", 400, c.holding("down", b"HTTP/1.1 400"))], extra_must_not=["tls_handshake_failure"])

    c = cap("nginx-request-timeout", 80)
    c.check_clean()
    req = c.holding("up", b"GET / HTTP/1.1")
    fin = c.flag("server", "fin")
    need(fin, "nginx-request-timeout: nginx did not close")
    waited = c.time_of(fin) - c.time_of(req)
    need(2.5 < waited < 4.5, f"nginx-request-timeout: nginx closed after {waited:.1f} s")
    if 408 in c.codes():
        story_end = f"after {waited:.1f} s nginx answers 408 and closes."
        exp = [e("request_incomplete", 408, req, fin), e("error_status", 408, c.holding("down", b"HTTP/1.1 408"))]
    else:
        story_end = (f"after {waited:.1f} s nginx closes the connection (FIN) without sending anything; "
                     "its access log records 408 with 0 bytes sent.")
        exp = [e("request_incomplete", 408, req, fin)]
    write(out, "nginx-request-timeout", c,
          "A Python client (tools/h6_http_peers.py client half-head) sends 'GET / HTTP/1.1\\r\\nHost: x\\r\\n' "
          "without the blank line that ends the head and waits. nginx has client_header_timeout 3s: "
          + story_end, exp)

    c = cap("malformed-request", 80)
    need(400 in c.codes(), "malformed-request: no 400")
    c.check_clean()
    write(out, "malformed-request", c,
          "A Python client sends 'GET /a b c HTTP/1.1' (spaces in the request target) to nginx 1.22, "
          "which answers 400 Bad Request and closes.",
          [e("malformed_request", 400, c.holding("up", b"GET /a b c")),
           e("error_status", 400, c.holding("down", b"HTTP/1.1 400"))])

    c = cap("request-body-truncated", 80)
    c.check_clean()
    need(not c.codes(), "request-body-truncated: nginx answered")
    cfin, sfin = c.flag("client", "fin"), c.flag("server", "fin")
    need(cfin and sfin and cfin < sfin, "request-body-truncated: expected the client's FIN, then nginx's")
    need(len(c.data[(c.stream(), "up")]) - c.find("up", b"\r\n\r\n") - 4 == 1000, "request-body-truncated: body is not 1000 bytes")
    write(out, "request-body-truncated", c,
          "A Python client POSTs /upload to nginx with Content-Length: 5000, sends 1000 body bytes and "
          "shuts its side down (FIN). nginx, which reads the whole body before proxying it, logs 'client "
          "prematurely closed connection' (400 in its access log) and closes without answering.",
          [e("request_body_truncated", 400, c.holding("up", b"POST /upload"), cfin)])

    # ---- Python backends, curl as the client
    def backend(name, port, expect_fn, story, allow_rst=False):
        c = cap(name, port)
        c.check_clean(allow_rst)
        exp = expect_fn(c)
        also = ["connection_reset"] if allow_rst and "connection_reset" not in [x["kind"] for x in exp] else []
        write(out, name, c, story, exp, also)

    backend("bad-status-line", 8081,
            lambda c: [e("malformed_response", 502, c.holding("down", b"HTP/1.1 200 OK"))],
            "A Python backend answers curl's GET with the status line 'HTP/1.1 200 OK' (a 5-byte body "
            "follows). curl refuses it ('Received HTTP/0.9 when not allowed') and closes; the backend closes too.")
    backend("header-without-colon", 8082,
            lambda c: [e("malformed_response", 502, c.holding("down", b"X-Broken header value"))],
            "A Python backend answers 200 with a header line that has no colon ('X-Broken header value'). "
            "curl fails with 'Header without colon' and closes; the backend closes too.")

    def truncated(c):
        need(c.find("down", b"Content-Length: 1000") >= 0, "")
        body = len(c.data[(c.stream(), "down")]) - c.find("down", b"\r\n\r\n") - 4
        need(body == 400, f"body-shorter: {body} body bytes")
        fin = c.flag("server", "fin")
        need(fin and fin < (c.flag("client", "fin") or 10**9), "body-shorter: server FIN not first")
        return [e("response_body_truncated", 502, fin)]
    backend("body-shorter-than-content-length", 8083, truncated,
            "A Python backend answers 200 with Content-Length: 1000, sends 400 body bytes and closes (FIN). "
            "curl reports 'transfer closed with 600 bytes remaining to read'.")

    def overrun(c):
        start = c.find("down", b"\r\n\r\n") + 4
        down = bytes(c.data[(c.stream(), "down")])
        need(len(down) - start == 50 and not down[start + 10:].startswith(b"HTTP/"), "body-longer: not 50 bytes")
        return [e("response_body_overrun", 502, c.at("down", start + 10))]
    backend("body-longer-than-content-length", 8084, overrun,
            "A Python backend answers 200 with Content-Length: 10 but sends 50 bytes after the head: the "
            "40 after the declared body ('#garbage, not an HTTP response#xxxxxxxxx') are not a response. "
            "curl takes the 10 bytes and closes the connection; the backend closes too.")
    backend("two-content-lengths", 8085,
            lambda c: [e("conflicting_content_length", 502, c.holding("down", b"Content-Length: 12"))],
            "A Python backend answers 200 with two headers, Content-Length: 10 and Content-Length: 12, "
            "and 12 body bytes. curl 7.88 accepts it; both sides close.")
    backend("content-length-with-chunked", 8086,
            lambda c: [e("content_length_with_chunked", 502, c.holding("down", b"Transfer-Encoding: chunked"))],
            "A Python backend answers 200 with both Content-Length: 5 and Transfer-Encoding: chunked and a "
            "chunked body. curl follows the chunked framing; both sides close.")
    backend("bad-chunk-size", 8087,
            lambda c: [e("malformed_chunked", 502, c.holding("down", b"\r\n\r\nzz\r\n"))],
            "A Python backend answers 200 with Transfer-Encoding: chunked, and the first chunk size line is "
            "'zz'. curl fails with 'Illegal or missing hexadecimal sequence in chunked-encoding' and closes.")

    def reset(c):
        rst = c.flag("server", "rst")
        need(rst and not c.flag("server", "fin"), "reset-mid-body: no server RST")
        body = len(c.data[(c.stream(), "down")]) - c.find("down", b"\r\n\r\n") - 4
        need(body == 20000, f"reset-mid-body: {body} body bytes before the reset")
        return [e("connection_reset", 502, rst), e("response_body_truncated", 502, rst)]
    backend("reset-mid-body", 8088, reset,
            "A Python backend answers 200 with Content-Length: 100000, sends 20000 body bytes, waits 0.5 s and "
            "closes with SO_LINGER {1,0}, which sends RST. curl reports 'Connection reset by peer'.",
            allow_rst=True)

    def closed(c):
        fin = c.flag("server", "fin")
        need(fin and not c.codes() and fin < c.flag("client", "fin"), "close-without-response")
        return [e("closed_before_response", 502, fin)]
    backend("close-without-response", 8089, closed,
            "A Python backend reads curl's GET, waits 0.2 s and closes (FIN) without answering. curl "
            "reports 'Empty reply from server'.")

    c = cap("slow-first-byte", 8090)
    c.check_clean()
    req = c.holding("up", b"GET /report")
    resp = c.holding("down", b"HTTP/1.1 200")
    need(6.5 < c.time_of(resp) - c.time_of(req) < 8, "slow-first-byte: not 7 s")
    exp = [e("slow_response", 504, req)]
    truth_args = ["--response-timeout", "5"]
    write(out, "slow-first-byte", c,
          f"A Python backend waits 7 s before answering curl's GET with 200 (first byte "
          f"{c.time_of(resp) - c.time_of(req):.2f} s after the request). Analyzed with --response-timeout 5.",
          exp, args=truth_args)

    c = cap("alb-headers", 8091)
    c.check_clean()
    need(c.find("up", b"ALICLOUD-ALB-TRACE", nth=16) >= 0, "alb-headers: fewer than 17 trace headers")
    resp = c.holding("down", b"HTTP/1.1 503")
    write(out, "alb-headers", c,
          "A Python client sends GET /orders carrying 17 ALICLOUD-ALB-TRACE headers (16 hex digits each), "
          "as a request that looped through the balancer 17 times would. The Python server answers 503 "
          "with ALB-QPS-Limited: Limited; the client closes after 1 s, then the server.",
          [e("alb_trace_loop", 463, c.holding("up", b"ALICLOUD-ALB-TRACE", nth=16)),
           e("alb_qps_limited", 503, resp), e("error_status", 503, resp)])

    c = cap("client-gives-up", 8092)
    c.check_clean(allow_rst=True)
    cfin = c.flag("client", "fin")
    req = c.holding("up", b"GET /report")
    need(cfin and 0.8 < c.time_of(cfin) - c.time_of(req) < 1.5, "client-gives-up: no FIN after 1 s")
    late = [r for r in c.rows if r["codes"]]
    crst = c.flag("client", "rst")
    story = ("A Python client sends GET /report, waits 1 s and gives up: shutdown and close, a FIN, no "
             "linger. The Python backend answers 200 after 3 s")
    story += (", and the client's kernel resets the connection because nobody is reading."
              if late and crst else ".")
    write(out, "client-gives-up", c, story, [e("client_closed_early", 499, cfin)],
          ["connection_reset"] if crst else [])

    c = cap("no-response-at-capture-end", 8093)
    c.check_clean()
    req = c.holding("up", b"GET /hang")
    need(not c.codes() and not c.flag("server", "fin") and not c.flag("client", "fin"),
         "no-response-at-capture-end: the connection did not stay open")
    last = c.rows[-1]["t"] - c.time_of(req)
    r0 = next(r for r in c.rows if r["frame"] == req)
    probes = sum(1 for r in c.rows if r["frame"] > req and r["dport"] == 8093 and r["len"] == 0
                 and r["seq"] == r0["seq"] + r0["len"] - 1)
    need(probes >= 1, "no-response-at-capture-end: no keep-alive probe")
    write(out, "no-response-at-capture-end", c,
          "A Python server reads GET /hang and never answers. The Python client has TCP keep-alive "
          f"probes every second ({probes} in the capture, each acknowledged), so the capture shows the "
          f"connection idle but alive; tcpdump stops 2.2 s after the request (last packet {last:.2f} s "
          "after it) with the connection still open.",
          [e("no_response", 504, req)])

    # ---- healthy
    c = Capture(os.path.join(out, "healthy-http.pcap"), 80)
    c.check_clean()
    for want in (200, 204, 304, 100):
        need(want in c.codes(), f"healthy-http: no {want}")
    need(not [x for x in c.codes() if x >= 400], "healthy-http: an error status")
    syns = [r for r in c.rows if r["syn"] and r["dport"] in (80, 8090)]
    need(len(syns) == 3, f"healthy-http: {len(syns)} connections, expected 3")
    write(out, "healthy-http", c,
          "Healthy HTTP/1.1, no errors. One curl invocation keeps one keep-alive connection to nginx for "
          "three GETs, a HEAD, a 204 (return 204), a conditional GET answered 304 (If-None-Match with "
          "the ETag), and a POST of 2 KB with Expect: 100-continue (nginx sends 100 Continue, then proxies "
          "the body to a Python backend and relays its 200). A Python client pipelines three GETs in one "
          "write on a second connection to nginx. curl fetches /chunked twice on one keep-alive connection "
          "straight from the Python backend on port 8090: Transfer-Encoding: chunked, chunk extensions "
          "';ext=1' and a trailer 'X-Checksum: abc'. Every connection is closed by the client with FIN.",
          [], healthy=True)


def clean(path):
    """Exit status 0 when TCP itself behaved: no retransmission, loss, reordering, duplicate ACK
    or zero window (a loaded host can delay an ACK past the tail-loss-probe timer even on a
    veth). A sender filling the receiver's window is fine."""
    flt = ("tcp.analysis.retransmission || tcp.analysis.fast_retransmission || "
           "tcp.analysis.spurious_retransmission || tcp.analysis.lost_segment || "
           "tcp.analysis.ack_lost_segment || tcp.analysis.out_of_order || tcp.analysis.duplicate_ack || "
           "tcp.analysis.zero_window")
    bad = subprocess.run(["tshark", "-r", path, "-Y", flt, "-T", "fields", "-e", "frame.number"],
                         capture_output=True, text=True, check=True).stdout.split()
    total = subprocess.run(["tshark", "-r", path, "-T", "fields", "-e", "frame.number"],
                           capture_output=True, text=True, check=True).stdout.split()
    name = os.path.basename(path)
    if len(total) < 3:
        print(f"{name}: only {len(total)} packets")
        return 1
    if bad:
        print(f"{name}: TCP trouble in frames {bad}")
        return 1
    print(f"{name}: {len(total)} packets, clean")
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "--clean":
        sys.exit(clean(sys.argv[2]))
    main(sys.argv[1])
