#!/usr/bin/env bash
# Rebuilds the capture + access-log pairs under captures/access-logs/: the balancer (nginx 1.22,
# then haproxy 2.6) proxies to misbehaving Python backends while tcpdump -i any runs on its host,
# and the balancer writes its own access log of the same requests.
#
#   sudo bash captures/make-accesslog-captures.sh
#
# Pairs:
#   nginx.pcap + nginx.log       nginx's own log, log_format with $remote_port, $upstream_addr,
#                                $upstream_status, $request_time, $upstream_response_time
#                                ($time_local: one-second precision): 200, 502 refused, 502 reset
#                                mid-head, 504 read timeout, 503 passed through, 499 client gave up
#   nginx.pcap + balancer.jsonl  the same requests as the balancer's JSON Lines export, written
#                                from nginx's log with the log host's clock 3.5 s AHEAD of the
#                                capture host (the script adds 3.5 s to every time: the offset
#                                lbdiag must find) and times in +08:00; plus a line of a client
#                                the capture never saw and a line that does not parse
#   nginx.pcap + balancer.csv    the same as CSV with a header row, clock 2.25 s BEHIND, UTC
#   haproxy.pcap + haproxy.log   haproxy's option httplog (stdout): 200, 503 refused (SC--),
#                                504 server timeout (sH--), 502 reset mid-head (SH--), 503
#                                passed through (----)
#   trace.pcap + trace.log       nginx sets X-Request-Id: $request_id for its backend and logs
#                                $request_id; three identical GET /flaky at once, twice, to a
#                                backend that resets one of each three: on the back leg only the
#                                trace id tells the lines apart. Then a refused and a reset backend.
#   trace.pcap + trace-alb.log   the same requests in the AWS ALB format, each with the
#                                X-Amzn-Trace-Id its client sent; clock 0.75 s AHEAD
#   hosts-client.pcap + hosts-backend.pcap + trace.log
#                                the same traffic captured on the client's link and on the
#                                backend's, the first moved 1.5 s ahead and the second 7.25 s
#                                behind with editcap -t (hosts.json: each line's frames on both)
#   nginx.pcap + balancer-alb.log  nginx.pcap's traffic in the AWS ALB format, written from
#                                balancer.jsonl, clock 4.5 s BEHIND (section alb: no root needed)
# Sections: `bash make-accesslog-captures.sh [base] [trace] [alb]`, all by default.
# Truth files (NAME.truth.json beside each log): for every 4xx/5xx line, the client, the request
# and response frames read with tshark, the class from the line itself, and the finding kinds
# that must explain it; tests/accesslog.rs checks lbdiag against them.
#
# Network: three namespaces. alc (client 10.72.0.1) -- alb (balancer: 10.72.0.2 in front,
# 10.72.1.2 behind; tcpdump runs here) -- als (backends 10.72.1.3). Offloads off.
# Needs root, iproute2, ethtool, tcpdump, tshark, curl, nginx, haproxy, python3. ~40 s.
set -euo pipefail

# Sections to make (default: all): base (nginx.*, haproxy.*, balancer.*), trace (trace.*,
# hosts-*), alb (balancer-alb.*, from the shipped balancer.jsonl; needs no root).
sections=" ${*:-base trace alb} "
want() { [[ $sections == *" $1 "* ]]; }

here=$(cd "$(dirname "$0")" && pwd)
tools=$here/tools
out=$here/access-logs
PY=$(command -v python3)
C=alc; B=alb; S=als
CA=10.72.0.1; BF=10.72.0.2; BB=10.72.1.2; S1=10.72.1.3
work=$(mktemp -d /tmp/alcap.XXXXXX)
chmod 755 "$work"
log() { printf '%s\n' "$*" | tee -a "$work/run.log"; }

want base || want trace || NO_NET=1
[ -n "${NO_NET:-}" ] || [ "$(id -u)" = 0 ] || { echo "run as root: sudo bash $0" >&2; exit 1; }
for tool in ip ethtool tcpdump tshark curl nginx haproxy ss; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

cleanup() {
  set +e
  for p in $(jobs -p); do kill "$p" 2>/dev/null; done   # this script's own jobs only
  [ -s "$work/nginx/nginx.pid" ] && kill -QUIT "$(cat "$work/nginx/nginx.pid")" 2>/dev/null
  [ -s "$work/nginx-trace/nginx.pid" ] && kill -QUIT "$(cat "$work/nginx-trace/nginx.pid")" 2>/dev/null
  sleep 0.3
  for ns in $C $B $S; do ip netns del $ns 2>/dev/null; done
  [ -n "${KEEP_WORK:-}" ] && echo "work dir kept: $work" || rm -rf "$work"
}
trap cleanup EXIT

