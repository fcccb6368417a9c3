#!/usr/bin/env python3
"""Reads the proxy captures made by captures/make-proxy-captures.sh with tshark (not lbdiag),
checks that each really shows its story, and writes NAME.truth.json beside it.

  proxy_truth.py --check-race CAPTURE   exit 0 when a request crossed the backend's idle FIN
  proxy_truth.py --dump CAPTURE         prints the frames as this script reads them
  proxy_truth.py WORK_DIR CAPTURES_DIR [NAME...]  checks every capture in WORK_DIR (or only
                                        those named), writes the truth files
"""
import json
import os
import subprocess
import sys

FIELDS = ["frame.number", "frame.time_epoch", "tcp.stream", "ip.src", "ip.dst", "tcp.srcport",
          "tcp.dstport", "tcp.flags.syn", "tcp.flags.ack", "tcp.flags.reset", "tcp.flags.fin",
          "tcp.len", "http.request.method", "http.request.uri", "http.response.code",
          "tcp.analysis.retransmission", "icmp.type", "ip.len"]

BALANCER_FRONT = "10.71.0.2"
BALANCER_BACK = "10.71.1.2"
CLIENT = "10.71.0.1"
BACKENDS = ("10.71.2.3", "10.71.2.4")


class Pkt:
    def __init__(self, values):
        v = dict(zip(FIELDS, values))
        b = lambda k: v[k] in ("1", "True")
        self.frame = int(v["frame.number"])
        self.time = float(v["frame.time_epoch"])
        self.stream = int(v["tcp.stream"]) if v["tcp.stream"] else None
        self.src, self.dst = v["ip.src"], v["ip.dst"]
        self.sport = int(v["tcp.srcport"] or 0)
        self.dport = int(v["tcp.dstport"] or 0)
        self.syn, self.ack, self.rst, self.fin = (b("tcp.flags.syn"), b("tcp.flags.ack"),
                                                  b("tcp.flags.reset"), b("tcp.flags.fin"))
        self.len = int(v["tcp.len"] or 0)
        self.method = v["http.request.method"]
        self.uri = v["http.request.uri"]
        self.code = int(v["http.response.code"]) if v["http.response.code"] else None
        self.retrans = bool(v["tcp.analysis.retransmission"])
        self.icmp = v["icmp.type"]
        self.iplen = int(v["ip.len"] or 0)

    def __repr__(self):
        flags = "".join(c for c, on in (("S", self.syn), ("A", self.ack), ("R", self.rst),
                                        ("F", self.fin)) if on)
        http = f" {self.method} {self.uri}" if self.method else (f" HTTP {self.code}" if self.code else "")
        return (f"{self.frame:3} {self.time:.3f} s{self.stream} {self.src}:{self.sport} > "
                f"{self.dst}:{self.dport} {flags} len={self.len}{' RETR' if self.retrans else ''}{http}")


def read(path):
    # No reassembly: a request's method shows on the frame that carries its head.
    args = ["tshark", "-r", path, "-o", "tcp.desegment_tcp_streams:FALSE", "-T", "fields",
            "-E", "separator=\t", "-E", "occurrence=f"]
    for port in range(8000, 8200):
        args += ["-d", f"tcp.port=={port},http"]
    for port in range(9000, 9200):
        args += ["-d", f"tcp.port=={port},http"]
    for f in FIELDS:
        args += ["-e", f]
    res = subprocess.run(args, capture_output=True, text=True, check=True)
    return [Pkt(line.split("\t")) for line in res.stdout.splitlines()]


def fail(name, why):
    sys.exit(f"proxy_truth: {name}: {why}")


def race_frames(pkts):
    """The crossing on a back connection: the balancer's request sent before the backend's FIN
    reached it (as the balancer saw it), or after the FIN left the backend (as the backend saw it),
    answered by the backend's RST with no response byte. Returns (request, fin, rst) or None."""
    for fin in pkts:
        if not (fin.fin and fin.src in BACKENDS):
            continue
        same = [p for p in pkts if p.stream == fin.stream]
        reqs = [p for p in same if p.method and p.src not in BACKENDS]
        rsts = [p for p in same if p.rst and p.src in BACKENDS]
        if not reqs or not rsts:
            continue
        req = reqs[-1]
        answered = [p for p in same if p.code and p.frame > req.frame]
        if answered or abs(req.time - fin.time) > 0.2:
            continue
        later = [r for r in rsts if r.frame > max(req.frame, fin.frame)]
        if later:
            return req, fin, later[0]
    return None


def main():
    if sys.argv[1] == "--check-race":
        got = race_frames(read(sys.argv[2]))
        print(f"race in {os.path.basename(sys.argv[2])}: {got}")
        sys.exit(0 if got else 1)
    if sys.argv[1] == "--dump":
        for p in read(sys.argv[2]):
            print(p)
        return
    write_all(sys.argv[1], sys.argv[2], sys.argv[3:])



