#!/usr/bin/env python3
"""Writes truth files for the HTTP captures. Evidence frames come from tshark."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from truth import write  # noqa: E402

HTTP_KINDS = ["malformed_response", "malformed_request", "response_body_truncated",
              "response_body_overrun", "conflicting_content_length", "content_length_with_chunked",
              "malformed_chunked", "request_body_truncated", "request_incomplete", "header_too_large",
              "uri_too_long", "trace_method", "http_on_tls_port", "alb_trace_loop", "alb_qps_limited",
              "error_status", "slow_response", "no_response", "closed_before_response",
              "client_closed_early"]
TCP_NOISE = ["handshake_refused", "syn_unanswered", "packet_loss", "zero_window", "mtu_blackhole"]


def packets(path):
    args = ["tshark", "-r", path, "-T", "fields", "-E", "separator=,", "-e", "frame.number",
            "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "tcp.flags.fin", "-e", "tcp.flags.reset",
            "-e", "tcp.len"]
    rows = []
    for line in subprocess.run(args, capture_output=True, text=True).stdout.splitlines():
        f, sp, dp, fin, rst, ln = line.split(",")
        b = lambda x: x in ("1", "True")
        rows.append(dict(frame=int(f), sport=int(sp), dport=int(dp), fin=b(fin), rst=b(rst), len=int(ln or 0)))
    return rows


def first(rows, **cond):
    for r in rows:
        if all((r[k] > 0 if v == ">0" else r[k] == v) for k, v in cond.items()):
            return r["frame"]
    raise SystemExit(f"no packet with {cond}")


def main(out):
    def case(name, story, expects, must_not, port, also=None, args=None, healthy=False):
        path = os.path.join(out, name + ".pcap")
        rows = packets(path)
        req = lambda: first(rows, dport=port, len=">0")
        resp = lambda: first(rows, sport=port, len=">0")
        server_fin = lambda: first(rows, sport=port, fin=True)
        server_rst = lambda: first(rows, sport=port, rst=True)
        client_fin = lambda: first(rows, dport=port, fin=True)
        frames = {"req": req, "resp": resp, "server_fin": server_fin, "server_rst": server_rst,
                  "client_fin": client_fin}
        expect = []
        for kind, status, which in expects:
            e = {"kind": kind, "status": status, "server_port": port}
            if which:
                e["frames"] = [frames[w]() for w in which]
            expect.append(e)
        write(out, name + ".pcap", "client", story, expect, must_not, healthy=healthy, also=also)
        if args:
            import json
            tp = os.path.join(out, name + ".truth.json")
            t = json.load(open(tp))
            t["args"] = args
            json.dump(t, open(tp, "w"), indent=2)
            open(tp, "a").write("\n")

    others = lambda *keep: [k for k in HTTP_KINDS if k not in keep] + TCP_NOISE
    case("nginx-header-too-large", "curl sends a request with a 40 KB header to nginx (large_client_header_buffers 4 8k), which answers 400 Request Header Or Cookie Too Large.",
         [("header_too_large", 400, ["req"]), ("error_status", 400, ["resp"])], others("header_too_large", "error_status"), 80,
         also=["connection_reset"])
    case("nginx-uri-too-long", "curl requests a 40 KB URI from nginx, which answers 414 Request-URI Too Large.",
         [("uri_too_long", 414, ["req"]), ("error_status", 414, ["resp"])], others("uri_too_long", "error_status"), 80,
         also=["connection_reset"])
    case("nginx-trace", "curl -X TRACE to nginx, which answers 405 Not Allowed.",
         [("trace_method", 405, ["req"]), ("error_status", 405, ["resp"])], others("trace_method", "error_status"), 80)
    case("nginx-http-to-tls-port", "curl sends plain HTTP to nginx's TLS listener on 443; nginx answers 400 The plain HTTP request was sent to HTTPS port.",
         [("http_on_tls_port", 400, ["req"]), ("error_status", 400, ["resp"])], others("http_on_tls_port", "error_status"), 443)
    case("nginx-request-timeout", "A Python client sends half a request head and waits; nginx (client_header_timeout 3s) closes the connection without an answer.",
         [("request_incomplete", 408, ["req", "server_fin"])], others("request_incomplete"), 80,
         also=["connection_reset"])
    case("malformed-request", "A Python client sends 'GET /a b c HTTP/1.1' (spaces in the target) to nginx, which answers 400.",
         [("malformed_request", 400, ["req"]), ("error_status", 400, ["resp"])], others("malformed_request", "error_status"), 80,
         also=["connection_reset"])
    port = 8100
    for name, kind, which, story in [
        ("bad-status-line", "malformed_response", ["resp"], "A Python backend answers curl with 'HTP/1.1 200 OK'."),
        ("header-without-colon", "malformed_response", ["resp"], "A Python backend's response has a header line without a colon ('X-Broken header value')."),
        ("body-shorter-than-content-length", "response_body_truncated", ["server_fin"], "A Python backend declares Content-Length 1000, sends 400 bytes and closes."),
        ("body-longer-than-content-length", "response_body_overrun", ["resp"], "A Python backend declares Content-Length 10 and sends 58 more bytes that are not a response."),
        ("two-content-lengths", "conflicting_content_length", ["resp"], "A Python backend sends Content-Length: 10 and Content-Length: 12."),
        ("content-length-with-chunked", "content_length_with_chunked", ["resp"], "A Python backend sends both Content-Length and Transfer-Encoding: chunked."),
        ("bad-chunk-size", "malformed_chunked", ["resp"], "A Python backend's chunked body starts with the chunk size line 'zz'."),
        ("reset-mid-body", "response_body_truncated", ["server_rst"], "A Python backend declares Content-Length 100000, sends 20000 bytes, then closes with SO_LINGER 0 (RST)."),
        ("close-without-response", "closed_before_response", ["req", "server_fin"], "A Python backend reads the request and closes (FIN) without answering."),
    ]:
        expects = [(kind, 502, which)]
        keep = [kind]
        also = ["client_closed_early"] if kind in ("malformed_response", "response_body_overrun", "conflicting_content_length", "content_length_with_chunked", "malformed_chunked") else []
        if name == "reset-mid-body":
            expects.append(("connection_reset", 502, ["server_rst"]))
        case(name, story, expects, [k for k in others(*keep) if k not in also], port, also=also + ["connection_reset"] if name != "reset-mid-body" else also)
        port += 1
    case("slow-first-byte", "A Python backend waits 7 s before answering; analyzed with --response-timeout 5.",
         [("slow_response", 504, ["req", "resp"])], others("slow_response"), port, args=["--response-timeout", "5"])
    port += 1
    case("alb-headers", "A Python client sends 17 ALICLOUD-ALB-TRACE headers; the Python server answers 503 with ALB-QPS-Limited: Limited.",
         [("alb_trace_loop", 463, ["req"]), ("alb_qps_limited", 503, ["resp"]), ("error_status", 503, ["resp"])],
         others("alb_trace_loop", "alb_qps_limited", "error_status"), port, also=["connection_reset"])
    port += 1
    case("client-gives-up", "A Python client sends a request, waits 1 s and closes (FIN); the server answers after 3 s, too late.",
         [("client_closed_early", 499, ["client_fin"])], others("client_closed_early"), port, also=["connection_reset"])
    port += 1
    case("no-response-at-capture-end", "A Python server never answers; the capture stops about 2 s after the request while other requests to nginx go on.",
         [("no_response", 504, ["req"])], others("no_response"), port, also=["connection_reset"])
    port += 1
    case("request-body-truncated", "A Python client POSTs with Content-Length 5000, sends 1000 body bytes and closes.",
         [("request_body_truncated", 400, ["req"])], others("request_body_truncated"), 80, also=["connection_reset", "error_status"])
    case("healthy-http", "Healthy HTTP/1.1 against nginx and a Python server: keep-alive with three GETs, HEAD, 204, a conditional GET answered 304, a POST with Expect: 100-continue, three pipelined requests, and a chunked response with a chunk extension and a trailer. Nothing is wrong.",
         [], HTTP_KINDS + TCP_NOISE + ["connection_reset"], 80, healthy=True)


if __name__ == "__main__":
    main(sys.argv[1])
