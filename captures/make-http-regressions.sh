#!/usr/bin/env bash
# Builds one regression capture per HTTP analysis defect: a declined Upgrade and a refused
# CONNECT followed by more requests, servers that answer before the upload is done (417, 413),
# capture gaps inside a body, inside a response's tail and between responses, 10,050 requests
# on one connection, plain HTTP on 443/8443, secrets in malformed heads, a response captured
# before its request, CRLF after bodies, odd chunk-size lines, and request/response heads whose
# reason matters. nginx 1.22, curl and small Python peers (tools/h6_regress_peers.py) in two
# network namespaces, tcpdump on the client side; editcap (tools/h6_regress_edit.py) cuts frames
# the way a lossy capture host drops them, and swaps two frames as a multi-interface capture
# writes them. Each capture is written beside its NAME.truth.json (tools/h6_regress_truth.py,
# evidence frames read with tshark).
#
#   sudo bash captures/make-http-regressions.sh            # all of them, about 2 minutes
#   sudo ONLY="crlf-after-body chunk-ext-bws" bash captures/make-http-regressions.sh
#
# Needs root, iproute2, ethtool, tcpdump, tshark, editcap, curl, nginx, python3, gzip. Namespaces
# h6rcli (10.61.0.1, where tcpdump captures) and h6rsrv (10.61.0.2); every case has its own
# server port. Captures are built in a temp dir and replace the ones in captures/ only when all
# of them (or all in ONLY) came out as intended.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tools=$here/tools
PY=$(command -v python3)
C=h6rcli; S=h6rsrv; SA=10.61.0.2
work=$(mktemp -d /tmp/h6regress.XXXXXX)
chmod 755 "$work"
log() { printf '%s\n' "$*" | tee -a "$work/run.log"; }

[ "$(id -u)" = 0 ] || { echo "run as root: sudo bash $0" >&2; exit 1; }
for tool in ip tcpdump tshark editcap curl nginx ss gzip; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
command -v ethtool >/dev/null || apt-get install -y ethtool >/dev/null
exec 9>/run/lock/lbdiag-make-http-regressions.lock
flock -n 9 || { echo "another run is in progress" >&2; exit 1; }

cleanup() {
  set +e
  for p in $(jobs -p); do kill "$p" 2>/dev/null; done   # this script's own unfinished jobs only
  if [ -s "$work/nginx/nginx.pid" ]; then kill -QUIT "$(cat "$work/nginx/nginx.pid")" 2>/dev/null; sleep 0.3; fi
  ip netns del $C 2>/dev/null; ip netns del $S 2>/dev/null
  [ -n "${KEEP_WORK:-}" ] && echo "work dir kept: $work" || rm -rf "$work"
}
trap cleanup EXIT

# --- network: two namespaces and a veth pair; no offloads, so frames are what the wire carried
ip netns del $C 2>/dev/null || true
ip netns del $S 2>/dev/null || true
ip netns add $C
ip netns add $S
ip link add h6rc0 netns $C type veth peer name h6rs0 netns $S
ip -n $C addr add 10.61.0.1/24 dev h6rc0
ip -n $S addr add $SA/24 dev h6rs0
for ns_dev in "$C h6rc0" "$S h6rs0"; do
  set -- $ns_dev
  ip -n "$1" link set lo up
  ip -n "$1" link set "$2" up
  ip netns exec "$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null
  ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
done

# --- nginx in h6rsrv, one server block per case
ng=$work/nginx
mkdir -p "$ng/www" "$ng/tmp"
for p in a b c; do printf 'page %s\n' "$p" > "$ng/www/$p.html"; done
printf 'index\n' > "$ng/www/index.html"
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
  keepalive_timeout 15s;
  root $ng/www;
  # 413 as soon as the head announces more than 1 KB
  server { listen 8104; client_max_body_size 1k; location = /upload { return 200 "stored\n"; } }
  # plain HTTP (no ssl) on the TLS ports
  server { listen 443; listen 8443; }
  # secrets in request heads nginx rejects
  server { listen 8107; listen 8108; }
  # a healthy keep-alive connection whose frames get swapped
  server { listen 8109; }
  # odd request lines
  server { listen 8117; listen 8118; listen 8119; location = / { return 200 "ok\n"; } }
}
NGINX
ip netns exec $S nginx -p "$ng" -c "$ng/nginx.conf" -e "$ng/error.log"
for _ in $(seq 50); do [ -s "$ng/nginx.pid" ] && break; sleep 0.1; done