BASE_MUST_NOT = ["malformed_response", "malformed_request", "conflicting_content_length",
                 "content_length_with_chunked", "malformed_chunked", "header_too_large",
                 "uri_too_long", "trace_method", "http_on_tls_port", "alb_trace_loop",
                 "alb_qps_limited", "capture_gap", "request_incomplete", "response_body_overrun",
                 "oversize_packet", "high_rtt", "zero_window", "tls_no_sni"]


def is_back(p):
    return p.src in BACKENDS or p.dst in BACKENDS


def one(name, pkts, what, pred):
    hits = [p for p in pkts if pred(p)]
    if not hits:
        fail(name, f"no frame for {what}")
    return hits[0]


def request(name, pkts, back, method, uri):
    return one(name, pkts, f"{'back' if back else 'front'} {method} {uri}",
               lambda p: p.method == method and p.uri == uri and is_back(p) == back)


def answer(name, pkts, req, code=None):
    return one(name, pkts, f"answer to frame {req.frame}",
               lambda p: p.stream == req.stream and p.code and p.frame > req.frame
               and (code is None or p.code == code))


def flag(name, pkts, stream, what, src_backend, after=0):
    return one(name, pkts, f"{what} on stream {stream}",
               lambda p: p.stream == stream and getattr(p, what) and p.frame > after
               and (p.src in BACKENDS) == src_backend)


def syn(name, pkts, stream):
    return one(name, pkts, f"SYN on stream {stream}", lambda p: p.stream == stream and p.syn and not p.ack)


def exp(kind, leg=None, status=None, port=None, frames=(), request=None, explained_by=None,
        severity=None):
    e = {"kind": kind}
    if leg:
        e["leg"] = leg
    if status:
        e["status"] = status
    if port:
        e["server_port"] = port
    e["frames"] = sorted(set(frames))
    if request:
        e["request"] = request
    if severity:
        e["severity"] = severity
    if explained_by:
        e["explained_by"] = [{"kind": k, "leg": l, "frames": sorted(set(f))} for k, l, f in explained_by]
    return e


def balancer(front_port, back, address=BALANCER_FRONT):
    return [{"address": address, "front": [f"{BALANCER_FRONT}:{front_port}"], "back": back}]


def truth(capture, story, expect, also=(), must_not=(), balancers=None, status_story=None,
          max_severity=None, vantage="proxy", key=None):
    t = {"capture": capture, "vantage": vantage, "story": story, "args": [], "healthy": False,
         "expect": expect, "also_acceptable": list(also),
         "must_not": [k for k in BASE_MUST_NOT + list(must_not) if k not in also],
         "warnings": []}
    if balancers is not None:
        t["balancers"] = balancers
    if status_story:
        t["status_story"] = status_story
    if max_severity:
        t["max_severity"] = max_severity
    if key:
        t["key_frames"] = key
    return t


def refused(name, pkts, port):
    """(SYN, RST) frame pairs of refusals to a back port."""
    out = []
    for r in pkts:
        if r.rst and r.src in BACKENDS and r.sport == port:
            s = syn(name, pkts, r.stream)
            if any(p.syn and p.ack and p.stream == r.stream for p in pkts):
                fail(name, f"stream {r.stream} was answered, not refused")
            out.append((s.frame, r.frame))
    return out


def case_refused(name, pkts):
    fr = request(name, pkts, False, "GET", "/cart")
    fa = answer(name, pkts, fr, 502)
    (s, r), = refused(name, pkts, 9001)
    if not fr.frame < s < r < fa.frame:
        fail(name, "frames out of story order")
    return truth(name, "nginx in front of one backend where nothing listens on 10.71.2.3:9001. The client's GET /cart "
                 f"(frame {fr.frame}) is forwarded: nginx's SYN (frame {s}) is answered by RST (frame {r}), and nginx "
                 f"answers the client 502 (frame {fa.frame}). One story: 502 because the backend refused the connection.",
                 [exp("handshake_refused", "back", 502, 9001, [s, r]),
                  exp("error_status", "front", 502, 8001, [fa.frame], "GET /cart",
                      [("handshake_refused", "back", [s, r])])],
                 must_not=["syn_unanswered", "connection_reset", "client_closed_early", "no_response",
                           "closed_before_response", "packet_loss"],
                 balancers=balancer(8001, ["10.71.2.3:9001"]),
                 status_story={"status": 502, "contains": ["10.71.2.3:9001", f"SYN frame {s} refused at frame {r}"]},
                 key={"front_request": fr.frame, "back_syn": s, "back_failure": r, "front_answer": fa.frame})


