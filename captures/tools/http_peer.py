#!/usr/bin/env python3
"""HTTP peers that misbehave on purpose, for lbdiag's HTTP captures. Every server mode serves
one connection and exits; every client mode makes one exchange; all are bounded in time."""
import socket
import struct
import sys
import time

OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"

RAW = {
    "bad-status-line": b"HTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "header-without-colon": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Broken header value\r\n\r\nhello",
    "body-longer": OK_HEAD + b"Content-Length: 10\r\n\r\n0123456789" + b"<junk>" * 8 + b"\r\n",
    "two-content-lengths": OK_HEAD + b"Content-Length: 10\r\nContent-Length: 12\r\n\r\n0123456789ab",
    "content-length-with-chunked": OK_HEAD + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "bad-chunk-size": OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "qps-limited": b"HTTP/1.1 503 Service Temporarily Unavailable\r\nALB-QPS-Limited: Limited\r\nContent-Length: 0\r\n\r\n",
    "chunked-trailers": OK_HEAD + b"Transfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n",
}


def linger_zero(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def read_head(conn):
    data = b""
    conn.settimeout(10)
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def serve(mode, port, count=1):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(8)
    s.settimeout(20)
    for _ in range(count):
        conn, _ = s.accept()
        read_head(conn)
        if mode in RAW:
            conn.sendall(RAW[mode])
            time.sleep(0.3)
            conn.close()
        elif mode == "body-shorter":
            conn.sendall(OK_HEAD + b"Content-Length: 1000\r\n\r\n" + b"s" * 400)
            time.sleep(0.3)
            conn.close()
        elif mode == "reset-mid-body":
            conn.sendall(OK_HEAD + b"Content-Length: 100000\r\n\r\n" + b"r" * 20000)
            time.sleep(0.3)
            linger_zero(conn)
            conn.close()
        elif mode == "close-without-response":
            time.sleep(0.2)
            conn.close()
        elif mode.startswith("sleep-"):
            time.sleep(float(mode.split("-")[1]))
            try:
                conn.sendall(OK_HEAD + b"Content-Length: 5\r\n\r\nlater")
                conn.close()
            except OSError:
                pass
        elif mode == "never":
            time.sleep(6)
            conn.close()
    s.close()


def client(mode, host, port):
    c = socket.create_connection((host, port), timeout=10)
    if mode == "half-head":
        c.sendall(b"GET /slow-client HTTP/1.1\r\nHost: backend\r\n")
        c.settimeout(6)
        try:
            while c.recv(65536):
                pass
        except OSError:
            pass
    elif mode == "alb-trace":
        head = b"GET /loop HTTP/1.1\r\nHost: backend\r\n"
        for i in range(17):
            head += b"ALICLOUD-ALB-TRACE: %016x\r\n" % (0x1f2e3d4c5b6a7980 + i)
        c.sendall(head + b"\r\n")
        c.settimeout(3)
        try:
            while c.recv(65536):
                pass
        except OSError:
            pass
    elif mode == "give-up-fin":
        c.sendall(b"GET /report HTTP/1.1\r\nHost: backend\r\n\r\n")
        time.sleep(1)
        c.shutdown(socket.SHUT_WR)
        c.close()
    elif mode == "malformed-request":
        c.sendall(b"GET /a b c HTTP/1.1\r\nHost: backend\r\n\r\n")
        c.settimeout(3)
        try:
            while c.recv(65536):
                pass
        except OSError:
            pass
    elif mode == "body-truncated":
        c.sendall(b"POST /upload HTTP/1.1\r\nHost: backend\r\nContent-Length: 5000\r\n\r\n" + b"u" * 1000)
        time.sleep(0.5)
        c.close()
    elif mode == "pipelined":
        reqs = b"".join(b"GET /%s.html HTTP/1.1\r\nHost: backend\r\n\r\n" % p for p in (b"a", b"b", b"c"))
        c.sendall(reqs)
        c.settimeout(2)
        got = b""
        try:
            while got.count(b"HTTP/1.1 200") < 3:
                chunk = c.recv(65536)
                if not chunk:
                    break
                got += chunk
        except OSError:
            pass
        c.close()
    elif mode == "no-response":
        c.sendall(b"GET /hang HTTP/1.1\r\nHost: backend\r\n\r\n")
        time.sleep(4)
        c.close()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 1)
    else:
        client(sys.argv[2], sys.argv[3], int(sys.argv[4]))
