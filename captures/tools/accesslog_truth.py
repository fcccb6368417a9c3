#!/usr/bin/env python3
"""Access-log pairs for captures/make-accesslog-captures.sh: a backend that answers one status,
the balancer-format logs written from nginx's own log, and the truth files, whose frames come
from tshark (not lbdiag).

  accesslog_truth.py status-server ADDR PORT CODE SECONDS
  accesslog_truth.py balancer-logs NGINX_JSON OUT_JSONL OUT_CSV
  accesslog_truth.py truth CAPTURE LOG FORMAT EXPECT_JSON OUT [--offset-ms N] [-- ARGS...]

EXPECT_JSON maps a request target to the finding kinds (any of) that must explain its line.
"""
import csv
import datetime
import json
import socket
import subprocess
import sys
import threading
import time

# The balancer-format logs' clocks: the JSON export runs 3.5 s ahead of the capture host and
# writes its times in +08:00; the CSV export runs 2.25 s behind, in UTC.
JSON_OFFSET = 3.5
CSV_OFFSET = -2.25


def status_server(addr, port, code, seconds):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, int(port)))
    s.listen(16)
    s.settimeout(0.5)
    end = time.time() + float(seconds)
    reason = {404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}
    body = b"unavailable\n"

    def serve(c):
        c.settimeout(5)
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                chunk = c.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head = "HTTP/1.1 %s %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (
                code, reason.get(int(code), "Error"), len(body))
            c.sendall(head.encode() + body)
        except OSError:
            pass
        finally:
            c.close()

    while time.time() < end:
        try:
            c, _ = s.accept()
        except socket.timeout:
            continue
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def iso(t, east_hours):
    tz = datetime.timezone(datetime.timedelta(hours=east_hours))
    return datetime.datetime.fromtimestamp(t, tz).isoformat(timespec="milliseconds")


