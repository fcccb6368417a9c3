#!/usr/bin/env python3
"""Edits a capture the way a lossy capture host would, for make-http-regressions.sh.

Frames are picked from tshark's reading of the capture; cuts are made with editcap; the swap
rewrites the pcap records in place (no packet is re-encoded).

  h6_regress_edit.py cut-body IN OUT PORT       two client data frames in the middle of the upload
  h6_regress_edit.py cut-tail IN OUT PORT       the last two server data frames before its FIN
  h6_regress_edit.py cut-response IN OUT PORT   the server frame answering the second request
  h6_regress_edit.py swap IN OUT PORT           the second request's frame and its response's frame

Prints the frame numbers it cut or swapped (numbers in IN).
"""
import struct
import subprocess
import sys


def rows(path):
    out = subprocess.run(
        ["tshark", "-r", path, "-T", "fields", "-E", "separator=\t", "-e", "frame.number",
         "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "tcp.len", "-e", "tcp.flags.fin",
         "-e", "tcp.payload"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        n, sport, dport, length, fin, payload = (line.split("\t") + [""] * 6)[:6]
        yield dict(frame=int(n), sport=int(sport), dport=int(dport), len=int(length or 0),
                   fin=fin in ("1", "True"), payload=bytes.fromhex(payload.replace(":", "")))


def data_frames(path, port, from_server):
    return [r for r in rows(path) if r["len"] and (r["sport"] == port) == from_server]


def cut(src, dst, frames):
    subprocess.run(["editcap", src, dst] + [str(f) for f in frames], check=True)
    print("cut frames " + " ".join(str(f) for f in frames))


def swap(src, dst, a, b):
    """Swaps the packet bytes of records a and b (1-based), keeping each slot's timestamp: the
    later packet is written first, with the earlier one's time, as a multi-interface capture
    may stamp it."""
    raw = open(src, "rb").read()
    endian = "<" if raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    header, off, recs = raw[:24], 24, []
    while off + 16 <= len(raw):
        ts_sec, ts_frac, incl, orig = struct.unpack(endian + "IIII", raw[off:off + 16])
        recs.append([ts_sec, ts_frac, raw[off + 16:off + 16 + incl], orig])
        off += 16 + incl
    ra, rb = recs[a - 1], recs[b - 1]
    ra[2], rb[2] = rb[2], ra[2]
    ra[3], rb[3] = rb[3], ra[3]
    with open(dst, "wb") as f:
        f.write(header)
        for ts_sec, ts_frac, data, orig in recs:
            f.write(struct.pack(endian + "IIII", ts_sec, ts_frac, len(data), orig) + data)
    print(f"swapped frames {a} and {b}")


def main(op, src, dst, port):
    port = int(port)
    if op == "cut-body":
        up = data_frames(src, port, False)
        # up[0] holds the head (and the body's start); cut two frames from the middle.
        mid = len(up) // 2
        cut(src, dst, [up[mid]["frame"], up[mid + 1]["frame"]])
    elif op == "cut-tail":
        down = data_frames(src, port, True)
        fin = next(r for r in rows(src) if r["fin"] and r["sport"] == port)
        if fin["len"]:
            raise SystemExit("cut-tail: the server's FIN carries data; nothing separate to keep")
        cut(src, dst, [down[-2]["frame"], down[-1]["frame"]])
    elif op == "cut-response":
        down = [r for r in data_frames(src, port, True) if r["payload"].startswith(b"HTTP/1.1 ")]
        if not down[1]["payload"].endswith(b"ok\n"):
            raise SystemExit("cut-response: the second response is not one whole frame")
        cut(src, dst, [down[1]["frame"]])
    elif op == "swap":
        all_rows = list(rows(src))
        reqs = [r for r in all_rows if r["len"] and r["dport"] == port and r["payload"].startswith(b"GET ")]
        req = reqs[1]
        nxt = next(r for r in all_rows if r["frame"] == req["frame"] + 1)
        if not (nxt["sport"] == port and nxt["payload"].startswith(b"HTTP/1.1 ")):
            raise SystemExit("swap: the frame after the second request is not its response")
        swap(src, dst, req["frame"], nxt["frame"])
    else:
        raise SystemExit(f"unknown operation {op}")


if __name__ == "__main__":
    main(*sys.argv[1:5])