# --- helpers
wait_listen() { # port: until something listens on it in h6rsrv (5 s at most)
  for _ in $(seq 50); do
    [ -n "$(ip netns exec $S ss -Hltn "sport = :$1")" ] && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2; return 1
}
cap_pid=
cap_start() { # file filter
  : > "$work/tcpdump.err"
  ip netns exec $C tcpdump -U --immediate-mode -n -s 0 -Z root -i h6rc0 -w "$1" "$2" \
    2>"$work/tcpdump.err" &
  cap_pid=$!
  for _ in $(seq 50); do grep -q "listening on" "$work/tcpdump.err" && break; sleep 0.1; done
  sleep 0.3
}
cap_stop() { # [seconds to wait first]
  sleep "${1:-1}"
  kill -INT "$cap_pid"; wait "$cap_pid" || true
}
server_pid=
server() { # mode port [options]: a Python peer in h6rsrv, bounded by --count and --timeout
  local mode=$1 port=$2; shift 2
  ip netns exec $S "$PY" "$tools/h6_regress_peers.py" server "$mode" "$port" "$@" >>"$work/run.log" 2>&1 &
  server_pid=$!
  wait_listen "$port"
}
server_done() { wait "$server_pid" || true; }
client() { # mode port [options]: a Python client in h6rcli
  local mode=$1 port=$2; shift 2
  ip netns exec $C timeout 60 "$PY" "$tools/h6_regress_peers.py" client "$mode" $SA "$port" "$@" 2>&1 |
    tee -a "$work/run.log"
}
curl_c() { # curl in h6rcli; logs the statuses and curl's exit code, never fails the script
  local rc=0 code
  code=$(ip netns exec $C curl -sS -w '%{http_code} ' --max-time 15 "$@" 2>"$work/curl.err") || rc=$?
  log "curl -> status $code, exit $rc $(head -c 100 "$work/curl.err")"
}
wanted() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }
take() { # name function [args]: one capture ($work/name.pcap); 3 tries if TCP itself misbehaved
  local name=$1 try; shift
  wanted "$name" || return 0
  log "== $name"
  for try in 1 2 3; do
    "$@" "$work/$name.pcap"
    if "$PY" "$tools/h6_http_truth.py" --clean "$work/$name.pcap" | tee -a "$work/run.log"; then
      return 0
    fi
    log "$name: try $try was not clean; again"
    rm -f "$work/$name.pcap"
  done
  echo "$name: no clean capture in 3 tries" >&2; return 1
}
edit() { # name operation port: replaces $work/name.pcap by its edited copy, keeps the original
  wanted "$1" || return 0
  mv "$work/$1.pcap" "$work/$1.orig.pcap"
  "$PY" "$tools/h6_regress_edit.py" "$2" "$work/$1.orig.pcap" "$work/$1.pcap" "$3" | tee -a "$work/run.log"
}
py_case() { # server-mode client-mode port [server options] -- out: Python server and client
  local smode=$1 cmode=$2 port=$3; shift 3
  local out=${*: -1}; set -- "${@:1:$(($# - 1))}"
  server "$smode" "$port" --timeout 30 "$@"
  cap_start "$out" "tcp port $port"
  client "$cmode" "$port"
  server_done; cap_stop
}
curl_case() { # "server-mode [server options]" port curl-args... out: Python server, curl as the client
  local -a smode
  read -r -a smode <<< "$1"
  local port=$2; shift 2
  local out=${*: -1}; set -- "${@:1:$(($# - 1))}"
  server "${smode[0]}" "$port" "${smode[@]:1}" --timeout 15
  cap_start "$out" "tcp port $port"
  curl_c "$@"
  server_done; cap_stop
}
nginx_client() { # client-mode port out: a Python client against nginx
  cap_start "$3" "tcp port $2"; client "$1" "$2"; cap_stop
}
nginx_curl() { # port curl-args... out
  local port=$1; shift
  local out=${*: -1}; set -- "${@:1:$(($# - 1))}"
  cap_start "$out" "tcp port $port"; curl_c "$@"; cap_stop
}
U="http://$SA"

# 1. a declined Upgrade (200) and a refused CONNECT (407), each followed by a failing request
take upgrade-declined-then-502 py_case keepalive upgrade 8101 --fail 502
take connect-407-then-503 py_case keepalive connect 8102 --fail 503