def balancer_logs(nginx_json, out_jsonl, out_csv):
    rows = [json.loads(l) for l in open(nginx_json) if l.strip()]
    fields = ["time", "client_ip", "client_port", "status", "upstream_status", "upstream_addr",
              "request_time", "upstream_response_time", "tcpinfo_rtt", "request_method",
              "request_uri", "http_host", "slb_vport", "vip_addr"]

    def row(r, offset, east):
        return {
            "time": iso(float(r["msec"]) + offset, east),
            "client_ip": r["remote_addr"], "client_port": r["remote_port"],
            "status": int(r["status"]), "upstream_status": r["upstream_status"] or "-",
            "upstream_addr": r["upstream_addr"] or "-", "request_time": float(r["request_time"]),
            "upstream_response_time": r["upstream_response_time"] or "-", "tcpinfo_rtt": 0,
            "request_method": r["request_method"], "request_uri": r["request_uri"],
            "http_host": r["host"], "slb_vport": int(r["server_port"]), "vip_addr": r["server_addr"],
        }

    with open(out_jsonl, "w") as f:
        for r in rows:
            f.write(json.dumps(row(r, JSON_OFFSET, 8)) + "\n")
        # A line no capture holds: another client, in the same minute.
        lost = row(rows[-1], JSON_OFFSET, 8)
        lost.update(client_ip="10.72.9.9", client_port=40000, status=502, upstream_status="-",
                    request_uri="/not-captured")
        f.write(json.dumps(lost) + "\n")
        f.write("{\"time\": \"not a time\", \"status\": 502}\n")
    with open(out_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow(row(r, CSV_OFFSET, 0))


FIELDS = ["frame.number", "frame.time_epoch", "tcp.stream", "ip.src", "tcp.srcport", "ip.dst",
          "tcp.dstport", "http.request.method", "http.request.uri", "http.response.code"]


def frames(capture):
    out = subprocess.run(["tshark", "-r", capture, "-T", "fields", "-E", "separator=\t",
                          *sum([["-e", f] for f in FIELDS], [])],
                         check=True, capture_output=True, text=True).stdout
    return [dict(zip(FIELDS, l.split("\t"))) for l in out.splitlines()]


def truth(capture, log, fmt, expect_json, out, offset_ms, args):
    sys.path.insert(0, __file__.rsplit("/", 2)[0])
    expect = json.load(open(expect_json))
    pkts = frames(capture)
    lines = []
    for n, text in enumerate(open(log), 1):
        line = parse(fmt, text)
        if line is None or line["status"] < 400:
            continue
        client = "%s:%s" % (line["client_ip"], line["client_port"])
        req = [p for p in pkts if p["http.request.method"]
               and "%s:%s" % (p["ip.src"], p["tcp.srcport"]) == client]
        entry = {"line": n, "status": line["status"], "class": line["class"],
                 "client": client, "target": line["target"]}
        if not req:
            entry["matched"] = False
            lines.append(entry)
            continue
        stream = req[0]["tcp.stream"]
        resp = [p for p in pkts if p["tcp.stream"] == stream and p["http.response.code"]]
        entry.update(matched=True, request_frame=int(req[0]["frame.number"]),
                     response_frame=int(resp[0]["frame.number"]) if resp else None,
                     kinds=expect[line["target"]])
        lines.append(entry)
    doc = {"capture": capture.rsplit("/", 1)[-1], "log": log.rsplit("/", 1)[-1], "format": fmt,
           "args": args, "lines": lines}
    if offset_ms is not None:
        doc["clock_offset_ms"] = offset_ms
    with open(out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


def last_status(ups):
    vals = [v.strip() for g in ups.split(" : ") for v in g.split(",") if v.strip()]
    return vals[-1] if vals else "-"


def classify(status, ups):
    last = last_status(ups)
    if not last.isdigit():
        return "no_response"
    return "passed_through" if int(last) == status else "changed"


def parse(fmt, text):
    """Reads a line of the formats the script writes, independently of lbdiag."""
    text = text.strip()
    if not text:
        return None
    if fmt == "balancer_json":
        try:
            r = json.loads(text)
            int(r["client_port"])
        except (ValueError, KeyError):
            return None
        return {"status": int(r["status"]), "client_ip": r["client_ip"],
                "client_port": r["client_port"], "target": r["request_uri"],
                "class": classify(int(r["status"]), str(r["upstream_status"]))}
    if fmt == "balancer_csv":
        if text.startswith("time,"):
            return None
        r = next(csv.reader([text]))
        return {"status": int(r[3]), "client_ip": r[1], "client_port": r[2], "target": r[10],
                "class": classify(int(r[3]), r[4])}
    if fmt == "nginx_log_format":
        # $remote_addr:$remote_port [$time_local] "$request" $status ... ups=$upstream_status rt=
        addr, rest = text.split(" [", 1)
        ip, port = addr.rsplit(":", 1)
        request = rest.split('"')[1]
        status = int(rest.split('" ', 1)[1].split(" ")[0])
        ups = rest.split(" ups=", 1)[1].split(" rt=")[0]
        return {"status": status, "client_ip": ip, "client_port": port,
                "target": request.split(" ")[1], "class": classify(status, ups)}
    if fmt == "haproxy_httplog":
        t = text.split()
        ip, port = t[0].rsplit(":", 1)
        timers, status, term = t[4].split("/"), int(t[5]), t[9]
        answered = int(timers[3]) >= 0
        cls = ("changed" if term[0] in "PI" else "passed_through") if answered else "no_response"
        request = text.split('"')[1]
        return {"status": status, "client_ip": ip, "client_port": port,
                "target": request.split(" ")[1], "class": cls}
    raise SystemExit("unknown format " + fmt)


def main():
    cmd = sys.argv[1]
    if cmd == "status-server":
        status_server(*sys.argv[2:6])
    elif cmd == "balancer-logs":
        balancer_logs(*sys.argv[2:5])
    elif cmd == "truth":
        rest = sys.argv[2:]
        args = []
        if "--" in rest:
            args = rest[rest.index("--") + 1:]
            rest = rest[:rest.index("--")]
        offset = None
        if "--offset-ms" in rest:
            i = rest.index("--offset-ms")
            offset = float(rest[i + 1])
            rest = rest[:i] + rest[i + 2:]
        truth(*rest[:5], offset, args)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
