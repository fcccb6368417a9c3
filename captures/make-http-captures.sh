#!/usr/bin/env bash
# Rebuilds lbdiag's HTTP captures with real software: nginx 1.22 rejecting requests (a 40 KB
# header, a 40 KB URI, TRACE, plain HTTP on its TLS port, a stalled request head, a malformed
# request line, a truncated upload), small Python backends and clients that break HTTP/1.x on
# purpose (tools/h6_http_peers.py), and one healthy capture (keep-alive, HEAD, 204, 304,
# 100-continue, pipelining, chunked with an extension and a trailer). Each capture is written
# beside its NAME.truth.json (tools/h6_http_truth.py, evidence frames read with tshark).
#
#   sudo bash captures/make-http-captures.sh
#
# Needs root, iproute2, ethtool, tcpdump, tshark, curl, nginx, openssl, python3. Everything runs
# in two network namespaces joined by a veth pair: h6cli (10.60.0.1, where tcpdump captures)
# and h6srv (10.60.0.2). nginx runs with its own prefix, config and pid file in a temp dir.
# Idempotent: the namespaces are recreated, the captures are built in a temp dir and only
# replace the ones in captures/ when every one of them came out as intended. About 90 s.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tools=$here/tools
PY=$(command -v python3)
C=h6cli; S=h6srv; CA=10.60.0.1; SA=10.60.0.2
work=$(mktemp -d /tmp/h6http.XXXXXX)
chmod 755 "$work"
log() { printf '%s\n' "$*" | tee -a "$work/run.log"; }

[ "$(id -u)" = 0 ] || { echo "run as root: sudo bash $0" >&2; exit 1; }
for tool in ip tcpdump tshark curl nginx openssl ss; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
command -v ethtool >/dev/null || apt-get install -y ethtool >/dev/null

cleanup() {
  set +e
  for p in $(jobs -p); do kill "$p" 2>/dev/null; done   # this script's own unfinished jobs only
  if [ -s "$work/nginx/nginx.pid" ]; then kill -QUIT "$(cat "$work/nginx/nginx.pid")" 2>/dev/null; sleep 0.3; fi
  ip netns del $C 2>/dev/null; ip netns del $S 2>/dev/null
  [ -n "${KEEP_WORK:-}" ] && echo "work dir kept: $work" || rm -rf "$work"
}
trap cleanup EXIT

# --- network: two namespaces and a veth pair, offloads off so frames are what went on the wire
ip netns del $C 2>/dev/null || true
ip netns del $S 2>/dev/null || true
ip netns add $C
ip netns add $S
ip link add h6c0 netns $C type veth peer name h6s0 netns $S
ip -n $C addr add $CA/24 dev h6c0
ip -n $S addr add $SA/24 dev h6s0
for ns_dev in "$C h6c0" "$S h6s0"; do
  set -- $ns_dev
  ip -n "$1" link set lo up
  ip -n "$1" link set "$2" up
  ip netns exec "$1" ethtool -K "$2" tso off gso off gro off >/dev/null
  ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
done

# --- nginx in h6srv: 80 and an ssl listener on 443 with a certificate made now
ng=$work/nginx
mkdir -p "$ng/www" "$ng/tmp"
for p in a b c; do printf 'page %s\n' "$p" > "$ng/www/$p.html"; done
printf '<html><body>index</body></html>\n' > "$ng/www/index.html"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=backend.test" \
  -addext "subjectAltName=DNS:backend.test,IP:$SA" \
  -keyout "$ng/key.pem" -out "$ng/cert.pem" 2>/dev/null