def case_connect_timeout(name, pkts):
    fr = request(name, pkts, False, "GET", "/search?q=lamp")
    fa = answer(name, pkts, fr, 504)
    syns = [p for p in pkts if p.syn and not p.ack and p.dport == 9002]
    if len(syns) < 2 or any(p.src in BACKENDS for p in pkts):
        fail(name, "want retransmitted SYNs and nothing from the backend")
    return truth(name, "nginx (proxy_connect_timeout 2s) in front of a backend whose namespace drops SYNs to 9002 "
                 f"(iptables DROP). GET /search?q=lamp (frame {fr.frame}); nginx's SYN (frame {syns[0].frame}) and its "
                 f"retransmission (frame {syns[1].frame}) get no answer; after 2 s nginx answers 504 (frame {fa.frame}).",
                 [exp("syn_unanswered", "back", 504, 9002, [syns[0].frame, syns[1].frame]),
                  exp("error_status", "front", 504, 8002, [fa.frame], "GET /search?q=lamp",
                      [("syn_unanswered", "back", [syns[0].frame])])],
                 must_not=["handshake_refused", "connection_reset", "client_closed_early", "closed_before_response"],
                 also=["syn_retransmitted"] if False else [],
                 balancers=balancer(8002, ["10.71.2.3:9002"]),
                 status_story={"status": 504, "contains": ["10.71.2.3:9002", f"SYN frame {syns[0].frame} never answered"]},
                 key={"front_request": fr.frame, "back_syn": syns[0].frame, "back_failure": syns[1].frame,
                      "front_answer": fa.frame})


def case_reset_head(name, pkts):
    fr = request(name, pkts, False, "GET", "/invoice/7")
    br = request(name, pkts, True, "GET", "/invoice/7")
    rst = flag(name, pkts, br.stream, "rst", True, br.frame)
    part = one(name, pkts, "partial head", lambda p: p.stream == br.stream and p.src in BACKENDS and p.len > 0)
    fa = answer(name, pkts, fr, 502)
    return truth(name, f"nginx forwards GET /invoice/7 (front frame {fr.frame}, back frame {br.frame}); the backend "
                 f"writes the status line and one header ({part.len} bytes, frame {part.frame}), no blank line, then "
                 f"resets (SO_LINGER 0, frame {rst.frame}). nginx answers the client 502 (frame {fa.frame}).",
                 [exp("connection_reset", "back", 502, 9003, [rst.frame]),
                  exp("error_status", "front", 502, 8003, [fa.frame], "GET /invoice/7",
                      [("connection_reset", "back", [rst.frame])])],
                 must_not=["client_closed_early", "closed_before_response", "no_response", "handshake_refused"],
                 balancers=balancer(8003, ["10.71.2.3:9003"]),
                 status_story={"status": 502, "contains": ["10.71.2.3:9003",
                                                   f"back request frame {br.frame}, reset at frame {rst.frame}"]},
                 key={"front_request": fr.frame, "back_request": br.frame, "back_failure": rst.frame,
                      "front_answer": fa.frame})


def case_reset_body(name, pkts):
    fr = request(name, pkts, False, "GET", "/report.csv")
    rst = one(name, pkts, "backend RST", lambda p: p.rst and p.src in BACKENDS)
    body = one(name, pkts, "backend head+part", lambda p: p.stream == rst.stream and p.src in BACKENDS and p.len > 0)
    head = one(name, pkts, "front head", lambda p: p.stream == fr.stream and p.src == BALANCER_FRONT and p.len > 0)
    ffin = flag(name, pkts, fr.stream, "fin", False, head.frame)
    if ffin.src != BALANCER_FRONT:
        fail(name, "want nginx to close the front connection first")
    return truth(name, "GET /report.csv (front frame %d). The backend sends a head announcing 10,000 body bytes and "
                 "1,000 of them (frame %d), then resets (frame %d). nginx had already passed the 200 head on "
                 "(frame %d, Content-Length 10000, no body byte) and closes the client's connection (FIN, frame %d): "
                 "the client got a 200 whose body was cut short, because the backend reset mid-body."
                 % (fr.frame, body.frame, rst.frame, head.frame, ffin.frame),
                 [exp("connection_reset", "back", None, 9013, [rst.frame]),
                  exp("response_body_truncated", "front", None, 8013, [ffin.frame], "GET /report.csv",
                      [(["connection_reset", "response_body_truncated"], "back", [rst.frame])])],
                 also=["response_body_truncated"],
                 must_not=["client_closed_early", "closed_before_response", "no_response", "handshake_refused",
                           "error_status"],
                 balancers=balancer(8013, ["10.71.2.3:9013"]),
                 key={"front_request": fr.frame, "back_failure": rst.frame, "front_answer": head.frame,
                      "front_close": ffin.frame})


