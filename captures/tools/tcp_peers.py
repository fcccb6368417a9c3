#!/usr/bin/env python3
"""TCP peers for captures/make-captures.sh. Each mode serves or makes a bounded number of
connections and exits; every socket has a timeout, so nothing here outlives its capture.

  tcp_peers.py serve MODE PORT            MODE: reset-awaiting | slow | answer-then-reset |
                                                answer-and-close
  tcp_peers.py client MODE HOST PORT LPORT  MODE: give-up | reuse | stray-crlf
"""
import socket
import struct
import sys
import time

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n"


def linger_zero(sock):
    """close() now sends RST instead of FIN (SO_LINGER on, timeout 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def read_head(conn):
    data = b""
    conn.settimeout(5)
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def read_to_eof(conn):
    data = b""
    try:
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    return data


def serve(mode, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(8)
    s.settimeout(20)
    count = 2 if mode == "answer-then-reset" else 1
    for i in range(count):
        conn, _ = s.accept()
        read_head(conn)
        if mode == "reset-awaiting":
            # The whole request is in; the "backend" dies before answering.
            time.sleep(0.3)
            linger_zero(conn)
            conn.close()
        elif mode == "slow":
            time.sleep(2)
            try:
                conn.sendall(RESPONSE)
            except OSError:
                pass  # the client has reset the connection by now
            conn.close()
        elif mode == "answer-then-reset":
            if i == 0:
                # Answered, and the server closes first: the TIME_WAIT stays on this side,
                # so the client can bind the same source port again at once.
                conn.sendall(RESPONSE)
                conn.close()
            else:
                time.sleep(0.2)
                linger_zero(conn)
                conn.close()
        elif mode == "answer-and-close":
            # Answer and close() at once. The socket is orphaned in FIN_WAIT2 afterwards, and
            # the kernel answers any new data arriving on it with RST.
            conn.sendall(RESPONSE)
            conn.close()
        else:
            sys.exit(f"unknown serve mode {mode}")
    s.close()


def bound_socket(lport):
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    c.bind(("0.0.0.0", lport))
    c.settimeout(5)
    return c


def client(mode, host, port, lport):
    if mode == "give-up":
        c = bound_socket(lport)
        c.connect((host, port))
        c.sendall(b"GET /slow HTTP/1.1\r\nHost: backend\r\nUser-Agent: impatient/1.0\r\n\r\n")
        time.sleep(0.5)  # no answer yet: give up, as a client with a 0.5 s timeout would
        linger_zero(c)
        c.close()
    elif mode == "reuse":
        for attempt in range(2):
            c = bound_socket(lport)  # the same source port both times
            c.connect((host, port))
            c.sendall(b"GET /item/%d HTTP/1.1\r\nHost: backend\r\n\r\n" % attempt)
            read_to_eof(c)
            c.close()
            time.sleep(0.5)
    elif mode == "stray-crlf":
        c = bound_socket(lport)
        c.connect((host, port))
        c.sendall(b"GET /page HTTP/1.1\r\nHost: backend\r\n\r\n")
        read_to_eof(c)  # the whole response, then the server's FIN
        # A stray CRLF after the exchange (RFC 9112 2.2 tells servers to ignore one), sent in
        # the same segment as our FIN: TCP_CORK holds the 2 bytes, shutdown() appends the FIN.
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        c.send(b"\r\n")
        c.shutdown(socket.SHUT_WR)
        read_to_eof(c)  # the server's kernel answers with RST
        c.close()
    else:
        sys.exit(f"unknown client mode {mode}")


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "client":
        client(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        sys.exit(__doc__)