cat > "$ng/nginx.conf" <<NGINX
worker_processes 1;
pid $ng/nginx.pid;
error_log $ng/error.log info;
events { worker_connections 64; }
http {
  access_log $ng/access.log;
  client_body_temp_path $ng/tmp/body;
  proxy_temp_path $ng/tmp/proxy;
  fastcgi_temp_path $ng/tmp/fastcgi;
  uwsgi_temp_path $ng/tmp/uwsgi;
  scgi_temp_path $ng/tmp/scgi;
  client_header_timeout 3s;
  large_client_header_buffers 4 8k;
  keepalive_timeout 15s;
  server {
    listen 80;
    listen 443 ssl;
    server_name backend.test;
    ssl_certificate $ng/cert.pem;
    ssl_certificate_key $ng/key.pem;
    root $ng/www;
    location = /empty { return 204; }
    # Uploads go to a small Python backend: nginx reads the whole body before passing it on.
    location = /upload { proxy_pass http://127.0.0.1:8090; }
  }
}
NGINX
ip netns exec $S nginx -p "$ng" -c "$ng/nginx.conf" -e "$ng/error.log"
for _ in $(seq 50); do [ -s "$ng/nginx.pid" ] && break; sleep 0.1; done

# --- helpers
wait_listen() { # port: until something listens on it in h6srv (5 s at most)
  for _ in $(seq 50); do
    [ -n "$(ip netns exec $S ss -Hltn "sport = :$1")" ] && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2; return 1
}
cap_pid=
cap_start() { # name filter
  : > "$work/$1.tcpdump.err"
  ip netns exec $C tcpdump -U --immediate-mode -n -s 0 -Z root -i h6c0 -w "$work/$1.pcap" "$2" \
    2>"$work/$1.tcpdump.err" &
  cap_pid=$!
  for _ in $(seq 50); do grep -q "listening on" "$work/$1.tcpdump.err" && break; sleep 0.1; done
  sleep 0.3
  log "== $1"
}
cap_stop() { # [seconds to wait first]
  sleep "${1:-1}"
  kill -INT "$cap_pid"; wait "$cap_pid" || true
}
server_pid=
server() { # mode port [options]: a Python peer in h6srv, bounded by --count and --timeout
  local mode=$1 port=$2; shift 2
  ip netns exec $S "$PY" "$tools/h6_http_peers.py" server "$mode" "$port" "$@" >>"$work/run.log" 2>&1 &
  server_pid=$!
  wait_listen "$port"
}
server_done() { wait "$server_pid" || true; }
client() { # mode port: a Python client in h6cli
  ip netns exec $C timeout 20 "$PY" "$tools/h6_http_peers.py" client "$1" $SA "$2" 2>&1 | tee -a "$work/run.log"
}
curl_c() { # curl in h6cli; logs the status and curl's exit code, never fails the script
  local rc=0 code
  code=$(ip netns exec $C curl -sS -o /dev/null -w '%{http_code} ' --max-time 15 "$@" 2>"$work/curl.err") || rc=$?
  log "curl -> status $code, exit $rc $(head -c 100 "$work/curl.err")"
}

take() { # name function [args]: makes one capture; retries (3 tries) if TCP itself misbehaved
  local name=$1 try; shift
  for try in 1 2 3; do
    "$@"
    if "$PY" "$tools/h6_http_truth.py" --clean "$work/$name.pcap" | tee -a "$work/run.log"; then
      return 0
    fi
    log "$name: try $try was not clean (a retransmission on a loaded host?); again"
    rm -f "$work/$name.pcap"
  done
  echo "$name: no clean capture in 3 tries" >&2; return 1
}

big=$(head -c 40000 /dev/zero | tr '\0' a)

# --- 1-5, 19, 20: nginx rejects the request
nginx_curl() { # name port curl-args...
  local name=$1 port=$2; shift 2
  cap_start "$name" "tcp port $port"; curl_c "$@"; cap_stop 1
}
nginx_client() { # name mode
  cap_start "$1" "tcp port 80"; client "$2" 80; cap_stop
}
take nginx-header-too-large nginx_curl nginx-header-too-large 80 -H "X-Big: $big" "http://$SA/a.html"
take nginx-uri-too-long nginx_curl nginx-uri-too-long 80 "http://$SA/$big"
take nginx-trace nginx_curl nginx-trace 80 -X TRACE "http://$SA/a.html"
take nginx-http-to-tls-port nginx_curl nginx-http-to-tls-port 443 "http://$SA:443/"
take nginx-request-timeout nginx_client nginx-request-timeout half-head
take malformed-request nginx_client malformed-request malformed-request
take request-body-truncated nginx_client request-body-truncated body-truncated

# --- 6-15: Python backends that break the response, each on its own port; curl asks
backend_curl() { # name mode port [server timeout]
  server "$2" "$3" --timeout "${4:-10}"
  cap_start "$1" "tcp port $3"
  curl_c "http://$SA:$3/report"
  server_done; cap_stop
}
take bad-status-line backend_curl bad-status-line bad-status-line 8081
take header-without-colon backend_curl header-without-colon header-without-colon 8082
take body-shorter-than-content-length backend_curl body-shorter-than-content-length body-shorter 8083
take body-longer-than-content-length backend_curl body-longer-than-content-length body-longer 8084
take two-content-lengths backend_curl two-content-lengths two-content-lengths 8085
take content-length-with-chunked backend_curl content-length-with-chunked content-length-with-chunked 8086
take bad-chunk-size backend_curl bad-chunk-size bad-chunk-size 8087
take reset-mid-body backend_curl reset-mid-body reset-mid-body 8088
take close-without-response backend_curl close-without-response close-without-response 8089
# first byte after 7 s (the truth file analyzes it with --response-timeout 5)
take slow-first-byte backend_curl slow-first-byte sleep-7 8090 15

# --- 16, 17: Python servers and Python clients
backend_client() { # name server-mode client-mode port
  server "$2" "$4" --timeout 10
  cap_start "$1" "tcp port $4"
  client "$3" "$4"
  server_done; cap_stop
}
# 17 ALB trace headers in, 503 with ALB-QPS-Limited out
take alb-headers backend_client alb-headers qps-limited alb-trace 8091
# the client gives up after 1 s (FIN); the server answers after 3 s
take client-gives-up backend_client client-gives-up sleep-3 give-up 8092

# --- 18: no answer; the capture stops 2.2 s after the request, the connection still open
no_response() {
  server never 8093 --timeout 15
  cap_start no-response-at-capture-end "tcp port 8093"
  : > "$work/no-response.log"
  ip netns exec $C "$PY" "$tools/h6_http_peers.py" client no-response $SA 8093 >"$work/no-response.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do grep -q "request sent" "$work/no-response.log" && break; sleep 0.05; done
  sleep 2.2
  cap_stop 0
  kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  server_done
}
take no-response-at-capture-end no_response

# --- 21: healthy. One curl invocation keeps one keep-alive connection to nginx for three GETs,
# HEAD, 204, a conditional GET (304) and a POST with Expect: 100-continue (proxied to a Python
# backend); a Python client pipelines three GETs; curl fetches a chunked response with chunk
# extensions and a trailer twice on one connection straight from the Python backend.
head -c 2048 /dev/zero | tr '\0' b > "$work/body.bin"
etag=$(ip netns exec $C curl -sS -I "http://$SA/b.html" | tr -d '\r' | awk -F': ' 'tolower($1)=="etag"{print $2}')
[ -n "$etag" ] || { echo "nginx gave no ETag" >&2; exit 1; }
healthy() {
  server healthy 8090 --count 2 --timeout 20
  cap_start healthy-http "tcp port 80 or tcp port 8090"
  curl_c "http://$SA/a.html" "http://$SA/b.html" "http://$SA/c.html" -o /dev/null -o /dev/null \
    --next -sS --max-time 15 -o /dev/null -I "http://$SA/a.html" \
    --next -sS --max-time 15 -o /dev/null "http://$SA/empty" \
    --next -sS --max-time 15 -o /dev/null -H "If-None-Match: $etag" "http://$SA/b.html" \
    --next -sS --max-time 15 -o /dev/null -H 'Expect: 100-continue' --data-binary @"$work/body.bin" "http://$SA/upload"
  client pipelined 80
  curl_c "http://$SA:8090/chunked/one" "http://$SA:8090/chunked/two" -o /dev/null
  server_done; cap_stop
}
take healthy-http healthy

log "== nginx access log"; cut -c1-160 "$ng/access.log" | tee -a "$work/run.log"
log "== nginx error log (notices and up)"
grep -v '\[debug\]' "$ng/error.log" | cut -c1-200 | tee -a "$work/run.log" || true

# --- truth files, from tshark's reading of each capture; fails if a capture is not as intended
"$PY" "$tools/h6_http_truth.py" "$work"

for f in "$work"/*.pcap; do
  n=$(basename "$f" .pcap)
  install -m 644 -o root -g root "$f" "$here/$n.pcap"
  install -m 644 -o root -g root "$work/$n.truth.json" "$here/$n.truth.json"
done
log "HTTP captures rebuilt in $here"