def case_read_timeout(name, pkts, port, back_port, who):
    fr = request(name, pkts, False, "GET", "/search?q=chair")
    br = request(name, pkts, True, "GET", "/search?q=chair")
    fa = answer(name, pkts, fr, 504)
    close = one(name, pkts, "balancer closes the back connection",
                lambda p: p.stream == br.stream and p.src not in BACKENDS and (p.fin or p.rst))
    if not 1.9 < close.time - br.time < 2.2:
        fail(name, f"back close {close.time - br.time:.3f} s after the request, not at the 2 s timeout")
    how = "FIN" if close.fin else "RST"
    late = [p for p in pkts if p.stream == br.stream and p.code]
    kinds = ["slow_response", "no_response", "connection_reset"] if close.rst else ["slow_response", "no_response"]
    story = (f"{who} (read timeout 2 s) forwards GET /search?q=chair (front frame {fr.frame}, back frame {br.frame}) "
             f"to a backend that takes 5 s. At 2 s {who} gives up: it closes the back connection ({how}, frame "
             f"{close.frame}) and answers the client 504 (frame {fa.frame}). The back close is the balancer's timeout, "
             "a 504 (backend slower than the balancer's read timeout), not a client that gave up (499).")
    if late:
        story += f" The backend's late 200 (frame {late[0].frame}) meets a closed socket."
    return truth(name, story,
                 [exp(kinds, "back", 504, back_port, [br.frame, close.frame]),
                  exp("error_status", "front", 504, port, [fa.frame], "GET /search?q=chair",
                      [(kinds, "back", [close.frame])])],
                 also=["connection_reset"] if not close.rst else [],
                 must_not=["client_closed_early", "closed_before_response", "handshake_refused"],
                 balancers=balancer(port, [f"10.71.2.3:{back_port}"]),
                 # The story quotes the frames and how long the balancer waited (about its 2 s timeout).
                 status_story={"status": 504, "contains": [
                     f"10.71.2.3:{back_port}",
                     f"back request frame {br.frame}, the balancer gave up at frame {close.frame}",
                     f"waited {close.time - br.time:.1f}"]},
                 key={"front_request": fr.frame, "back_request": br.frame, "back_failure": close.frame,
                      "front_answer": fa.frame})


def case_gives_up(name, pkts):
    fr = request(name, pkts, False, "GET", "/export")
    br = request(name, pkts, True, "GET", "/export")
    cfin = flag(name, pkts, fr.stream, "fin", False, fr.frame)
    if cfin.src != CLIENT:
        fail(name, "the client must close first")
    bfin = flag(name, pkts, br.stream, "fin", False, br.frame)
    if not cfin.frame < bfin.frame:
        fail(name, "nginx must abort the back request after the client closed")
    return truth(name, f"The client sends GET /export (frame {fr.frame}), nginx forwards it (frame {br.frame}) to a "
                 f"backend that takes 5 s. After 1 s the client gives up (FIN, frame {cfin.frame}); nginx logs 499 and "
                 f"aborts the back request (FIN, frame {bfin.frame}). One 499 story: the back close is explained by the "
                 "client's; the backend's late answer meets a closed socket (RST).",
                 [exp("client_closed_early", "front", 499, 8005, [cfin.frame]),
                  exp("client_closed_early", "back", None, 9005, [bfin.frame],
                      explained_by=[("client_closed_early", "front", [cfin.frame])])],
                 also=["connection_reset"],
                 must_not=["error_status", "slow_response", "closed_before_response", "handshake_refused"],
                 balancers=balancer(8005, ["10.71.2.3:9005"]),
                 status_story={"status": 499, "contains": ["GET /export",
                                                   f"back request frame {br.frame}, aborted at frame {bfin.frame}"]},
                 key={"front_request": fr.frame, "back_request": br.frame, "front_close": cfin.frame,
                      "back_abort": bfin.frame})


def case_restart(name, pkts):
    expect, key = [], {"in_flight": [], "refused": [], "answered": []}
    fins = []
    for i in (1, 2, 3, 4):
        fr = request(name, pkts, False, "GET", f"/slow?job={i}")
        br = request(name, pkts, True, "GET", f"/slow?job={i}")
        fin = flag(name, pkts, br.stream, "fin", True, br.frame)
        fa = answer(name, pkts, fr, 502)
        fins.append(fin)
        expect.append(exp("error_status", "front", 502, 8008, [fa.frame], f"GET /slow?job={i}",
                          [(["server_restart", "closed_before_response"], "back", [fin.frame])]))
        key["in_flight"].append({"front_request": fr.frame, "back_request": br.frame, "back_failure": fin.frame,
                                 "front_answer": fa.frame})
    if max(f.time for f in fins) - min(f.time for f in fins) > 0.1:
        fail(name, "the in-flight connections did not die together")
    pairs = refused(name, pkts, 9008)
    if len(pairs) != 2:
        fail(name, f"want 2 refusals, got {pairs}")
    for i, (s, r) in zip((1, 2), pairs):
        fr = request(name, pkts, False, "GET", f"/status?try={i}")
        fa = answer(name, pkts, fr, 502)
        expect.append(exp("error_status", "front", 502, 8008, [fa.frame], f"GET /status?try={i}",
                          [(["handshake_refused", "server_restart"], "back", [r])]))
        key["refused"].append({"front_request": fr.frame, "back_syn": s, "back_failure": r, "front_answer": fa.frame})
    for i in (3, 4):
        fr = request(name, pkts, False, "GET", f"/status?try={i}")
        key["answered"].append({"front_request": fr.frame, "front_answer": answer(name, pkts, fr, 200).frame})
    expect.insert(0, exp("server_restart", "back", 502, 9008, [f.frame for f in fins]))
    return truth(name, "Four clients each send GET /slow?job=N through nginx to a backend that answers after 3 s. "
                 "1 s in, the backend is killed (SIGKILL): its kernel closes the four back connections within "
                 f"a millisecond (FIN, frames {', '.join(str(f.frame) for f in fins)}) and nginx answers each client "
                 f"502. 0.3 s later two more requests are refused (SYN answered by RST, frames "
                 f"{pairs[0][1]} and {pairs[1][1]}): 502. The backend is restarted 1 s after it died; the next two "
                 "requests are answered 200. One story: the backend restarted.",
                 expect, also=["closed_before_response", "handshake_refused"],
                 must_not=["keepalive_race", "client_closed_early", "no_response", "syn_unanswered"],
                 balancers=balancer(8008, ["10.71.2.3:9008"]),
                 status_story={"status": 502, "contains": ["10.71.2.3:9008"]}, key=key)


