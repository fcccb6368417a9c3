#!/usr/bin/env python3
"""HTTP/1.x servers and clients for make-http-regressions.sh: one regression capture each.

Plain stdlib sockets. Every server serves at most --count connections and gives up after
--timeout seconds; every client makes one bounded exchange and prints what it saw.

  h6_regress_peers.py server MODE PORT [--count N] [--timeout S] [--fail STATUS]
  h6_regress_peers.py client MODE HOST PORT [--n N]
"""
import argparse
import gzip
import socket
import sys
import time

TEXT = b"Content-Type: text/plain\r\n"


def log(msg):
    print(msg, flush=True)


def recv_until(conn, buf, done, limit=5.0):
    """Reads until done(buf) or EOF or the limit; returns (buf, eof)."""
    deadline = time.monotonic() + limit
    while not done(buf):
        conn.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = conn.recv(65536)
        except (socket.timeout, OSError):
            return buf, False
        if not chunk:
            return buf, True
        buf += chunk
    return buf, False


def split_head(buf):
    """(head, rest) when buf holds a whole head (leading empty lines skipped), else None."""
    stripped = buf.lstrip(b"\r\n")
    if b"\r\n\r\n" not in stripped:
        return None
    head, rest = stripped.split(b"\r\n\r\n", 1)
    return head + b"\r\n\r\n", rest


def header(head, name):
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == name:
            return v.strip()
    return None


def content_length(head):
    v = header(head, b"content-length")
    return int(v) if v else 0


def wait_for_close(conn, limit=3.0):
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            conn.settimeout(max(0.05, deadline - time.monotonic()))
            if not conn.recv(65536):
                return
    except (socket.timeout, OSError):
        pass