# 2. the server answers before the body: 417 to Expect: 100-continue (the client never sends
# the body and closes); nginx's 413 while curl is still uploading 200 KB at 50 KB/s
take expect-100-answered-417 py_case expect-417 expect-417 8103
head -c 200000 /dev/zero | tr '\0' u > "$work/upload.bin"
take upload-answered-413 nginx_curl 8104 -o /dev/null -H 'Expect:' --limit-rate 50K \
  --data-binary @"$work/upload.bin" "$U:8104/upload"

# 3. a capture gap inside a 20 KB body whose lines look like requests
take gap-in-body-with-request-lines py_case keepalive gap-body 8105
edit gap-in-body-with-request-lines cut-body 8105

# 4. 10,050 requests on one keep-alive connection (pipelined 20 at a time); the last answered 502
take ten-thousand-requests py_case keepalive many 8106 --fail 502

# 5. plain HTTP answered in plain HTTP on 443 and 8443
take plain-http-on-443-and-8443 nginx_curl "443 or tcp port 8443" -o /dev/null -o /dev/null \
  "$U:443/a.html" "$U:8443/b.html"

# 6. secrets in request heads that nginx rejects with 400
take secret-header-without-colon nginx_client secret-no-colon 8107
take secret-folded-cookie nginx_client secret-fold 8108

# 7. a healthy keep-alive connection; the second response's frame is written before its request's
take response-before-request nginx_curl 8109 -o /dev/null -o /dev/null -o /dev/null \
  "$U:8109/a.html" "$U:8109/b.html" "$U:8109/c.html"
edit response-before-request swap 8109

# 12. the last two data frames of a 20 KB response (Connection: close) are not captured
take response-tail-not-captured py_case tail-then-close download 8110
edit response-tail-not-captured cut-tail 8110

# 13. six requests on one connection; the second response's frame is not captured; /fail is 500
take gap-then-error-pairs-right curl_case "keepalive --fail 500" 8111 \
  -o /dev/null -o /dev/null -o /dev/null -o /dev/null -o /dev/null -o /dev/null \
  "$U:8111/1" "$U:8111/2" "$U:8111/3" "$U:8111/4" "$U:8111/fail" "$U:8111/6"
edit gap-then-error-pairs-right cut-response 8111

# 16. a bare CRLF after every Content-Length body, keep-alive
take crlf-after-body py_case crlf-after-body crlf 8112

# 17. chunk-size lines: leading space, form feed, bare CR (malformed); BWS before ';' (valid)
take chunk-size-leading-space curl_case chunk-leading-space 8113 -o /dev/null "$U:8113/c"
take chunk-size-form-feed curl_case chunk-form-feed 8114 -o /dev/null "$U:8114/c"
take chunk-size-bare-cr curl_case chunk-bare-cr 8115 -o /dev/null "$U:8115/c"
take chunk-ext-bws curl_case chunk-ext-bws 8116 -o /dev/null "$U:8116/c"

# 18. request lines nginx answers or rejects; response heads that are broken in other ways
take request-line-double-space nginx_client double-space 8117
take request-line-no-target nginx_client no-target 8118
take request-http09 nginx_client http09 8119
take response-obs-fold curl_case obs-fold 8120 -o /dev/null "$U:8120/r"
take response-head-unfinished curl_case head-unfinished 8121 -o /dev/null "$U:8121/r"
take response-no-status-line curl_case second-no-status-line 8122 -o /dev/null -o /dev/null --http0.9 \
  "$U:8122/first" "$U:8122/second"
take transfer-encoding-gzip-with-length curl_case te-gzip-with-length 8123 -o /dev/null "$U:8123/r"

log "== nginx access log"; cut -c1-160 "$ng/access.log" | tee -a "$work/run.log"
log "== nginx error log (notices and up)"
grep -v '\[debug\]' "$ng/error.log" | cut -c1-200 | tee -a "$work/run.log" || true

# --- the 10,050-request capture is stored gzip-compressed (lbdiag reads .pcap.gz)
if [ -e "$work/ten-thousand-requests.pcap" ]; then
  gzip -9n "$work/ten-thousand-requests.pcap"
fi

# --- truth files, from tshark's reading of each capture; fails if a capture is not as intended
"$PY" "$tools/h6_regress_truth.py" "$work"

for f in "$work"/*.truth.json; do
  n=$(basename "$f" .truth.json)
  for cap in "$work/$n.pcap" "$work/$n.pcap.gz"; do
    [ -e "$cap" ] && install -m 644 -o root -g root "$cap" "$here/$(basename "$cap")"
  done
  install -m 644 -o root -g root "$f" "$here/$n.truth.json"
done
log "HTTP regression captures written to $here"