def case_refused_retried(name, pkts):
    fr = request(name, pkts, False, "GET", "/catalog")
    (s, r), = refused(name, pkts, 9009)
    br = request(name, pkts, True, "GET", "/catalog")
    if br.dst != "10.71.2.4":
        fail(name, "the retry must go to the second backend")
    fa = answer(name, pkts, fr, 200)
    return truth(name, "nginx with two upstream servers; the first (10.71.2.3:9009) refuses (SYN frame %d, RST frame %d), "
                 "nginx retries the second at once (GET /catalog, frame %d) and the client gets 200 (frame %d). The "
                 "refusal is worth a warning about the server, not an error of the request." % (s, r, br.frame, fa.frame),
                 [exp("handshake_refused", "back", None, 9009, [s, r])],
                 must_not=["error_status", "connection_reset", "no_response", "closed_before_response",
                           "client_closed_early"],
                 balancers=balancer(8009, ["10.71.2.3:9009", "10.71.2.4:9009"]), max_severity="warning",
                 key={"front_request": fr.frame, "back_syn": s, "back_failure": r, "back_retry": br.frame,
                      "front_answer": fa.frame})


def case_blackhole(name, pkts):
    fr = request(name, pkts, False, "POST", "/upload")
    br = request(name, pkts, True, "POST", "/upload")
    fa = answer(name, pkts, fr, 504)
    big = [p for p in pkts if p.stream == br.stream and p.iplen > 1280 and p.src not in BACKENDS]
    retr = [p for p in big if p.retrans]
    if not big or not retr or any(p.icmp for p in pkts):
        fail(name, "want full-size back segments retransmitted and no ICMP")
    if any(p.stream == br.stream and p.src in BACKENDS and p.len > 0 for p in pkts):
        fail(name, "the backend must never have answered")
    first = big[0]
    again = one(name, retr, "retransmission of the first big segment", lambda p: True)
    return truth(name, "A 20 KB POST /upload (front frame %d) reaches nginx over a clean front leg; nginx forwards "
                 "it (back head frame %d) over a router whose link to the backend carries 1280 bytes and whose ICMP "
                 "fragmentation-needed is dropped. The handshake's small packets get through; the 1500-byte segments "
                 "of the request (the first, frame %d, carries its head) are retransmitted (first retransmission "
                 "frame %d) and never acknowledged; at proxy_read_timeout 3s nginx "
                 "answers 504 (frame %d)." % (fr.frame, br.frame, first.frame, again.frame, fa.frame),
                 [exp("mtu_blackhole", "back", None, 9010, [again.frame]),
                  exp("error_status", "front", 504, 8010, [fa.frame], "POST /upload",
                      [("mtu_blackhole", "back", [again.frame])])],
                 also=["packet_loss", "no_response"],
                 must_not=["client_closed_early", "handshake_refused", "icmp_frag_needed", "request_body_truncated"],
                 balancers=balancer(8010, ["10.71.2.3:9010"]),
                 status_story={"status": 504, "contains": ["10.71.2.3:9010", f"retransmitted from frame {again.frame}"]},
                 key={"front_request": fr.frame, "back_request": br.frame, "back_failure": again.frame,
                      "front_answer": fa.frame})


