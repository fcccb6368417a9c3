#!/usr/bin/env python3
"""Writes NAME.truth.json beside each capture made by make-http-regressions.sh.

Evidence frames come from tshark's reading of each capture (tools/h6_http_truth.py's Capture,
and frame-by-frame payload searches where frames were cut), never from lbdiag. Each capture is
checked against what the script meant to make; if one is not as intended this exits non-zero
and the script keeps the old captures.

  h6_regress_truth.py DIR     # DIR holds NAME.pcap (NAME.pcap.gz) files; truth files go there
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from h6_http_truth import Capture, need, write  # noqa: E402

METHOD_TOKEN = "the method is not a valid token"


def e(kind, status=None, *frames, **conds):
    """An expectation; conds are the optional request / reason_contains / reason_not."""
    d = {"kind": kind, "status": status}
    if frames:
        d["frames"] = sorted(set(frames))
    d.update(conds)
    return d


def frame_with(c, needle, from_server, nth=0):
    """The nth data frame (in capture order) whose payload holds needle, sent by either side."""
    hits = [r["frame"] for r in c.rows
            if r["len"] and (r["sport"] == c.port) == from_server and needle in r["payload"]]
    need(len(hits) > nth, f"{c.path}: no frame #{nth} holding {needle[:40]!r}")
    return hits[nth]


def up(c, needle, nth=0):
    return frame_with(c, needle, False, nth)


def down(c, needle, nth=0):
    return frame_with(c, needle, True, nth)


def count(c, needle, from_server):
    return sum(r["payload"].count(needle) for r in c.rows
               if r["len"] and (r["sport"] == c.port) == from_server)


def up_head(c):
    """Length of the first request head in the client's bytes."""
    return c.find("up", b"\r\n\r\n") + 4


def has_rst(c):
    return any(r["rst"] for r in c.rows)


class Out:
    def __init__(self, out):
        self.out = out

    def cap(self, name, port):
        path = os.path.join(self.out, name + ".pcap")
        if not os.path.exists(path):
            return None
        return Capture(path, port)

    def write(self, name, c, story, expect, also=(), healthy=False, never=(), gz=False):
        """h6_http_truth.write, with the never_in_output field and a gzip-compressed capture."""
        write(self.out, name, c, story, expect, also, healthy=healthy)
        path = os.path.join(self.out, name + ".truth.json")
        truth = json.load(open(path))
        if gz:
            truth["capture"] = name + ".pcap.gz"
        for x in truth["expect"]:
            if x.get("status") is None:
                del x["status"]
        if never:
            truth["never_in_output"] = list(never)
        with open(path, "w") as f:
            json.dump(truth, f, indent=2)
            f.write("\n")


