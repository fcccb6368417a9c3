#!/usr/bin/env python3
"""Access-log pairs for captures/make-accesslog-captures.sh: a backend that answers one status,
the balancer-format logs written from nginx's own log, and the truth files, whose frames come
from tshark (not lbdiag).

  accesslog_truth.py status-server ADDR PORT CODE SECONDS
  accesslog_truth.py flaky-server ADDR PORT SECONDS
  accesslog_truth.py balancer-logs NGINX_JSON OUT_JSONL OUT_CSV
  accesslog_truth.py alb-log BALANCER_JSONL OUT_LOG
  accesslog_truth.py trace-alb-log NGINX_JSON OUT_LOG
  accesslog_truth.py truth CAPTURE LOG FORMAT EXPECT_JSON OUT [--offset-ms N] [-- ARGS...]
  accesslog_truth.py trace-truth BALANCER CLIENT BACKEND LOG EXPECT_JSON OUT_TRUTH OUT_HOSTS
      CLIENT_SHIFT_S BACKEND_SHIFT_S -- ARGS...

EXPECT_JSON maps a request target to the finding kinds (any of) that must explain its line.
"""
import csv
import datetime
import json
import re
import shlex
import socket
import struct
import subprocess
import sys
import threading
import time

# The balancer-format logs' clocks: the JSON export runs 3.5 s ahead of the capture host and
# writes its times in +08:00; the CSV export runs 2.25 s behind, in UTC.
JSON_OFFSET = 3.5
CSV_OFFSET = -2.25
# The ALB-format rewrite of the same traffic: its clock 4.5 s behind the capture host's.
ALB_OFFSET = -4.5
# The ALB-format rewrite of the trace run: 0.75 s ahead.
TRACE_ALB_OFFSET = 0.75


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


def flaky_server(addr, port, seconds):
    """Answers 200 after 0.3 s, except every third connection (the 2nd, 5th, ...), which it
    resets once the request head is in: requests sent together get different fates, and only
    their trace ids tell their log lines apart on the back leg."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, int(port)))
    s.listen(16)
    s.settimeout(0.5)
    end = time.time() + float(seconds)

    def serve(c, n):
        c.settimeout(5)
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                chunk = c.recv(65536)
                if not chunk:
                    return
                buf += chunk
            time.sleep(0.3)
            if n % 3 == 1:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            body = b"ok\n"
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                      % len(body) + body)
        except OSError:
            pass
        finally:
            c.close()

    n = 0
    while time.time() < end and n < 64:
        try:
            c, _ = s.accept()
        except socket.timeout:
            continue
        threading.Thread(target=serve, args=(c, n), daemon=True).start()
        n += 1


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


def alb_time(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


def alb_line(end, client, port, target, status, ups, rt, urt, method, uri, trace, front):
    """One line of the AWS ALB access log for a request the balancer ended at `end`."""
    answered = ups not in ("", "-")
    tpt = urt if answered and urt not in ("", "-") else "-1"
    return " ".join([
        "http", alb_time(end), "app/lbdiag-test/50dc6c495c0c9188", "%s:%s" % (client, port),
        target if target not in ("", "-") else "-",
        "0.000", tpt, "0.000" if answered else "-1", str(status), ups if answered else "-",
        "120", "250", '"%s http://%s%s HTTP/1.1"' % (method, front, uri), '"curl/7.88.1"',
        "-", "-",
        "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/lbdiag/73e2d6bc24d8a067",
        '"%s"' % (trace or "-"), '"-"', '"-"', "0", alb_time(end - float(rt)),
        '"forward"', '"-"', '"-"', '"%s"' % (target or "-"), '"%s"' % (ups or "-"), '"-"', '"-"',
    ]) + "\n"


def alb_log(balancer_jsonl, out):
    """nginx.pcap's traffic in the ALB format, from the JSON Lines export (whose clock is
    JSON_OFFSET ahead): every line that parses, clock ALB_OFFSET from the capture host's."""
    with open(out, "w") as f:
        for text in open(balancer_jsonl):
            try:
                r = json.loads(text)
                int(r["client_port"])
                t = datetime.datetime.fromisoformat(r["time"]).timestamp()
            except (ValueError, KeyError):
                continue
            if r["request_uri"] == "/not-captured":
                continue
            f.write(alb_line(t - JSON_OFFSET + ALB_OFFSET, r["client_ip"], r["client_port"],
                             r["upstream_addr"], r["status"], str(r["upstream_status"]),
                             r["request_time"], str(r["upstream_response_time"]),
                             r["request_method"], r["request_uri"], None,
                             "%s:%s" % (r["vip_addr"], r["slb_vport"])))


def trace_alb_log(nginx_json, out):
    """The trace run's traffic in the ALB format, each line with the X-Amzn-Trace-Id its client
    sent (the balancer forwarded it to the backend)."""
    with open(out, "w") as f:
        for text in open(nginx_json):
            if not text.strip():
                continue
            r = json.loads(text)
            f.write(alb_line(float(r["msec"]) + TRACE_ALB_OFFSET, r["remote_addr"],
                             r["remote_port"], r["upstream_addr"], int(r["status"]),
                             r["upstream_status"] or "-", r["request_time"],
                             r["upstream_response_time"] or "-", r["request_method"],
                             r["request_uri"], r["amzn"] if r["amzn"] != "-" else None,
                             "%s:%s" % (r["server_addr"], r["server_port"])))


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
    if fmt == "aws_alb":
        f = shlex.split(text)
        ip, port = f[3].rsplit(":", 1)
        status = int(f[8])
        uri = f[12].split(" ")[1]
        if "://" in uri:
            rest = uri.split("://", 1)[1]
            uri = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        return {"status": status, "client_ip": ip, "client_port": port, "target": uri,
                "class": classify(status, f[9])}
    if fmt == "trace":
        m = TRACE_LINE.match(text)
        status, ups = int(m["status"]), m["ups"]
        return {"status": status, "client_ip": m["ip"], "client_port": m["port"],
                "target": m["request"].split(" ")[1], "class": classify(status, ups),
                "ups": ups, "up": m["up"], "rid": m["rid"]}
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