def case_haproxy_refused(name, pkts):
    fr = request(name, pkts, False, "GET", "/cart")
    fa = answer(name, pkts, fr, 503)
    pairs = refused(name, pkts, 9101)
    if len(pairs) != 4:
        fail(name, f"want 4 refusals (retries 3), got {pairs}")
    if any(p.src == BALANCER_BACK for p in pkts):
        fail(name, "haproxy should use its front address on the back leg")
    return truth(name, "haproxy (retries 3, one address 10.71.0.2 on both legs) forwards GET /cart (frame %d) to a "
                 "backend where nothing listens: four SYNs, 1 s apart, each answered by RST (frames %s); then haproxy "
                 "answers 503 (frame %d, termination state SC)." % (fr.frame, ", ".join(f"{s}/{r}" for s, r in pairs), fa.frame),
                 [exp("handshake_refused", "back", None, 9101, list(p)) for p in pairs]
                 + [exp("error_status", "front", 503, 8101, [fa.frame], "GET /cart",
                        [("handshake_refused", "back", [pairs[-1][1]])])],
                 must_not=["syn_unanswered", "connection_reset", "client_closed_early", "no_response"],
                 balancers=balancer(8101, ["10.71.2.3:9101"]),
                 status_story={"status": 503, "contains": ["10.71.2.3:9101",
                                                   "SYN frame %d refused at frame %d" % pairs[-1]]},
                 key={"front_request": fr.frame, "back_refusals": pairs, "front_answer": fa.frame})


def case_race(name, pkts, fport, bport, method, who, retried=False):
    got = race_frames(pkts)
    if not got:
        fail(name, "no crossing")
    req, fin, rst = got
    uri = "/order" if method == "POST" else "/item"
    fr = request(name, pkts, False, method, uri)
    earlier = [p for p in pkts if p.fin and p.src in BACKENDS and p.frame < fin.frame]
    warm = [p for p in pkts if p.code == 200 and p.src in BACKENDS and p.frame < fin.frame]
    idle = fin.time - max(p.time for p in warm if p.stream == req.stream)
    story = (f"{who} keeps idle connections to the backend (10.71.2.3:{bport}), which closes connections idle for "
             "1.0 s; 50 ms each way between them. GET /warm-1 is answered, the backend closes that connection when "
             f"it has been idle 1.0 s (FIN frame {earlier[0].frame}: an ordinary idle close). GET /warm-2 is answered "
             f"on a new connection; 0.95 s later the client sends {method} {uri} (front frame {fr.frame}) and {who} "
             f"writes it on that idle connection (frame {req.frame}) just before the backend's idle FIN reaches it "
             f"(frame {fin.frame}, {idle:.2f} s after the last answer as seen here): they crossed. The backend's "
             f"kernel answers the request with RST (frame {rst.frame}); no response byte. ")
    key = {"front_request": fr.frame, "back_request": req.frame, "back_fin": fin.frame, "back_failure": rst.frame}
    expect = []
    if retried:
        retry = one(name, pkts, "retry", lambda p: p.method == method and p.uri == uri and is_back(p)
                    and p.stream != req.stream)
        fa = answer(name, pkts, fr, 200)
        story += (f"{who} retries the GET on a new connection (frame {retry.frame}) and the client gets 200 "
                  f"(frame {fa.frame}): a warning about the backend's keep-alive timeout, no error of the request.")
        expect.append(exp("keepalive_race", "back", None, bport, [req.frame, fin.frame, rst.frame], severity="warning"))
        key.update(back_retry=retry.frame, front_answer=fa.frame)
        extra = dict(max_severity="warning", must_not=["error_status"])
    else:
        fa = answer(name, pkts, fr, 502)
        story += (f"{who} does not retry a POST and answers the client 502 (frame {fa.frame}). The fix is a backend "
                  "keep-alive timeout longer than the balancer's idle timeout, not a hunt for a crash.")
        expect.append(exp("keepalive_race", "back", 502, bport, [req.frame, fin.frame, rst.frame]))
        expect.append(exp("error_status", "front", 502, fport, [fa.frame], f"{method} {uri}",
                          [("keepalive_race", "back", [req.frame, fin.frame])]))
        key["front_answer"] = fa.frame
        extra = dict(status_story={"status": 502, "contains": [
            f"10.71.2.3:{bport}", "keep-alive",
            f"back request frame {req.frame}, the backend's FIN at frame {fin.frame} crossed it, reset at frame "
            f"{rst.frame}", "on a reused connection"]}, must_not=[])
    return truth(name, story, expect,
                 must_not=["server_restart", "closed_before_response", "connection_reset", "client_closed_early",
                           "no_response", "handshake_refused"] + extra.pop("must_not"),
                 balancers=balancer(fport, [f"10.71.2.3:{bport}"]), key=key, **extra)


def case_backend_race(name, pkts):
    got = race_frames(pkts)
    if not got:
        fail(name, "no crossing")
    req, fin, rst = got
    if not fin.frame < req.frame:
        fail(name, "on the backend the FIN leaves before the request arrives")
    earlier = [p for p in pkts if p.fin and p.src in BACKENDS and p.frame < fin.frame]
    return truth(name, "The race of proxy-keepalive-race-post.pcap captured on the backend host (10.71.2.3:9006), "
                 "only the back leg, no balancer in view. The backend closes a connection idle for 1.0 s (FIN "
                 f"frame {earlier[0].frame}), later another (FIN frame {fin.frame}, 1.0 s after its last answer), and "
                 f"the balancer's POST /order arrives 50 ms after that FIN left (frame {req.frame}): the kernel answers "
                 f"RST (frame {rst.frame}), no response byte. The balancer answered 502: a keep-alive race.",
                 [exp("keepalive_race", None, 502, 9006, [fin.frame, req.frame, rst.frame])],
                 must_not=["server_restart", "closed_before_response", "connection_reset", "client_closed_early",
                           "no_response", "handshake_refused"],
                 balancers=[], vantage="backend",
                 key={"back_fin": fin.frame, "back_request": req.frame, "back_failure": rst.frame})