def response(status, body=b"", extra=b""):
    reason = {200: b"OK", 407: b"Proxy Authentication Required", 417: b"Expectation Failed",
              500: b"Internal Server Error", 502: b"Bad Gateway", 503: b"Service Unavailable"}
    return (b"HTTP/1.1 %d %s\r\n" % (status, reason.get(status, b"Status")) + TEXT + extra
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


# Responses broken (or odd) in their bytes alone, sent after the request head in one write.
# close=True: the server closes at once; otherwise it waits for the client to close.
CHUNKED = b"HTTP/1.1 200 OK\r\n" + TEXT + b"Transfer-Encoding: chunked\r\n\r\n"
GZ = gzip.compress(b"compressed body\n" * 4, mtime=0)
RAW = {
    "chunk-leading-space": (CHUNKED + b" 5\r\nhello\r\n0\r\n\r\n", False),
    "chunk-form-feed": (CHUNKED + b"5\x0c\r\nhello\r\n0\r\n\r\n", False),
    "chunk-bare-cr": (CHUNKED + b"5\rhello\r\n0\r\n\r\n", False),
    "chunk-ext-bws": (CHUNKED + b"5 ;ext=1\r\nhello\r\n0\r\n\r\n", False),
    "obs-fold": (b"HTTP/1.1 200 OK\r\n" + TEXT + b"X-Long: first part\r\n  second part\r\n"
                 b"Content-Length: 5\r\n\r\nhello", False),
    "head-unfinished": (b"HTTP/1.1 200 OK\r\n" + TEXT + b"Content-Length: 5\r\n", True),
    # Transfer-Encoding without chunked: the body runs to the close (RFC 9112 6.3); the
    # Content-Length is the body's true length, so either reading frames it the same.
    "te-gzip-with-length": (b"HTTP/1.1 200 OK\r\n" + TEXT + b"Transfer-Encoding: gzip\r\n"
                            b"Content-Length: %d\r\n\r\n" % len(GZ) + GZ, True),
}


def keepalive(conn, fail, crlf_after_body):
    """Answers every request until the client closes: 200, `fail` for /fail, 407 for CONNECT.
    Answers to pipelined requests that arrived together go out in one write."""
    buf, pending = b"", b""
    while True:
        if pending and split_head(buf) is None:
            conn.sendall(pending)
            pending = b""
        buf, eof = recv_until(conn, buf, lambda b: split_head(b) is not None)
        parts = split_head(buf)
        if parts is None:
            return
        head, buf = parts
        need = content_length(head)
        buf, _ = recv_until(conn, buf, lambda b: len(b) >= need)
        buf = buf[need:]
        method, target = (head.split(b"\r\n", 1)[0].split(b" ") + [b"", b""])[:2]
        if method == b"CONNECT":
            out = response(407, b"proxy auth required\n", b'Proxy-Authenticate: Basic realm="h6"\r\n')
        elif target == b"/fail":
            out = response(fail, b"failed\n")
        else:
            out = response(200, b"ok\n")
        if crlf_after_body:
            out += b"\r\n"
        pending += out


def handle(mode, conn, fail):
    if mode == "keepalive":
        keepalive(conn, fail, False)
    elif mode == "crlf-after-body":
        keepalive(conn, fail, True)
    elif mode == "expect-417":
        buf, _ = recv_until(conn, b"", lambda b: split_head(b) is not None)
        conn.sendall(response(417, b"no expectations\n", b"Connection: close\r\n"))
        wait_for_close(conn)
    elif mode == "tail-then-close":
        # 20000 body bytes with Connection: close; the pause keeps the FIN off the last data.
        recv_until(conn, b"", lambda b: split_head(b) is not None)
        conn.sendall(response(200, b"t" * 20000, b"Connection: close\r\n"))
        time.sleep(0.3)
    elif mode == "second-no-status-line":
        # The first request is answered properly (keep-alive); the second with a bare page.
        buf, _ = recv_until(conn, b"", lambda b: split_head(b) is not None)
        conn.sendall(response(200, b"ok\n"))
        buf = split_head(buf)[1]
        recv_until(conn, buf, lambda b: split_head(b) is not None)
        conn.sendall(b"<html><body>backend error page, no status line</body></html>\n")
        time.sleep(0.1)
    elif mode in RAW:
        recv_until(conn, b"", lambda b: split_head(b) is not None)
        data, close_now = RAW[mode]
        conn.sendall(data)
        if close_now:
            time.sleep(0.1)
        else:
            wait_for_close(conn)
    else:
        raise SystemExit(f"unknown server mode {mode}")
    conn.close()


def serve(mode, port, count, timeout, fail):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(8)
    deadline = time.monotonic() + timeout
    for _ in range(count):
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            conn, _ = s.accept()
        except socket.timeout:
            break
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            handle(mode, conn, fail)
        except OSError as e:
            log(f"server {mode}: {e}")
            conn.close()
    s.close()


def read_response(c, buf, limit=5.0):
    """One Content-Length response (empty lines before it skipped); returns (status, rest)."""
    buf, _ = recv_until(c, buf, lambda b: split_head(b) is not None, limit)
    parts = split_head(buf)
    if parts is None:
        return None, buf
    head, buf = parts
    need = content_length(head)
    buf, _ = recv_until(c, buf, lambda b: len(b) >= need, limit)
    return int(head.split(b" ")[1]), buf[need:]


def exchange(c, requests):
    """Sends each request after the previous response; returns the statuses."""
    buf, got = b"", []
    for req in requests:
        c.sendall(req)
        status, buf = read_response(c, buf)
        got.append(status)
        if status is None:
            break
    return got


def get(path, extra=b""):
    return b"GET %s HTTP/1.1\r\nHost: backend.test\r\n%s\r\n" % (path, extra)


def gap_body():
    """20 KB whose lines look like requests: what a body cut by a capture gap resumes inside."""
    lines = [b"GET /x HTTP/1.1\r\nHost: inner\r\n\r\nGET /x HTTP/1.1\r\nline %05d is text, not a header\r\n\r\n" % i
             for i in range(400)]
    return b"".join(lines)[:20000]


# Request heads sent as they are; the client then reads until the server closes.
RAW_REQUESTS = {
    "secret-no-colon": b"GET / HTTP/1.1\r\nHost: backend.test\r\nAuthorization Bearer SECRET-TOKEN-H6\r\n\r\n",
    "secret-fold": b"GET / HTTP/1.1\r\nHost: backend.test\r\nCookie: a=1\r\n  session=SECRET-FOLD-H6\r\n\r\n",
    "double-space": b"POST  /  HTTP/1.0\r\nHost: backend.test\r\nContent-Length: 0\r\n\r\n",
    "no-target": b"OPTIONS HTTP/1.1\r\nHost: backend.test\r\n\r\n",
    "http09": b"GET /\r\n",
}


def client(mode, host, port, n):
    c = socket.create_connection((host, port), timeout=10)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if mode == "upgrade":
        got = exchange(c, [get(b"/chat", b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
                                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                         b"Sec-WebSocket-Version: 13\r\n"),
                           get(b"/next"), get(b"/fail")])
    elif mode == "connect":
        got = exchange(c, [b"CONNECT backend.test:443 HTTP/1.1\r\nHost: backend.test:443\r\n\r\n",
                           get(b"/fail")])
    elif mode == "expect-417":
        c.sendall(b"POST /upload HTTP/1.1\r\nHost: backend.test\r\nContent-Length: 5000\r\n"
                  b"Content-Type: application/octet-stream\r\nExpect: 100-continue\r\n\r\n")
        got, _ = read_response(c, b"")
        # The server said no: the body is never sent, and the client closes.
    elif mode == "gap-body":
        body = gap_body()
        got = exchange(c, [b"POST /upload HTTP/1.1\r\nHost: backend.test\r\nContent-Type: text/plain\r\n"
                           b"Content-Length: %d\r\n\r\n" % len(body) + body, get(b"/after")])
    elif mode == "many":
        # n requests on one connection, pipelined 20 at a time (each batch in one write, then
        # its 20 answers read); the last request is /fail.
        buf, got, i = b"", {}, 0
        while i < n:
            batch = range(i, min(i + 20, n))
            c.sendall(b"".join(get(b"/fail" if j == n - 1 else b"/") for j in batch))
            for _ in batch:
                status, buf = read_response(c, buf)
                got[status] = got.get(status, 0) + 1
            i += len(batch)
    elif mode == "download":
        # Waits for the server to close (it said Connection: close) before closing itself.
        c.sendall(get(b"/download"))
        data, eof = recv_until(c, b"", lambda b: False, limit=5.0)
        got = (data.split(b"\r\n", 1)[0], len(data), "closed" if eof else "open")
    elif mode in RAW_REQUESTS:
        c.sendall(RAW_REQUESTS[mode])
        data, eof = recv_until(c, b"", lambda b: False, limit=3.0)
        got = (data.split(b"\r\n", 1)[0], "closed" if eof else "open")
    elif mode == "crlf":
        got = exchange(c, [get(b"/one"), get(b"/two"), get(b"/three")])
    else:
        raise SystemExit(f"unknown client mode {mode}")
    log(f"client {mode}: {got}")
    c.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["server", "client"])
    p.add_argument("mode")
    p.add_argument("rest", nargs="+")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--fail", type=int, default=502)
    p.add_argument("--n", type=int, default=10050)
    a = p.parse_args()
    if a.role == "server":
        serve(a.mode, int(a.rest[0]), a.count, a.timeout, a.fail)
    else:
        client(a.mode, a.rest[0], int(a.rest[1]), a.n)


if __name__ == "__main__":
    sys.exit(main())
