#!/usr/bin/env python3
"""Backends and clients for captures/make-proxy-captures.sh: small HTTP/1.1 peers that misbehave
on purpose behind nginx or haproxy. Every server stops after SECONDS; every client has timeouts.

  proxy_peers.py server MODE ADDR PORT SECONDS [--idle S] [--delay S]
  proxy_peers.py race-client ADDR PORT METHOD WAIT [--first-wait S]
  proxy_peers.py give-up ADDR PORT PATH AFTER

Server modes:
  ok          answers 200 to every request; keep-alive with an idle timeout (--idle, default 5 s)
              measured from its last write, then closes the idle connection (FIN). GET /slow
              waits --delay seconds before answering.
  slow        answers 200 after --delay seconds, then closes.
  reset-head  sends the status line and one header, then resets (SO_LINGER 0).
  reset-body  sends a whole head announcing 10,000 body bytes, 1,000 of them, then resets.
  sink        reads the request head and the body its Content-Length announces, answers 200.
"""
import argparse
import select
import socket
import struct
import sys
import threading
import time


def log(*a):
    print(f"{time.time():.3f}", *a, file=sys.stderr, flush=True)


def read_request(conn, buf, deadline):
    """Reads one request (head and Content-Length body) from conn; returns (head, rest) or None
    when the peer closed or the deadline passed first."""
    while b"\r\n\r\n" not in buf:
        left = deadline - time.time()
        if left <= 0:
            return None
        r, _, _ = select.select([conn], [], [], left)
        if not r:
            return None
        try:
            chunk = conn.recv(65536)
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip() or 0)
    while len(rest) < length:
        r, _, _ = select.select([conn], [], [], max(0.0, deadline - time.time()))
        if not r:
            return None
        chunk = conn.recv(65536)
        if not chunk:
            return None
        rest += chunk
    return head, rest[length:]


def response(body, close=False):
    extra = b"Connection: close\r\n" if close else b""
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


def reset(conn):
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def serve_conn(conn, args, end):
    buf = b""
    try:
        while True:
            # Keep-alive: wait for the next request at most --idle after the last write.
            deadline = min(end, time.time() + (args.idle if args.mode == "ok" else 30))
            got = read_request(conn, buf, deadline)
            if got is None:
                log("close idle/ended connection", conn.getpeername())
                conn.close()
                return
            head, buf = got
            line = head.split(b"\r\n")[0].decode(errors="replace")
            log("request", line, "from", conn.getpeername())
            if args.mode == "ok":
                if " /slow" in line:
                    time.sleep(args.delay)
                conn.sendall(response(b"ok " + line.encode() + b"\n"))
                continue
            if args.mode == "slow":
                time.sleep(args.delay)
                try:
                    conn.sendall(response(b"slow answer\n", close=True))
                except OSError as e:
                    log("late write failed:", e)
                conn.close()
                return
            if args.mode == "reset-head":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n")
                time.sleep(0.1)
                reset(conn)
                return
            if args.mode == "reset-body":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: 10000\r\n\r\n" + b"b" * 1000)
                time.sleep(0.1)
                reset(conn)
                return
            if args.mode == "sink":
                conn.sendall(response(b"got it\n", close=True))
                conn.close()
                return
    except OSError as e:
        log("connection error:", e)
        conn.close()


def server(args):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.addr, args.port))
    ls.listen(16)
    end = time.time() + args.seconds
    log("listening", args.addr, args.port, args.mode)
    threads = []
    while time.time() < end and len(threads) < 64:
        r, _, _ = select.select([ls], [], [], 0.1)
        if not r:
            continue
        conn, _ = ls.accept()
        t = threading.Thread(target=serve_conn, args=(conn, args, end), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(max(0.0, end - time.time()))


def exchange(addr, port, method, path, timeout=10.0):
    """One request on a new connection; returns the status line."""
    body = b"item=42&qty=1" if method == "POST" else b""
    req = (f"{method} {path} HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: proxy-peers\r\n"
           f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    if method != "POST":
        req = req.replace(b"Content-Length: 0\r\n", b"")
    s = socket.create_connection((addr, port), timeout=timeout)
    s.sendall(req)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    s.close()
    status = data.split(b"\r\n")[0].decode(errors="replace")
    log(method, path, "->", status)
    return status


def race_client(args):
    """Warms the balancer's idle connection to the backend, lets the backend close it once
    (an ordinary idle close), warms it again and sends METHOD WAIT seconds after the answer:
    timed so the request crosses the backend's next idle close."""
    exchange(args.addr, args.port, "GET", "/warm-1")
    time.sleep(args.first_wait)
    exchange(args.addr, args.port, "GET", "/warm-2")
    time.sleep(args.wait)
    print(exchange(args.addr, args.port, args.method, "/order" if args.method == "POST" else "/item"))


def give_up(args):
    s = socket.create_connection((args.addr, args.port), timeout=5)
    s.sendall(f"GET {args.path} HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: proxy-peers\r\n\r\n".encode())
    r, _, _ = select.select([s], [], [], args.after)
    log("giving up" if not r else "answered before giving up")
    s.shutdown(socket.SHUT_RDWR)
    s.close()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("mode", choices=["ok", "slow", "reset-head", "reset-body", "sink"])
    s.add_argument("addr")
    s.add_argument("port", type=int)
    s.add_argument("seconds", type=float)
    s.add_argument("--idle", type=float, default=5.0)
    s.add_argument("--delay", type=float, default=5.0)
    c = sub.add_parser("race-client")
    c.add_argument("addr")
    c.add_argument("port", type=int)
    c.add_argument("method")
    c.add_argument("wait", type=float)
    c.add_argument("--first-wait", type=float, default=1.5)
    g = sub.add_parser("give-up")
    g.add_argument("addr")
    g.add_argument("port", type=int)
    g.add_argument("path")
    g.add_argument("after", type=float)
    args = p.parse_args()
    {"server": server, "race-client": race_client, "give-up": give_up}[args.cmd](args)


if __name__ == "__main__":
    main()