def case_two_balancers(name, pkts):
    """nginx on 10.71.0.2 (backends 10.71.2.3, sent from 10.71.1.2) and haproxy on 10.71.0.3
    (backends 10.71.2.4, sent from 10.71.0.3) on one host."""
    haproxy = "10.71.0.3"
    fr = request(name, pkts, False, "GET", "/search?q=sofa")
    br = request(name, pkts, True, "GET", "/search?q=sofa")
    fa = answer(name, pkts, fr, 504)
    close = one(name, pkts, "nginx closes the back connection",
                lambda p: p.stream == br.stream and p.src not in BACKENDS and (p.fin or p.rst))
    if fr.dst != BALANCER_FRONT or br.src != BALANCER_BACK or not 1.9 < close.time - br.time < 2.2:
        fail(name, "want nginx to give up on the slow backend at 2 s")
    pr = request(name, pkts, False, "GET", "/pay?order=17")
    pb = request(name, pkts, True, "GET", "/pay?order=17")
    rst = flag(name, pkts, pb.stream, "rst", True, pb.frame)
    pa = answer(name, pkts, pr, 502)
    if pr.dst != haproxy or pb.src != haproxy or pb.dst != "10.71.2.4":
        fail(name, "want haproxy on 10.71.0.3 in front of 10.71.2.4")
    if not fr.frame < pr.frame < pa.frame < fa.frame:
        fail(name, "want haproxy's 502 while nginx waits for the slow backend")
    health = [p for p in pkts if p.uri == "/health" and not is_back(p)]
    answered = [answer(name, pkts, h, 200) for h in health]
    if len({h.dst for h in health}) != 2 or len(answered) != len(health):
        fail(name, "want GET /health answered 200 through both balancers")
    return truth(name, "One host runs nginx (10.71.0.2:8201, backends on 10.71.2.3, sent from 10.71.1.2, "
                 "proxy_read_timeout 2s) and haproxy (10.71.0.3:8202, backends on 10.71.2.4, one address on both "
                 f"legs); one capture with -i any. GET /search?q=sofa (front frame {fr.frame}, back frame {br.frame}) "
                 f"goes to a backend that takes 5 s: nginx gives up at 2 s (FIN frame {close.frame}) and answers 504 "
                 f"(frame {fa.frame}). Meanwhile GET /pay?order=17 (front frame {pr.frame}, back frame {pb.frame}) "
                 f"reaches haproxy's backend, which sends half a head and resets (frame {rst.frame}): haproxy answers "
                 f"502 (frame {pa.frame}, termination SH). GET /health is answered 200 through both "
                 f"({len(health)} times). Each failure is explained by its own balancer's back leg; the summary lists "
                 "both balancers, each with only its own endpoints.",
                 [exp(["slow_response", "no_response"], "back", 504, 9201, [br.frame, close.frame]),
                  exp("error_status", "front", 504, 8201, [fa.frame], "GET /search?q=sofa",
                      [(["slow_response", "no_response"], "back", [close.frame])]),
                  exp("connection_reset", "back", 502, 9202, [rst.frame]),
                  exp("error_status", "front", 502, 8202, [pa.frame], "GET /pay?order=17",
                      [("connection_reset", "back", [rst.frame])])],
                 must_not=["client_closed_early", "closed_before_response", "handshake_refused", "keepalive_race",
                           "server_restart"],
                 balancers=[{"address": BALANCER_FRONT, "front": [f"{BALANCER_FRONT}:8201"],
                             "back": ["10.71.2.3:9201", "10.71.2.3:9211"]},
                            {"address": haproxy, "front": [f"{haproxy}:8202"],
                             "back": ["10.71.2.4:9202", "10.71.2.4:9212"]}],
                 status_story={"status": 504, "contains": [
                     "10.71.2.3:9201", f"back request frame {br.frame}, the balancer gave up at frame {close.frame}",
                     f"waited {close.time - br.time:.1f}", "502", "10.71.2.4:9202",
                     f"back request frame {pb.frame}, reset at frame {rst.frame}"]},
                 key={"nginx": {"front_request": fr.frame, "back_request": br.frame, "back_failure": close.frame,
                                "front_answer": fa.frame},
                      "haproxy": {"front_request": pr.frame, "back_request": pb.frame, "back_failure": rst.frame,
                                  "front_answer": pa.frame},
                      "health_answers": [a.frame for a in answered]})