# The trace run's access log format (see make-accesslog-captures.sh).
TRACE_LINE = re.compile(r'(?P<ip>[0-9.]+):(?P<port>\d+) \[[^]]+\] "(?P<request>[^"]*)" '
                        r'(?P<status>\d+) up=(?P<up>\S+) ups=(?P<ups>.*?) rt=\S+ rid=(?P<rid>\S+)$')

TRACE_FIELDS = ["frame.number", "tcp.stream", "ip.src", "tcp.srcport", "ip.dst", "tcp.dstport",
                "tcp.flags.syn", "tcp.flags.ack", "http.request.method", "http.response.code",
                "http.request.line"]


def trace_frames(capture):
    out = subprocess.run(["tshark", "-r", capture, "-T", "fields", "-E", "separator=\t",
                          "-E", "occurrence=a", "-E", "aggregator=|",
                          *sum([["-e", f] for f in TRACE_FIELDS], [])],
                         check=True, capture_output=True, text=True).stdout
    return [dict(zip(TRACE_FIELDS, l.split("\t"))) for l in out.splitlines()]


def legs(pkts, client, backend, rid):
    """The front request (by client ip:port) and its response, and the back request (by its
    X-Request-Id), its response, or the SYN a refused backend answered with a reset."""
    front = [p for p in pkts if p["http.request.method"]
             and "%s:%s" % (p["ip.src"], p["tcp.srcport"]) == client]
    back = [p for p in pkts if p["http.request.method"]
            # tshark writes each header line's CRLF as the four characters \r\n.
            and ("X-Request-Id: %s\\r\\n" % rid) in p["http.request.line"]]

    def answer(req):
        if not req:
            return None
        r = [p for p in pkts if p["tcp.stream"] == req[0]["tcp.stream"]
             and p["http.response.code"]]
        return int(r[0]["frame.number"]) if r else None
    out = {}
    if front:
        out["request_frame"] = int(front[0]["frame.number"])
        out["response_frame"] = answer(front)
    if back:
        out["back_request_frame"] = int(back[0]["frame.number"])
        out["back_response_frame"] = answer(back)
    elif backend:
        ip, port = backend.rsplit(":", 1)
        syn = [p for p in pkts if p["ip.dst"] == ip and p["tcp.dstport"] == port
               and p["tcp.flags.syn"] in ("1", "True") and p["tcp.flags.ack"] in ("0", "False")]
        if syn:
            out["back_syn_frame"] = int(syn[-1]["frame.number"])
    return out


def trace_truth(balancer, client_cap, backend_cap, log, expect_json, out_truth, out_hosts,
                client_shift, backend_shift, args):
    expect = json.load(open(expect_json))
    b, c, s = trace_frames(balancer), trace_frames(client_cap), trace_frames(backend_cap)
    lines, hosts = [], []
    for n, text in enumerate(open(log), 1):
        line = parse("trace", text)
        if line is None or line["status"] < 400:
            continue
        client = "%s:%s" % (line["client_ip"], line["client_port"])
        base = {"line": n, "status": line["status"], "class": line["class"], "client": client,
                "target": line["target"], "backend": line["up"], "trace_id": line["rid"],
                "kinds": expect[line["target"]]}
        on_b = legs(b, client, line["up"], line["rid"])
        lines.append(dict(base, matched=True, **on_b))
        front = legs(c, client, None, line["rid"])
        back = legs(s, "-", line["up"], line["rid"])
        hosts.append(dict(base, client_capture=front, backend_capture=back))
    with open(out_truth, "w") as f:
        json.dump({"capture": balancer.rsplit("/", 1)[-1], "log": log.rsplit("/", 1)[-1],
                   "format": "nginx_log_format", "args": args, "lines": lines}, f, indent=2)
        f.write("\n")
    # Log clock minus capture clock: the script moved each capture's clock by its shift.
    with open(out_hosts, "w") as f:
        json.dump({"log": log.rsplit("/", 1)[-1], "args": args,
                   "client_capture": client_cap.rsplit("/", 1)[-1],
                   "client_offset_ms": -float(client_shift) * 1000,
                   "backend_capture": backend_cap.rsplit("/", 1)[-1],
                   "backend_offset_ms": -float(backend_shift) * 1000,
                   "lines": hosts}, f, indent=2)
        f.write("\n")


def main():
    cmd = sys.argv[1]
    if cmd == "status-server":
        status_server(*sys.argv[2:6])
    elif cmd == "flaky-server":
        flaky_server(*sys.argv[2:5])
    elif cmd == "balancer-logs":
        balancer_logs(*sys.argv[2:5])
    elif cmd == "alb-log":
        alb_log(*sys.argv[2:4])
    elif cmd == "trace-alb-log":
        trace_alb_log(*sys.argv[2:4])
    elif cmd == "trace-truth":
        rest = sys.argv[2:]
        i = rest.index("--")
        trace_truth(*rest[:9], rest[i + 1:])
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
