#!/usr/bin/env python3
"""A two-port Ethernet bridge that holds every frame for a fixed time before passing it on:
latency without tc netem, which this kernel lacks. Runs for a bounded time.
    delay_bridge.py IF_A IF_B DELAY_MS SECONDS"""
import heapq
import select
import socket
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4

a_name, b_name, delay_ms, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
socks = {}
for name in (a_name, b_name):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((name, 0))
    socks[name] = s
other = {a_name: socks[b_name], b_name: socks[a_name]}
by_fd = {s.fileno(): name for name, s in socks.items()}
queue = []
seq = 0
end = time.time() + seconds
while time.time() < end:
    now = time.time()
    while queue and queue[0][0] <= now:
        _, _, out, frame = heapq.heappop(queue)
        out.send(frame)
    timeout = max(0.0, min(0.05, queue[0][0] - now)) if queue else 0.05
    ready, _, _ = select.select(list(socks.values()), [], [], timeout)
    for s in ready:
        frame, addr = s.recvfrom(65535)
        if addr[2] == PACKET_OUTGOING:
            continue
        seq += 1
        heapq.heappush(queue, (time.time() + delay_ms / 1000.0, seq, other[by_fd[s.fileno()]], frame))