def case_retries_some_fail(name, pkts):
    """Round robin over 10.71.2.3:9301 (refuses) and 10.71.2.4:9301: /catalog is retried, /checkout
    is not (proxy_next_upstream off)."""
    refusals = refused(name, pkts, 9301)
    fronts = [p for p in pkts if p.method and not is_back(p)]
    expect, key, hidden, failed, first_502 = [], [], 0, 0, None
    for fr in fronts:
        fa = answer(name, pkts, fr)
        during = [(s, r) for s, r in refusals if fr.frame < s < r < fa.frame]
        key.append({"request": f"{fr.method} {fr.uri}", "front_request": fr.frame, "front_answer": fa.frame,
                    "status": fa.code, "refused": during})
        if fa.code == 200:
            retry = [p for p in pkts if p.uri == fr.uri and is_back(p)]
            if during and (len(retry) != 1 or retry[0].dst != "10.71.2.4"):
                fail(name, f"{fr.uri}: want the retry on the healthy server")
            hidden += len(during)
            expect += [exp("handshake_refused", "back", None, 9301, [s, r], severity="warning")
                       for s, r in during]
        elif fa.code == 502:
            if len(during) != 1 or not fr.uri.startswith("/checkout"):
                fail(name, f"{fr.uri}: want one refusal behind the 502, on /checkout")
            (s, r), = during
            failed += 1
            first_502 = first_502 or (s, r)
            expect += [exp("handshake_refused", "back", 502, 9301, [s, r], severity="error"),
                       exp("error_status", "front", 502, 8301, [fa.frame], f"{fr.method} {fr.uri}",
                           [("handshake_refused", "back", [r])], severity="error")]
        else:
            fail(name, f"{fr.uri}: unexpected status {fa.code}")
    if hidden == 0 or failed == 0 or hidden + failed != len(refusals):
        fail(name, f"want refusals both hidden by a retry and behind a 502: {key}")
    return truth(name, "nginx with two upstream servers in round robin (max_fails=0, so the first is never "
                 "marked down): 10.71.2.3:9301, where nothing listens, and 10.71.2.4:9301, healthy. "
                 f"{len(fronts)} requests one after another: GET /catalog is retried on the healthy server when "
                 f"the first refuses ({hidden} refusal(s) hidden, the client gets 200: a warning about the server), "
                 f"GET /checkout has proxy_next_upstream off, so when it lands on the refusing server the client "
                 f"gets 502 ({failed} time(s): an error, explained by the refusal), and 200 when it does not.",
                 expect,
                 must_not=["syn_unanswered", "connection_reset", "client_closed_early", "no_response",
                           "closed_before_response", "server_restart"],
                 balancers=balancer(8301, ["10.71.2.3:9301", "10.71.2.4:9301"]),
                 status_story={"status": 502, "contains": ["GET /checkout", "10.71.2.3:9301", "refused",
                                                   "SYN frame %d refused at frame %d" % first_502]},
                 key={"requests": key})


CASES = {
    "proxy-refused": case_refused,
    "proxy-connect-timeout": case_connect_timeout,
    "proxy-reset-mid-head": case_reset_head,
    "proxy-reset-mid-body": case_reset_body,
    "proxy-read-timeout": lambda n, p: case_read_timeout(n, p, 8004, 9004, "nginx"),
    "proxy-haproxy-read-timeout": lambda n, p: case_read_timeout(n, p, 8104, 9104, "haproxy"),
    "proxy-client-gives-up": case_gives_up,
    "proxy-backend-restart": case_restart,
    "proxy-refused-retried": case_refused_retried,
    "proxy-mtu-blackhole": case_blackhole,
    "proxy-haproxy-refused": case_haproxy_refused,
    "proxy-keepalive-race-post": lambda n, p: case_race(n, p, 8006, 9006, "POST", "nginx"),
    "proxy-keepalive-race-get-retried": lambda n, p: case_race(n, p, 8007, 9007, "GET", "nginx", retried=True),
    "proxy-haproxy-keepalive-race": lambda n, p: case_race(n, p, 8106, 9106, "POST", "haproxy"),
    "backend-keepalive-race": case_backend_race,
    "proxy-two-balancers": case_two_balancers,
    "proxy-retries-some-fail": case_retries_some_fail,
}


def write_all(work, out, only=()):
    truths = {}
    for stem, make in CASES.items():
        if only and stem not in only:
            continue
        path = os.path.join(work, stem + ".pcap")
        if not os.path.exists(path):
            fail(stem, "capture missing")
        pkts = read(path)
        if any(p.src.startswith("127.") for p in pkts):
            fail(stem, "loopback traffic in the capture")
        t = make(stem + ".pcap", pkts)
        truths[stem] = t
        print(f"{stem}: {len(pkts)} frames, key frames {json.dumps(t.get('key_frames'))}")
    for stem, t in truths.items():
        with open(os.path.join(out, stem + ".truth.json"), "w") as f:
            json.dump(t, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
