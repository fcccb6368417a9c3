#!/usr/bin/env python3
"""Small misbehaving TCP peers for lbdiag's captures. Each mode serves or makes a bounded number
of connections and exits; nothing here runs longer than its timeout."""
import socket
import struct
import sys
import time

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"


def linger_zero(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def read_request(conn):
    data = b""
    conn.settimeout(5)
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def listener(port, family=socket.AF_INET, addr="0.0.0.0"):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(16)
    s.settimeout(20)
    return s


def serve(mode, port, count):
    s = listener(port)
    for i in range(count):
        conn, _ = s.accept()
        if mode == "reset-awaiting":
            read_request(conn)
            time.sleep(0.3)
            linger_zero(conn)
            conn.close()
        elif mode == "slow":
            read_request(conn)
            time.sleep(2)
            try:
                conn.sendall(RESPONSE)
                conn.close()
            except OSError:
                pass
        elif mode == "answer-then-reset":
            # First connection: answered, and the server closes first (no TIME_WAIT for the
            # client, so it can reuse its port). Second: reset while the request waits.
            read_request(conn)
            if i == 0:
                conn.sendall(RESPONSE)
                conn.close()
            else:
                time.sleep(0.2)
                linger_zero(conn)
                conn.close()
        elif mode == "reset-after-fins":
            read_request(conn)
            conn.sendall(RESPONSE)
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(5)
            while conn.recv(4096):
                pass
            # Both FINs have crossed; closing with linger 0 now sends a late RST.
            time.sleep(0.2)
            linger_zero(conn)
            conn.close()
    s.close()


def client(mode, host, port, local_port=0):
    if mode == "give-up":
        c = socket.create_connection((host, port), timeout=5)
        c.sendall(b"GET /slow HTTP/1.1\r\nHost: backend\r\n\r\n")
        time.sleep(0.5)
        linger_zero(c)
        c.close()
    elif mode == "reuse":
        for attempt in range(2):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            c.bind(("0.0.0.0", local_port))
            c.settimeout(5)
            c.connect((host, port))
            c.sendall(b"GET /item/%d HTTP/1.1\r\nHost: backend\r\n\r\n" % attempt)
            try:
                while c.recv(4096):
                    pass
            except OSError:
                pass
            c.close()
            time.sleep(0.5)


if __name__ == "__main__" and sys.argv[1] != "extra":
    role = sys.argv[1]
    if role == "serve":
        serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        client(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else 0)


def accept_late(port, delay, count):
    """A listener with a backlog of 1 that does not accept for `delay` seconds: the kernel
    drops SYNs once its accept queue is full."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(1)
    time.sleep(delay)
    s.settimeout(15)
    for _ in range(count):
        try:
            conn, _ = s.accept()
        except OSError:
            break
        read_request(conn)
        conn.sendall(RESPONSE)
        conn.close()


def bulk(port, size, count):
    """Sends `size` bytes to each of `count` clients after reading their request."""
    s = listener(port)
    for _ in range(count):
        conn, _ = s.accept()
        read_request(conn)
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size
        try:
            conn.sendall(head + b"z" * size)
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(10)
            while conn.recv(65536):
                pass
        except OSError:
            pass
        conn.close()


def sink(port, count):
    """Reads a request and its whole Content-Length body, then answers 200."""
    s = listener(port)
    for _ in range(count):
        try:
            conn, _ = s.accept()
        except OSError:
            break
        data = read_request(conn)
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        try:
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                body += chunk
            conn.sendall(RESPONSE)
        except OSError:
            pass
        conn.close()
    s.close()


def slow_reader(host, port, pause):
    """Reads 1 KB, stops reading for `pause` seconds with a small receive buffer, then reads
    the rest: the sender sees a zero window."""
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.settimeout(15)
    c.connect((host, port))
    c.sendall(b"GET /big HTTP/1.1\r\nHost: backend\r\n\r\n")
    c.recv(1024)
    time.sleep(pause)
    while c.recv(65536):
        pass
    c.close()


def keepalive_idle(host, port, wait):
    """One request on a keep-alive connection, then idle until the server closes it."""
    c = socket.create_connection((host, port), timeout=wait + 5)
    c.sendall(b"GET /small HTTP/1.1\r\nHost: backend\r\n\r\n")
    data = b""
    start = time.time()
    while time.time() - start < wait:
        chunk = c.recv(65536)
        if not chunk:
            break
        data += chunk
    c.close()


if __name__ == "__main__" and sys.argv[1] == "extra":
    mode = sys.argv[2]
    if mode == "accept-late":
        accept_late(int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
    elif mode == "bulk":
        bulk(int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif mode == "sink":
        sink(int(sys.argv[3]), int(sys.argv[4]))
    elif mode == "slow-reader":
        slow_reader(sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    elif mode == "keepalive-idle":
        keepalive_idle(sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