# --- network
for ns in $C $B $S; do ip netns del $ns 2>/dev/null || true; ip netns add $ns; ip -n $ns link set lo up; done
ip link add alc0 netns $C type veth peer name alb0 netns $B
ip link add alb1 netns $B type veth peer name als0 netns $S
ip -n $C addr add $CA/24 dev alc0
ip -n $B addr add $BF/24 dev alb0
ip -n $B addr add $BB/24 dev alb1
ip -n $S addr add $S1/24 dev als0
for l in "$C alc0" "$B alb0" "$B alb1" "$S als0"; do
  set -- $l
  ip -n "$1" link set "$2" up
  ip netns exec "$1" ethtool -K "$2" tso off gso off gro off tx off >/dev/null 2>&1 || true
done
for ns in $C $B $S; do ip netns exec $ns sysctl -qw net.ipv6.conf.all.disable_ipv6=1; done

# --- helpers
wait_listen() { # addr port
  for _ in $(seq 50); do
    [ -n "$(ip netns exec $S ss -Hltn "src $1 and sport = :$2")" ] && return 0
    sleep 0.1
  done
  echo "nothing listens on $1:$2" >&2; return 1
}
cap=
cap_start() { # name filter
  : > "$work/$1.tcpdump.err"
  ip netns exec $B tcpdump -U --immediate-mode -n -s 4096 -B 16384 -Z root -i any -y LINUX_SLL2 \
    -w "$work/$1.pcap" "($2) and not net 127.0.0.0/8" 2>"$work/$1.tcpdump.err" &
  cap=$!
  for _ in $(seq 50); do grep -q "listening on" "$work/$1.tcpdump.err" && break; sleep 0.1; done
  sleep 0.3
  log "== $1"
}
cap_stop() { sleep 1; kill -INT "$cap" 2>/dev/null || true; wait "$cap" 2>/dev/null || true; }
peer() { # mode port seconds [options]: tools/proxy_peers.py server in als
  local mode=$1 port=$2 secs=$3; shift 3
  ip netns exec $S "$PY" "$tools/proxy_peers.py" server "$mode" $S1 "$port" "$secs" "$@" >>"$work/run.log" 2>&1 &
  wait_listen $S1 "$port"
}
status_peer() { # port code seconds
  ip netns exec $S "$PY" "$tools/accesslog_truth.py" status-server $S1 "$1" "$2" "$3" >>"$work/run.log" 2>&1 &
  wait_listen $S1 "$1"
}
curl_c() {
  local rc=0 code
  code=$(ip netns exec $C curl -sS -o /dev/null -w '%{http_code}' --max-time 15 "$@" 2>"$work/curl.err") || rc=$?
  log "curl $* -> status $code, exit $rc"
}
ports() { # front back...: the filter of a run's ports
  local f="" p
  for p in "$@"; do f="$f${f:+ or }tcp port $p"; done
  echo "$f"
}

