#!/usr/bin/env python3
"""HTTP/1.x servers and clients that misbehave on purpose, for make-http-captures.sh.

Plain stdlib sockets. Every server serves at most --count connections and gives up after
--timeout seconds; every client makes one exchange and every wait is bounded.

  h6_http_peers.py server MODE PORT [--bind ADDR] [--count N] [--timeout SECONDS]
  h6_http_peers.py client MODE HOST PORT

Clients print one line saying what the server did (status line, or how it closed), which the
build script keeps in its log.
"""
import argparse
import socket
import struct
import sys
import time

TEXT = b"Content-Type: text/plain\r\n"


def log(msg):
    print(msg, flush=True)


def linger_zero(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def read_head(conn, buf=b"", limit=10.0):
    """Reads until the end of a request head; returns (head, rest) or (None, data) on EOF."""
    deadline = time.monotonic() + limit
    while b"\r\n\r\n" not in buf:
        conn.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = conn.recv(65536)
        except (socket.timeout, OSError):
            return None, buf
        if not chunk:
            return None, buf
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head + b"\r\n\r\n", rest


def content_length(head):
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def wait_for_close(conn, limit=3.0):
    """Reads and discards until the peer closes or the limit passes."""
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            conn.settimeout(max(0.05, deadline - time.monotonic()))
            if not conn.recv(65536):
                return True
    except (socket.timeout, OSError):
        pass
    return False


# Responses that are broken in their bytes alone: sent in one write, then the server waits for
# the client to close (as a keep-alive backend would) and closes too.
RAW = {
    "bad-status-line": b"HTP/1.1 200 OK\r\n" + TEXT + b"Content-Length: 5\r\n\r\nhello",
    "header-without-colon": b"HTTP/1.1 200 OK\r\n" + TEXT + b"X-Broken header value\r\n"
                            b"Content-Length: 5\r\n\r\nhello",
    # 10 bytes declared, 50 sent: the 40 after the body are not a response.
    "body-longer": b"HTTP/1.1 200 OK\r\n" + TEXT + b"Content-Length: 10\r\n\r\n"
                   + b"0123456789" + b"#garbage, not an HTTP response#" + b"x" * 9,
    "two-content-lengths": b"HTTP/1.1 200 OK\r\n" + TEXT + b"Content-Length: 10\r\n"
                           b"Content-Length: 12\r\n\r\n0123456789ab",
    "content-length-with-chunked": b"HTTP/1.1 200 OK\r\n" + TEXT + b"Content-Length: 5\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "bad-chunk-size": b"HTTP/1.1 200 OK\r\n" + TEXT + b"Transfer-Encoding: chunked\r\n\r\n"
                      b"zz\r\nhello\r\n0\r\n\r\n",
    "qps-limited": b"HTTP/1.1 503 Service Temporarily Unavailable\r\n" + TEXT
                   + b"ALB-QPS-Limited: Limited\r\nContent-Length: 13\r\n\r\nrate limited\n",
}


def healthy_response(head):
    """A keep-alive backend: chunked with an extension and a trailer on /chunked, else 200."""
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    target = parts[1] if len(parts) > 1 else b"/"
    if target.startswith(b"/chunked"):
        return (b"HTTP/1.1 200 OK\r\n" + TEXT + b"Transfer-Encoding: chunked\r\n"
                b"Trailer: X-Checksum\r\n\r\n"
                b"5;ext=1\r\nhello\r\n7;ext=1\r\n, world\r\n2\r\n!\n\r\n0\r\nX-Checksum: abc\r\n\r\n")
    body = b"stored\n" if parts[0] == b"POST" else b"backend ok\n"
    return b"HTTP/1.1 200 OK\r\n" + TEXT + b"Content-Length: %d\r\n\r\n" % len(body) + body


def handle(mode, conn):
    head, rest = read_head(conn)
    if head is None:
        conn.close()
        return
    if mode in RAW:
        conn.sendall(RAW[mode])
        wait_for_close(conn)
        conn.close()
    elif mode == "body-shorter":
        conn.sendall(b"HTTP/1.1 200 OK\r\n" + TEXT + b"Content-Length: 1000\r\n\r\n" + b"s" * 400)
        time.sleep(0.3)
        conn.close()
    elif mode == "reset-mid-body":
        conn.sendall(b"HTTP/1.1 200 OK\r\n" + TEXT + b"Content-Length: 100000\r\n\r\n")
        conn.sendall(b"r" * 20000)
        time.sleep(0.5)  # let the 20000 bytes reach the client before the reset
        linger_zero(conn)
        conn.close()
    elif mode == "close-without-response":
        time.sleep(0.2)
        conn.close()
    elif mode.startswith("sleep-"):  # answer 200 after N seconds, whether or not anyone listens
        time.sleep(float(mode.split("-", 1)[1]))
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\n" + TEXT + b"Content-Length: 6\r\n\r\nlater\n")
            wait_for_close(conn)
        except OSError:
            pass
        conn.close()
    elif mode == "never":  # hold the connection open, never answer
        wait_for_close(conn, limit=8.0)
        conn.close()
    elif mode == "healthy":  # keep-alive: answer every request until the client closes
        while head is not None:
            need = content_length(head)
            while len(rest) < need:
                conn.settimeout(5)
                chunk = conn.recv(65536)
                if not chunk:
                    break
                rest += chunk
            rest = rest[need:]
            conn.sendall(healthy_response(head))
            head, rest = read_head(conn, rest, limit=5.0)
        conn.close()
    else:
        raise SystemExit(f"unknown server mode {mode}")


def serve(mode, port, bind, count, timeout):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((bind, port))
    s.listen(8)
    deadline = time.monotonic() + timeout
    served = 0
    while served < count and time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            conn, _ = s.accept()
        except socket.timeout:
            break
        served += 1
        try:
            handle(mode, conn)
        except OSError as e:
            log(f"server {mode}: {e}")
            conn.close()
    s.close()


def read_answer(c, limit):
    """Reads until EOF or the limit; returns (data, how) where how is 'FIN', 'RST' or 'open'."""
    data = b""
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            c.settimeout(max(0.05, deadline - time.monotonic()))
            chunk = c.recv(65536)
            if not chunk:
                return data, "FIN"
            data += chunk
    except ConnectionResetError:
        return data, "RST"
    except (socket.timeout, OSError):
        pass
    return data, "open"


def report(mode, data, how, waited):
    status = data.split(b"\r\n", 1)[0].decode("latin-1") if data else "no response"
    log(f"client {mode}: {status!r}; server side {how} after {waited:.1f} s")


def client(mode, host, port):
    c = socket.create_connection((host, port), timeout=10)
    t0 = time.monotonic()
    if mode == "half-head":
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        data, how = read_answer(c, 10)
        report(mode, data, how, time.monotonic() - t0)
    elif mode == "malformed-request":
        c.sendall(b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n")
        data, how = read_answer(c, 3)
        report(mode, data, how, time.monotonic() - t0)
    elif mode == "alb-trace":
        head = b"GET /orders HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: h6-client\r\n"
        for i in range(17):
            head += b"ALICLOUD-ALB-TRACE: %016x\r\n" % (0x5e1f0a2b3c4d0000 + 0x1111 * i)
        c.sendall(head + b"\r\n")
        data, how = read_answer(c, 1.0)  # the server keeps the connection open; close after
        report(mode, data, how, time.monotonic() - t0)
    elif mode == "give-up":
        c.sendall(b"GET /report HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(1)
        c.shutdown(socket.SHUT_WR)
        c.close()
        log(f"client {mode}: gave up after 1 s (FIN)")
    elif mode == "no-response":
        # TCP keep-alive probes every second show, inside the capture, that the connection
        # was still open and idle when the capture stopped.
        c.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
        c.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        log(f"client {mode}: request sent")
        data, how = read_answer(c, 5)
        report(mode, data, how, time.monotonic() - t0)
    elif mode == "body-truncated":
        c.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                  b"Content-Length: 5000\r\n\r\n" + b"u" * 1000)
        time.sleep(0.3)
        c.shutdown(socket.SHUT_WR)
        data, how = read_answer(c, 5)
        report(mode, data, how, time.monotonic() - t0)
    elif mode == "pipelined":
        c.sendall(b"".join(b"GET /%s.html HTTP/1.1\r\nHost: x\r\n\r\n" % p for p in (b"a", b"b", b"c")))
        buf, answered = b"", 0
        while answered < 3:
            head, buf = read_head(c, buf, limit=3.0)
            if head is None:
                break
            need = content_length(head)
            while len(buf) < need:
                c.settimeout(3)
                chunk = c.recv(65536)
                if not chunk:
                    break
                buf += chunk
            buf = buf[need:]
            answered += 1
        log(f"client {mode}: {answered} responses")
    else:
        raise SystemExit(f"unknown client mode {mode}")
    c.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["server", "client"])
    p.add_argument("mode")
    p.add_argument("rest", nargs="+")
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--timeout", type=float, default=20.0)
    a = p.parse_args()
    if a.role == "server":
        serve(a.mode, int(a.rest[0]), a.bind, a.count, a.timeout)
    else:
        client(a.mode, a.rest[0], int(a.rest[1]))


if __name__ == "__main__":
    sys.exit(main())