def main(out):
    o = Out(out)

    # ---- 1. parsing goes on after a declined Upgrade and a refused CONNECT
    c = o.cap("upgrade-declined-then-502", 8101)
    if c:
        need(count(c, b"HTTP/1.1 ", True) == 3, "upgrade: not three answers")
        need(b"Upgrade: websocket" in c.rows[up(c, b"GET /chat") - 1]["payload"], "upgrade: no Upgrade header")
        o.write("upgrade-declined-then-502", c,
                "A Python client sends GET /chat with 'Connection: Upgrade' and 'Upgrade: websocket' to a "
                "Python keep-alive server, which declines the upgrade by answering 200 with a body (the "
                "connection stays HTTP/1.1). The client goes on: GET /next answered 200, GET /fail answered "
                "502 Bad Gateway; then it closes.",
                [e("error_status", 502, down(c, b"HTTP/1.1 502"), request="GET /fail")])

    c = o.cap("connect-407-then-503", 8102)
    if c:
        o.write("connect-407-then-503", c,
                "A Python client sends 'CONNECT backend.test:443 HTTP/1.1' to a Python keep-alive server, "
                "which refuses it with 407 Proxy Authentication Required (Content-Length body, connection "
                "kept open: no tunnel). The client then sends GET /fail on the same connection, answered 503.",
                [e("error_status", 407, down(c, b"HTTP/1.1 407")),
                 e("error_status", 503, down(c, b"HTTP/1.1 503"), request="GET /fail")])

    # ---- 2. the server answered before the request body was sent
    c = o.cap("expect-100-answered-417", 8103)
    if c:
        need(count(c, b"Expect: 100-continue", False) == 1, "417: no Expect")
        head_end = len(c.data[(c.stream(), "up")])
        need(bytes(c.data[(c.stream(), "up")]).endswith(b"\r\n\r\n"), "417: the client sent body bytes")
        o.write("expect-100-answered-417", c,
                "A Python client POSTs /upload with Content-Length: 5000 and 'Expect: 100-continue' and waits. "
                "The Python server answers 417 Expectation Failed with Connection: close instead of 100 "
                f"Continue; the client never sends the body ({head_end} request bytes in all, the head alone) "
                "and closes, then the server closes.",
                [e("error_status", 417, down(c, b"HTTP/1.1 417"))])

    c = o.cap("upload-answered-413", 8104)
    if c:
        resp = down(c, b"HTTP/1.1 413")
        sent = len(c.data[(c.stream(), "up")])
        need(sent < 200000, f"413: curl sent the whole body ({sent} bytes)")
        rst = has_rst(c)
        cfin, sfin = c.flag("client", "fin"), c.flag("server", "fin")
        need(b"Connection: close" in c.rows[resp - 1]["payload"], "413: not Connection: close")
        o.write("upload-answered-413", c,
                "curl POSTs a 200000-byte body to nginx 1.22 (client_max_body_size 1k) without Expect, "
                f"--limit-rate 50K: it writes the head and a first {sent - up_head(c)}-byte burst of the "
                f"body. nginx answers 413 Request Entity Too Large with Connection: close (frame {resp}) "
                "without reading the body. curl stops uploading, mid-body, and closes "
                f"(FIN, frame {cfin}); nginx closes (frame {sfin}). The client did not abandon its upload: "
                "the server refused it first." + (" The connection ends with a reset." if rst else ""),
                [e("error_status", 413, resp)], ["connection_reset"] if rst else [])

    # ---- 3. a capture gap inside a body that looks like requests
    c = o.cap("gap-in-body-with-request-lines", 8105)
    if c:
        orig = Capture(os.path.join(out, "gap-in-body-with-request-lines.orig.pcap"), 8105)
        need(len(orig.rows) == len(c.rows) + 2, "gap-in-body: not two frames cut")
        need(count(c, b"HTTP/1.1 200", True) == 2, "gap-in-body: not two 200s")
        o.write("gap-in-body-with-request-lines", c,
                "A Python client POSTs a 20000-byte text body whose lines look like requests ('GET /x "
                "HTTP/1.1', 'Host: inner', blank lines, and request lines followed by a line that is not a "
                "header) to a Python keep-alive server, answered 200, then "
                "GET /after on the same connection, answered 200. Two client data frames in the middle of "
                "the body were cut from the capture with editcap (the server's ACKs cover them): a capture "
                "gap inside the body. Nothing is wrong with the traffic.",
                [], ["capture_gap"], healthy=True)

    # ---- 4. more than 10,000 requests on one connection
    path = os.path.join(out, "ten-thousand-requests.pcap.gz")
    if os.path.exists(path):
        c = Capture(path, 8106)
        n = count(c, b"GET /", False)
        need(n == 10050, f"ten-thousand: {n} requests")
        need(count(c, b"HTTP/1.1 200", True) == 10049, "ten-thousand: not 10049 200s")
        need(len({r["stream"] for r in c.rows}) == 1, "ten-thousand: more than one connection")
        o.write("ten-thousand-requests", c,
                "A Python client sends 10,050 GET requests on one keep-alive connection to a Python server, "
                "pipelined 20 at a time (each batch in one write; the server answers each batch in one "
                "write; tiny heads, 3-byte bodies). The first 10,049 are answered 200, the last, GET /fail, "
                "is answered 502. Stored gzip-compressed.",
                [e("error_status", 502, down(c, b"HTTP/1.1 502"), request="GET /fail")], gz=True)

    # ---- 5. plain HTTP on the TLS ports, answered in plain HTTP
    c = o.cap("plain-http-on-443-and-8443", 443)
    if c:
        ports = sorted({r["dport"] for r in c.rows if r["syn"] and not r["rst"]} & {443, 8443})
        need(ports == [443, 8443], f"plain-http: connections to {ports}")
        oks = sum(1 for r in c.rows if r["payload"].startswith(b"HTTP/1.1 200"))
        need(oks == 2, f"plain-http: {oks} 200s")
        o.write("plain-http-on-443-and-8443", c,
                "nginx 1.22 listens on 443 and 8443 without ssl. curl fetches http://10.61.0.2:443/a.html "
                "and http://10.61.0.2:8443/b.html in plain HTTP; both are answered 200 in plain HTTP. "
                "Nothing is wrong: the ports speak HTTP, not TLS.",
                [], healthy=True)

    # ---- 6. secrets in heads that do not parse
    c = o.cap("secret-header-without-colon", 8107)
    if c:
        o.write("secret-header-without-colon", c,
                "A Python client sends GET / to nginx 1.22 with the header line 'Authorization Bearer "
                "SECRET-TOKEN-H6' (no colon). nginx answers 400 Bad Request and closes. The token must "
                "not appear in any report without --show-secrets.",
                [e("malformed_request", 400, up(c, b"Authorization Bearer")),
                 e("error_status", 400, down(c, b"HTTP/1.1 400"))],
                never=["SECRET-TOKEN-H6"])
    c = o.cap("secret-folded-cookie", 8108)
    if c:
        o.write("secret-folded-cookie", c,
                "A Python client sends GET / to nginx 1.22 with 'Cookie: a=1' folded onto a continuation "
                "line '  session=SECRET-FOLD-H6' (obs-fold). nginx answers 400 Bad Request and closes. The "
                "cookie value on the continuation line must not appear in any report without --show-secrets.",
                [e("error_status", 400, down(c, b"HTTP/1.1 400"))], ["malformed_request"],
                never=["SECRET-FOLD-H6"])

    # ---- 7. a response written to the capture before its request
    c = o.cap("response-before-request", 8109)
    if c:
        resp = down(c, b"HTTP/1.1 200", nth=1)
        req = up(c, b"GET /b.html")
        need(req == resp + 1, f"response-before-request: request {req}, response {resp}")
        o.write("response-before-request", c,
                "curl fetches /a.html, /b.html and /c.html from nginx 1.22 on one keep-alive connection, "
                f"all answered 200. In the file, the response to GET /b.html (frame {resp}) comes before "
                f"the request itself (frame {req}): the two frames were swapped (with their timestamps "
                "staying in file order), as a capture on several interfaces (-i any) can write them. "
                "Nothing is wrong with the traffic.",
                [], healthy=True)

    # ---- 12. the tail of a response not captured
    c = o.cap("response-tail-not-captured", 8110)
    if c:
        fin = c.flag("server", "fin")
        need(fin and not [r for r in c.rows if r["frame"] == fin][0]["len"], "tail: no bare server FIN")
        need(fin < (c.flag("client", "fin") or 10**9), "tail: the client closed first")
        orig = Capture(os.path.join(out, "response-tail-not-captured.orig.pcap"), 8110)
        need(len(orig.rows) == len(c.rows) + 2, "tail: not two frames cut")
        o.write("response-tail-not-captured", c,
                "A Python client GETs /download from a Python server: 200 with Content-Length: 20000 and "
                "Connection: close; the server closes first (FIN, 0.3 s after the data), then the client. "
                "The last two data frames of the response were cut from the capture with editcap; the "
                f"server's FIN (frame {fin}) keeps its sequence number beyond the bytes seen, and the "
                "client's ACKs cover the missing bytes. The client received the whole body: only a capture gap.",
                [e("capture_gap")], healthy=True)

    # ---- 13. pairing after a gap
    c = o.cap("gap-then-error-pairs-right", 8111)
    if c:
        need(count(c, b"GET /", False) == 6, "gap-pairing: not six requests")
        need(count(c, b"HTTP/1.1 ", True) == 5, "gap-pairing: not five captured responses")
        o.write("gap-then-error-pairs-right", c,
                "curl sends GET /1, /2, /3, /4, /fail and /6 on one keep-alive connection to a Python "
                "server, each answered in one frame: 200, except /fail, answered 500. The frame holding "
                "the response to GET /2 was cut from the capture with editcap (curl's ACK covers it), so "
                "requests and responses must be paired by sequence numbers, not by counting.",
                [e("error_status", 500, down(c, b"HTTP/1.1 500"), request="GET /fail")], ["capture_gap"])

    # ---- 16. a CRLF after each body
    c = o.cap("crlf-after-body", 8112)
    if c:
        need(count(c, b"ok\n\r\n", True) == 3, "crlf: not three bodies followed by CRLF")
        o.write("crlf-after-body", c,
                "A Python keep-alive server writes a bare CRLF after each response's Content-Length body "
                "(an empty line before the next response, which RFC 9112 lets a recipient ignore). A Python "
                "client sends GET /one, /two and /three on one connection; all three are answered 200.",
                [], healthy=True)

    # ---- 17. chunk-size lines
    for name, port, what, curl in [
            ("chunk-size-leading-space", 8113, "' 5' (a space before the size)", None),
            ("chunk-size-form-feed", 8114, "'5\\f' (a form feed after the size)", None),
            ("chunk-size-bare-cr", 8115, "'5' ended by a bare CR, no LF", None)]:
        c = o.cap(name, port)
        if c:
            o.write(name, c,
                    f"A Python backend answers curl's GET with 200, Transfer-Encoding: chunked, and the chunk "
                    f"size line {what}, then 'hello' and the last chunk. That is not a valid chunk-size line "
                    "(RFC 9112 7.1).",
                    [e("malformed_chunked", 502, down(c, b"Transfer-Encoding: chunked"))])
    c = o.cap("chunk-ext-bws", 8116)
    if c:
        o.write("chunk-ext-bws", c,
                "A Python backend answers curl's GET with a chunked body whose size line is '5 ;ext=1': "
                "whitespace before the ';' of a chunk extension is BWS, allowed by RFC 9112 7.1.1. curl "
                "reads 'hello'. Nothing is wrong.",
                [], healthy=True)

    # ---- 18. heads whose reason matters
    c = o.cap("request-line-double-space", 8117)
    if c:
        o.write("request-line-double-space", c,
                "A Python client sends 'POST  /  HTTP/1.0' (two spaces after the method and before the "
                "version) to nginx 1.22, which tolerates it and answers 200. The request line is not "
                "method SP target SP version; its method is a valid token.",
                [e("malformed_request", None, up(c, b"POST  /"), reason_not=METHOD_TOKEN)])
    c = o.cap("request-line-no-target", 8118)
    if c:
        o.write("request-line-no-target", c,
                "A Python client sends 'OPTIONS HTTP/1.1' (no request target) to nginx 1.22, which answers "
                "400 Bad Request. OPTIONS is a valid method token; the target is what is missing.",
                [e("malformed_request", None, up(c, b"OPTIONS HTTP/1.1"), reason_not=METHOD_TOKEN),
                 e("error_status", 400, down(c, b"HTTP/1.1 400"))])
    c = o.cap("request-http09", 8119)
    if c:
        o.write("request-http09", c,
                "A Python client sends the HTTP/0.9 request 'GET /' (no version). nginx 1.22 answers in "
                "HTTP/0.9: the body 'ok' without a status line, and closes. GET is a valid method token; "
                "the version is what is missing.",
                [e("malformed_request", None, up(c, b"GET /\r\n"), reason_not=METHOD_TOKEN)],
                ["malformed_response"])
    c = o.cap("response-obs-fold", 8120)
    if c:
        o.write("response-obs-fold", c,
                "A Python backend answers curl's GET with a header folded onto a continuation line "
                "('X-Long: first part' then '  second part', obs-fold, which RFC 9112 5.2 forbids).",
                [e("malformed_response", 502, down(c, b"  second part"), reason_contains="fold")])
    c = o.cap("response-head-unfinished", 8121)
    if c:
        fin = c.flag("server", "fin")
        need(fin and fin < (c.flag("client", "fin") or 10**9), "head-unfinished: server FIN not first")
        o.write("response-head-unfinished", c,
                "A Python backend answers curl's GET with 'HTTP/1.1 200 OK', two header lines and no "
                f"blank line, then closes (FIN, frame {fin}): the response head never ended. No body was "
                "ever announced, so nothing of a body is missing.",
                [e("closed_before_response", 502, fin)])
    c = o.cap("response-no-status-line", 8122)
    if c:
        o.write("response-no-status-line", c,
                "curl (--http0.9) sends GET /first and GET /second on one keep-alive connection to a Python "
                "backend. /first is answered 200 with Content-Length; /second is answered with an HTML page "
                "alone, no status line and no headers, and the backend closes. Those bytes answer an "
                "outstanding request: they are a malformed response, not bytes overrunning /first's body.",
                [e("malformed_response", 502, down(c, b"<html>"), request="GET /second")], ["closed_before_response"])
    c = o.cap("transfer-encoding-gzip-with-length", 8123)
    if c:
        o.write("transfer-encoding-gzip-with-length", c,
                "A Python backend answers curl's GET with 'Transfer-Encoding: gzip' (not chunked) and a "
                "Content-Length equal to the gzip body's length, then closes: the body is delimited by the "
                "close (RFC 9112 6.3), and it is as long as Content-Length says. There is no chunked "
                "coding here.",
                [], ["conflicting_content_length", "malformed_response"])


if __name__ == "__main__":
    main(sys.argv[1])