if want base; then
# --- nginx: one server block per case, each with its own back port
ng=$work/nginx
mkdir -p "$ng/tmp"
cat > "$ng/nginx.conf" <<NGINX
worker_processes 1;
pid $ng/nginx.pid;
error_log $ng/error.log info;
events { worker_connections 256; }
http {
  log_format lbdiag '\$remote_addr:\$remote_port [\$time_local] "\$request" \$status \$body_bytes_sent up=\$upstream_addr ups=\$upstream_status rt=\$request_time urt=\$upstream_response_time';
  log_format export escape=json '{"msec":"\$msec","remote_addr":"\$remote_addr","remote_port":"\$remote_port","status":"\$status","upstream_status":"\$upstream_status","upstream_addr":"\$upstream_addr","request_time":"\$request_time","upstream_response_time":"\$upstream_response_time","request_method":"\$request_method","request_uri":"\$request_uri","host":"\$host","server_port":"\$server_port","server_addr":"\$server_addr"}';
  access_log $ng/access.log lbdiag;
  access_log $ng/export.log export;
  client_body_temp_path $ng/tmp/body;
  proxy_temp_path $ng/tmp/proxy;
  fastcgi_temp_path $ng/tmp/fastcgi;
  uwsgi_temp_path $ng/tmp/uwsgi;
  scgi_temp_path $ng/tmp/scgi;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_connect_timeout 2s;
  proxy_read_timeout 2s;
  server { listen $BF:8201; location / { proxy_pass http://$S1:9201; } }
  server { listen $BF:8202; location / { proxy_pass http://$S1:9202; } }
  server { listen $BF:8203; location / { proxy_pass http://$S1:9203; } }
  server { listen $BF:8204; location / { proxy_pass http://$S1:9204; } }
  server { listen $BF:8205; location / { proxy_pass http://$S1:9205; } }
  server { listen $BF:8206; location / { proxy_read_timeout 10s; proxy_pass http://$S1:9206; } }
}
NGINX
ip netns exec $B env TZ=UTC nginx -p "$ng" -c "$ng/nginx.conf" -e "$ng/error.log"
for _ in $(seq 50); do [ -s "$ng/nginx.pid" ] && break; sleep 0.1; done

peer ok 9201 20
peer reset-head 9203 20
peer slow 9204 20 --delay 5
status_peer 9205 503 20
peer slow 9206 20 --delay 5
cap_start nginx "$(ports 8201 8202 8203 8204 8205 8206 9201 9202 9203 9204 9205 9206)"
curl_c "http://$BF:8201/ok"
curl_c "http://$BF:8202/cart"                    # nothing listens on 9202: 502
curl_c "http://$BF:8203/invoice/7"               # reset mid-head: 502
curl_c "http://$BF:8204/search?q=chair"          # 5 s backend, 2 s read timeout: 504
curl_c "http://$BF:8205/maintenance"             # the backend's own 503
ip netns exec $C timeout 10 "$PY" "$tools/proxy_peers.py" give-up $BF 8206 /export 1 2>>"$work/run.log" || true
sleep 0.5
cap_stop
kill -QUIT "$(cat "$ng/nginx.pid")"; sleep 0.5
log "--- nginx access log"; tee -a "$work/run.log" < "$ng/access.log"

# --- haproxy
hp=$work/haproxy
mkdir -p "$hp"
cat > "$hp/haproxy.cfg" <<HAPROXY
global
  maxconn 100
defaults
  mode http
  log stdout format raw local0
  option httplog
  timeout connect 2s
  timeout client 10s
  timeout server 2s
  retries 1
  source $BB
frontend f8301
  bind $BF:8301
  default_backend b9301
backend b9301
  server s1 $S1:9301
frontend f8302
  bind $BF:8302
  default_backend b9302
backend b9302
  server s1 $S1:9302
frontend f8303
  bind $BF:8303
  default_backend b9303
backend b9303
  server s1 $S1:9303
frontend f8304
  bind $BF:8304
  default_backend b9304
backend b9304
  server s1 $S1:9304
frontend f8305
  bind $BF:8305
  default_backend b9305
backend b9305
  server s1 $S1:9305
HAPROXY
ip netns exec $B env TZ=UTC haproxy -db -f "$hp/haproxy.cfg" >"$hp/haproxy.log" 2>"$hp/haproxy.err" &
haproxy_pid=$!
sleep 0.5
peer ok 9301 20
peer reset-head 9303 20
peer slow 9304 20 --delay 5
status_peer 9305 503 20
cap_start haproxy "$(ports 8301 8302 8303 8304 8305 9301 9302 9303 9304 9305)"
curl_c "http://$BF:8301/ok"
curl_c "http://$BF:8302/cart"                    # refused twice (retries 1): 503 SC--
curl_c "http://$BF:8303/invoice/7"               # reset mid-head: 502 SH--
curl_c "http://$BF:8304/search?q=chair"          # timeout server 2s: 504 sH--
curl_c "http://$BF:8305/maintenance"             # the backend's own 503
cap_stop
kill "$haproxy_pid" 2>/dev/null; wait "$haproxy_pid" 2>/dev/null || true
log "--- haproxy log"; tee -a "$work/run.log" < "$hp/haproxy.log"

# --- pairs and truth
for n in nginx haproxy; do
  grep -q "^0 packets dropped by kernel" "$work/$n.tcpdump.err" || { echo "$n: tcpdump dropped frames" >&2; exit 1; }
done
mkdir -p "$work/out"
cp "$work/nginx.pcap" "$work/haproxy.pcap" "$work/out/"
cp "$ng/access.log" "$work/out/nginx.log"
grep -E '^[0-9.]+:[0-9]+ \[' "$hp/haproxy.log" > "$work/out/haproxy.log"
"$PY" "$tools/accesslog_truth.py" balancer-logs "$ng/export.log" "$work/out/balancer.jsonl" "$work/out/balancer.csv"
cat > "$work/kinds.json" <<'KINDS'
{
  "/cart": ["handshake_refused"],
  "/invoice/7": ["connection_reset", "malformed_response", "closed_before_response"],
  "/search?q=chair": ["slow_response", "no_response"],
  "/maintenance": ["error_status"],
  "/export": ["client_closed_early", "connection_reset", "no_response"],
  "/not-captured": []
}
KINDS
LF='$remote_addr:$remote_port [$time_local] "$request" $status $body_bytes_sent up=$upstream_addr ups=$upstream_status rt=$request_time urt=$upstream_response_time'
o=$work/out
"$PY" "$tools/accesslog_truth.py" truth "$o/nginx.pcap" "$o/nginx.log" nginx_log_format "$work/kinds.json" "$o/nginx.truth.json" -- --log-format "$LF"
"$PY" "$tools/accesslog_truth.py" truth "$o/nginx.pcap" "$o/balancer.jsonl" balancer_json "$work/kinds.json" "$o/balancer-jsonl.truth.json" --offset-ms 3500
"$PY" "$tools/accesslog_truth.py" truth "$o/nginx.pcap" "$o/balancer.csv" balancer_csv "$work/kinds.json" "$o/balancer-csv.truth.json" --offset-ms -2250
"$PY" "$tools/accesslog_truth.py" truth "$o/haproxy.pcap" "$o/haproxy.log" haproxy_httplog "$work/kinds.json" "$o/haproxy.truth.json"
mkdir -p "$out"
cp "$o"/* "$out/"
fi

# --- trace ids, and the same traffic captured on two hosts whose clocks disagree
# nginx sets X-Request-Id: $request_id on what it forwards and logs $request_id; each client sends
# its own X-Amzn-Trace-Id. Three tcpdumps: on the balancer (-i any), on the client's link (alc0)
# and on the backend's link (als0); the client's capture is then moved 1.5 s ahead with
# editcap -t and the backend's 7.25 s behind, as if taken on hosts with those clocks.
if want trace; then
tn=$work/nginx-trace
mkdir -p "$tn/tmp"
cat > "$tn/nginx.conf" <<NGINX
worker_processes 1;
pid $tn/nginx.pid;
error_log $tn/error.log info;
events { worker_connections 256; }
http {
  log_format trace '\$remote_addr:\$remote_port [\$time_local] "\$request" \$status up=\$upstream_addr ups=\$upstream_status rt=\$request_time rid=\$request_id';
  log_format export escape=json '{"msec":"\$msec","remote_addr":"\$remote_addr","remote_port":"\$remote_port","status":"\$status","upstream_status":"\$upstream_status","upstream_addr":"\$upstream_addr","request_time":"\$request_time","upstream_response_time":"\$upstream_response_time","request_method":"\$request_method","request_uri":"\$request_uri","server_port":"\$server_port","server_addr":"\$server_addr","amzn":"\$http_x_amzn_trace_id"}';
  access_log $tn/access.log trace;
  access_log $tn/export.log export;
  client_body_temp_path $tn/tmp/body;
  proxy_temp_path $tn/tmp/proxy;
  fastcgi_temp_path $tn/tmp/fastcgi;
  uwsgi_temp_path $tn/tmp/uwsgi;
  scgi_temp_path $tn/tmp/scgi;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header X-Request-Id \$request_id;
  proxy_connect_timeout 2s;
  proxy_read_timeout 2s;
  proxy_next_upstream off;
  server { listen $BF:8401; location / { proxy_pass http://$S1:9401; } }
  server { listen $BF:8402; location / { proxy_pass http://$S1:9402; } }
  server { listen $BF:8403; location / { proxy_pass http://$S1:9403; } }
}
NGINX
ip netns exec $B env TZ=UTC nginx -p "$tn" -c "$tn/nginx.conf" -e "$tn/error.log"
for _ in $(seq 50); do [ -s "$tn/nginx.pid" ] && break; sleep 0.1; done
ip netns exec $S "$PY" "$tools/accesslog_truth.py" flaky-server $S1 9401 20 >>"$work/run.log" 2>&1 &
wait_listen $S1 9401
peer reset-head 9403 20
tf="$(ports 8401 8402 8403 9401 9402 9403)"
: > "$work/hosts-client.tcpdump.err"; : > "$work/hosts-backend.tcpdump.err"
ip netns exec $C tcpdump -U --immediate-mode -n -s 4096 -B 16384 -Z root -i alc0 \
  -w "$work/hosts-client.raw.pcap" "$tf" 2>"$work/hosts-client.tcpdump.err" &
cap_client=$!
ip netns exec $S tcpdump -U --immediate-mode -n -s 4096 -B 16384 -Z root -i als0 \
  -w "$work/hosts-backend.raw.pcap" "$tf" 2>"$work/hosts-backend.tcpdump.err" &
cap_backend=$!
for f in hosts-client hosts-backend; do
  for _ in $(seq 50); do grep -q "listening on" "$work/$f.tcpdump.err" && break; sleep 0.1; done
done
cap_start trace "$tf"
# Three requests at once, twice: the flaky backend resets one of each three, so identical
# requests to one backend in the same second fail or not, and only the trace id tells which.
for round in 1 2; do
  for i in 1 2 3; do
    ip netns exec $C curl -sS -o /dev/null --max-time 10 \
      -H "X-Amzn-Trace-Id: Root=1-$(printf '%08x' $((0x6a4e0000 + round)))-$(printf '%024x' $((round * 10 + i)))" \
      "http://$BF:8401/flaky" 2>>"$work/curl.err" &
  done
  sleep 1.5
  log "round $round sent"
done
sleep 1
curl_c -H "X-Amzn-Trace-Id: Root=1-6a4e0003-000000000000000000000031" "http://$BF:8402/cart"       # refused: 502
curl_c -H "X-Amzn-Trace-Id: Root=1-6a4e0003-000000000000000000000032" "http://$BF:8403/invoice/7"  # reset mid-head: 502
cap_stop
for p in $cap_client $cap_backend; do kill -INT "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
kill -QUIT "$(cat "$tn/nginx.pid")"; sleep 0.5
log "--- trace access log"; tee -a "$work/run.log" < "$tn/access.log"
for n in trace hosts-client hosts-backend; do
  grep -q "^0 packets dropped by kernel" "$work/$n.tcpdump.err" || { echo "$n: tcpdump dropped frames" >&2; exit 1; }
done
CLIENT_SHIFT=1.5; BACKEND_SHIFT=-7.25
editcap -t "$CLIENT_SHIFT" "$work/hosts-client.raw.pcap" "$work/hosts-client.pcap"
editcap -t "$BACKEND_SHIFT" "$work/hosts-backend.raw.pcap" "$work/hosts-backend.pcap"
tq=$work/trace-out
mkdir -p "$tq"
cp "$work/trace.pcap" "$work/hosts-client.pcap" "$work/hosts-backend.pcap" "$tq/"
cp "$tn/access.log" "$tq/trace.log"
cat > "$work/trace-kinds.json" <<'KINDS'
{
  "/flaky": ["connection_reset", "closed_before_response"],
  "/cart": ["handshake_refused"],
  "/invoice/7": ["connection_reset", "malformed_response", "closed_before_response"]
}
KINDS
TLF='$remote_addr:$remote_port [$time_local] "$request" $status up=$upstream_addr ups=$upstream_status rt=$request_time rid=$request_id'
"$PY" "$tools/accesslog_truth.py" trace-truth "$tq/trace.pcap" "$tq/hosts-client.pcap" \
  "$tq/hosts-backend.pcap" "$tq/trace.log" "$work/trace-kinds.json" "$tq/trace.truth.json" \
  "$tq/hosts.json" "$CLIENT_SHIFT" "$BACKEND_SHIFT" -- --log-format "$TLF"
"$PY" "$tools/accesslog_truth.py" trace-alb-log "$tn/export.log" "$tq/trace-alb.log"
"$PY" "$tools/accesslog_truth.py" truth "$tq/trace.pcap" "$tq/trace-alb.log" aws_alb \
  "$work/trace-kinds.json" "$tq/trace-alb.truth.json" --offset-ms 750
mkdir -p "$out"
cp "$tq"/* "$out/"
fi

# --- the AWS ALB format: nginx.pcap's traffic rewritten from balancer.jsonl, clock 4.5 s behind
if want alb; then
"$PY" "$tools/accesslog_truth.py" alb-log "$out/balancer.jsonl" "$out/balancer-alb.log"
cat > "$work/alb-kinds.json" <<'KINDS'
{
  "/cart": ["handshake_refused"],
  "/invoice/7": ["connection_reset", "malformed_response", "closed_before_response"],
  "/search?q=chair": ["slow_response", "no_response"],
  "/maintenance": ["error_status"],
  "/export": ["client_closed_early", "connection_reset", "no_response"]
}
KINDS
"$PY" "$tools/accesslog_truth.py" truth "$out/nginx.pcap" "$out/balancer-alb.log" aws_alb \
  "$work/alb-kinds.json" "$out/balancer-alb.truth.json" --offset-ms -4500
fi

log "done: $(ls "$out" | tr '\n' ' ')"
