#!/usr/bin/env bash
# Rebuilds lbdiag's proxy-vantage captures: each taken ON the balancer host with
# `tcpdump -i any -y LINUX_SLL2`, so one file holds both legs: the front leg (client 10.71.0.1 ->
# balancer 10.71.0.2) and the back leg (balancer 10.71.1.2 -> backends 10.71.2.3 / 10.71.2.4).
# The balancer is nginx 1.22 (and haproxy 2.6 for three cases); the backends are small Python
# peers that misbehave on purpose (tools/proxy_peers.py). Each case has its own front and back
# ports, so connections never mix. Truth files: tools/proxy_truth.py (frames read with tshark).
#
#   sudo bash captures/make-proxy-captures.sh
#
# Captures (nginx unless named):
#   proxy-refused.pcap                  nothing listens on the backend port: 502
#   proxy-connect-timeout.pcap          backend drops SYNs (iptables), proxy_connect_timeout 2s: 504
#   proxy-reset-mid-head.pcap           backend sends half a response head, then RST: 502
#   proxy-reset-mid-body.pcap           backend sends the head and 1,000 of 10,000 body bytes, then
#                                       RST: nginx already sent 200 and cuts the client's body short
#   proxy-read-timeout.pcap             backend takes 5 s, proxy_read_timeout 2s: 504 (nginx closes
#                                       the back connection at its timeout: not a 499)
#   proxy-client-gives-up.pcap          the client gives up after 1 s on a 5 s backend: nginx 499,
#                                       and nginx aborts the back request because of it
#   proxy-keepalive-race-post.pcap      backend idle timeout 1.0 s, nginx upstream keepalive 60 s;
#   backend-keepalive-race.pcap         a POST crosses the backend's idle FIN: 502 (POST is not
#                                       retried). The second file is the same moment on the backend
#   proxy-keepalive-race-get-retried.pcap  the same race on a GET: nginx retries on a new
#                                       connection, the client gets 200
#   proxy-backend-restart.pcap          backend killed (SIGKILL) with 4 requests in flight, 2 requests
#                                       refused right after (502), restarted, 2 more answered 200
#   proxy-refused-retried.pcap          two upstream servers, the first refuses: nginx retries the
#                                       second, the client gets 200
#   proxy-mtu-blackhole.pcap            a 1280-byte router link on the back leg and ICMP
#                                       frag-needed dropped: a 20 KB POST stalls, nginx 504
#   proxy-haproxy-refused.pcap          haproxy: refused 4 times (retries 3): 503
#   proxy-haproxy-read-timeout.pcap     haproxy: timeout server 2s on a 5 s backend: 504
#   proxy-haproxy-keepalive-race.pcap   haproxy (http-reuse always): a POST crosses the backend's
#                                       idle FIN: 502
#   proxy-two-balancers.pcap            nginx (10.71.0.2, backends on 10.71.2.3) and haproxy
#                                       (10.71.0.3, backends on 10.71.2.4) on one host, one capture:
#                                       nginx 504 (a 5 s backend past its 2 s read timeout), haproxy
#                                       502 (a backend resetting mid-head), while GET /health is
#                                       answered 200 through both
#   proxy-retries-some-fail.pcap        nginx, two upstream servers (max_fails=0), the first refuses:
#                                       GET /catalog is retried on the second (the client gets 200),
#                                       GET /checkout has proxy_next_upstream off (502 when it lands
#                                       on the refusing one, 200 when not)
# nginx talks to the backends from a second address (10.71.1.2); haproxy uses its front address
# (10.71.0.2) on both legs, so both shapes of balancer are covered.
#
# Network: five namespaces. pxc (client) -- pxb (balancer, where tcpdump runs) -- pxr (router;
# its link to the backends can drop to 1280 bytes) -- pxd (a bridge) -- pxs (backends). pxd is a
# kernel bridge, except for the keep-alive races: there tools/delay_bridge.py holds every frame
# 50 ms (this kernel has no netem), so a FIN and a request can cross on the wire. Offloads are off,
# so frames are what went on the wire. The balancer's loopback traffic is filtered out.
# Needs root, iproute2, iptables, ethtool, tcpdump, tshark, curl, nginx, haproxy, python3.
# Idempotent; only replaces captures in captures/ when every one came out as intended. ~2 min.
# ONLY="proxy-two-balancers proxy-retries-some-fail" makes only the captures named (and their
# truth files), leaving the others as they are.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tools=$here/tools
PY=$(command -v python3)
C=pxc; B=pxb; R=pxr; D=pxd; S=pxs
CA=10.71.0.1; BF=10.71.0.2; BB=10.71.1.2; S1=10.71.2.3; S2=10.71.2.4
# A second balancer on the same host (haproxy in proxy-two-balancers), one address on both legs.
BF2=10.71.0.3
work=$(mktemp -d /tmp/proxycap.XXXXXX)
chmod 755 "$work"
log() { printf '%s\n' "$*" | tee -a "$work/run.log"; }

[ "$(id -u)" = 0 ] || { echo "run as root: sudo bash $0" >&2; exit 1; }
for tool in ip iptables ethtool tcpdump tshark curl nginx haproxy ss; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

cleanup() {
  set +e
  for p in $(jobs -p); do kill "$p" 2>/dev/null; done   # this script's own jobs only
  [ -s "$work/nginx/nginx.pid" ] && kill -QUIT "$(cat "$work/nginx/nginx.pid")" 2>/dev/null
  sleep 0.3
  for ns in $C $B $R $D $S; do ip netns del $ns 2>/dev/null; done
  [ -n "${KEEP_WORK:-}" ] && echo "work dir kept: $work" || rm -rf "$work"
}
trap cleanup EXIT

# --- network
for ns in $C $B $R $D $S; do ip netns del $ns 2>/dev/null || true; ip netns add $ns; ip -n $ns link set lo up; done
ip link add pxc0 netns $C type veth peer name pxb0 netns $B
ip link add pxb1 netns $B type veth peer name pxr0 netns $R
ip link add pxr1 netns $R type veth peer name pxd0 netns $D
ip link add pxd1 netns $D type veth peer name pxs0 netns $S
ip -n $C addr add $CA/24 dev pxc0
ip -n $B addr add $BF/24 dev pxb0
ip -n $B addr add $BF2/24 dev pxb0
ip -n $B addr add $BB/24 dev pxb1
ip -n $R addr add 10.71.1.1/24 dev pxr0
ip -n $R addr add 10.71.2.1/24 dev pxr1
ip -n $S addr add $S1/24 dev pxs0
ip -n $S addr add $S2/24 dev pxs0
ip -n $D link add br0 type bridge
for l in "$C pxc0" "$B pxb0" "$B pxb1" "$R pxr0" "$R pxr1" "$D pxd0" "$D pxd1" "$S pxs0"; do
  set -- $l
  ip -n "$1" link set "$2" up
  ip netns exec "$1" ethtool -K "$2" tso off gso off gro off tx off >/dev/null 2>&1 || true
done
for ns in $C $B $R $D $S; do ip netns exec $ns sysctl -qw net.ipv6.conf.all.disable_ipv6=1; done
ip -n $D link set br0 up
bridge_kernel() { ip -n $D link set pxd0 master br0; ip -n $D link set pxd1 master br0; }
bridge_off() { ip -n $D link set pxd0 nomaster; ip -n $D link set pxd1 nomaster; }
bridge_kernel
ip -n $B route add 10.71.2.0/24 via 10.71.1.1
ip -n $S route add default via 10.71.2.1
ip -n $R route add 10.71.0.0/24 via $BB
ip netns exec $R sysctl -qw net.ipv4.ip_forward=1

# --- nginx in pxb: one server block and one upstream per case
ng=$work/nginx
mkdir -p "$ng/tmp"
cat > "$ng/nginx.conf" <<NGINX
worker_processes 1;
pid $ng/nginx.pid;
error_log $ng/error.log info;
events { worker_connections 256; }
http {
  log_format up '\$remote_addr "\$request" \$status up=\$upstream_addr ups=\$upstream_status rt=\$request_time urt=\$upstream_response_time';
  access_log $ng/access.log up;
  client_body_temp_path $ng/tmp/body;
  proxy_temp_path $ng/tmp/proxy;
  fastcgi_temp_path $ng/tmp/fastcgi;
  uwsgi_temp_path $ng/tmp/uwsgi;
  scgi_temp_path $ng/tmp/scgi;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host \$host;
  proxy_set_header X-Real-IP \$remote_addr;
  proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
  proxy_connect_timeout 2s;
  proxy_read_timeout 2s;
  proxy_send_timeout 3s;
  upstream u8001 { server $S1:9001; }
  upstream u8002 { server $S1:9002; }
  upstream u8003 { server $S1:9003; }
  upstream u8013 { server $S1:9013; }
  upstream u8004 { server $S1:9004; }
  upstream u8005 { server $S1:9005; }
  upstream u8006 { server $S1:9006; keepalive 4; keepalive_timeout 60s; }
  upstream u8007 { server $S1:9007; keepalive 4; keepalive_timeout 60s; }
  upstream u8008 { server $S1:9008; }
  upstream u8009 { server $S1:9009; server $S2:9009; }
  upstream u8010 { server $S1:9010; }
  upstream u8201 { server $S1:9201; }
  upstream u8211 { server $S1:9211; }
  # max_fails=0: the refusing server is never marked down, so round robin keeps sending to it.
  upstream u8301 { server $S1:9301 max_fails=0; server $S2:9301 max_fails=0; }
  server { listen $BF:8001; location / { proxy_pass http://u8001; } }
  server { listen $BF:8002; location / { proxy_pass http://u8002; } }
  server { listen $BF:8003; location / { proxy_pass http://u8003; } }
  server { listen $BF:8013; location / { proxy_pass http://u8013; } }
  server { listen $BF:8004; location / { proxy_pass http://u8004; } }
  server { listen $BF:8005; location / { proxy_read_timeout 10s; proxy_pass http://u8005; } }
  server { listen $BF:8006; location / { proxy_pass http://u8006; } }
  server { listen $BF:8007; location / { proxy_pass http://u8007; } }
  server { listen $BF:8008; location / { proxy_read_timeout 5s; proxy_pass http://u8008; } }
  server { listen $BF:8009; location / { proxy_pass http://u8009; } }
  server { listen $BF:8010; location / { proxy_read_timeout 3s; proxy_pass http://u8010; } }
  server { listen $BF:8201; location / { proxy_pass http://u8211; } location /search { proxy_pass http://u8201; } }
  server { listen $BF:8301; location / { proxy_pass http://u8301; }
           location /checkout { proxy_next_upstream off; proxy_pass http://u8301; } }
}
NGINX
ip netns exec $B nginx -p "$ng" -c "$ng/nginx.conf" -e "$ng/error.log"
for _ in $(seq 50); do [ -s "$ng/nginx.pid" ] && break; sleep 0.1; done

# --- haproxy in pxb
hp=$work/haproxy
mkdir -p "$hp"
cat > "$hp/haproxy.cfg" <<HAPROXY
global
  maxconn 100
defaults
  mode http
  log stdout format raw local0
  option httplog
  option forwardfor
  timeout connect 2s
  timeout client 10s
  timeout server 2s
  http-reuse always
  # One address on both legs, as a one-armed balancer has (nginx here uses two: 10.71.0.2 in
  # front, 10.71.1.2 behind).
  source $BF
frontend f8101
  bind $BF:8101
  default_backend b9101
backend b9101
  server s1 $S1:9101
frontend f8104
  bind $BF:8104
  default_backend b9104
backend b9104
  server s1 $S1:9104
frontend f8106
  bind $BF:8106
  default_backend b9106
backend b9106
  timeout server 5s
  server s1 $S1:9106
# proxy-two-balancers: a second balancer address, its own backends on 10.71.2.4.
frontend f8202
  bind $BF2:8202
  acl pay path_beg /pay
  use_backend b9202 if pay
  default_backend b9212
backend b9202
  source $BF2
  server s1 $S2:9202
backend b9212
  source $BF2
  server s1 $S2:9212
HAPROXY
ip netns exec $B haproxy -db -f "$hp/haproxy.cfg" >"$hp/haproxy.log" 2>&1 &
haproxy_pid=$!
sleep 0.5

# --- helpers
wait_listen() { # addr port: until something listens there in pxs (5 s at most)
  for _ in $(seq 50); do
    [ -n "$(ip netns exec $S ss -Hltn "src $1 and sport = :$2")" ] && return 0
    sleep 0.1
  done
  echo "nothing listens on $1:$2" >&2; return 1
}
caps=()
cap_start() { # name filter [ns iface]: tcpdump -i any on the balancer unless told otherwise
  local name=$1 filter=$2 ns=${3:-$B} ifc=${4:-any}
  : > "$work/$name.tcpdump.err"
  local lt=(); [ "$ifc" = any ] && lt=(-y LINUX_SLL2)
  ip netns exec "$ns" tcpdump -U --immediate-mode -n -s 4096 -B 16384 -Z root -i "$ifc" "${lt[@]}" \
    -w "$work/$name.pcap" "($filter) and not net 127.0.0.0/8" 2>"$work/$name.tcpdump.err" &
  caps+=($!)
  for _ in $(seq 50); do grep -q "listening on" "$work/$name.tcpdump.err" && break; sleep 0.1; done
  sleep 0.3
  log "== $name"
}
cap_stop() { # [seconds to wait first]: stops every capture started since the last stop
  sleep "${1:-1}"
  for p in "${caps[@]}"; do kill -INT "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  caps=()
}
server_pid=
server() { # mode addr port seconds [options]: a Python backend in pxs
  local mode=$1 addr=$2 port=$3 secs=$4; shift 4
  ip netns exec $S "$PY" "$tools/proxy_peers.py" server "$mode" "$addr" "$port" "$secs" "$@" \
    >>"$work/run.log" 2>&1 &
  server_pid=$!
  wait_listen "$addr" "$port"
}
server_done() { wait "$server_pid" 2>/dev/null || true; }
curl_c() { # curl in pxc; logs the status, never fails the script
  local rc=0 code
  code=$(ip netns exec $C curl -sS -o /dev/null -w '%{http_code}' --max-time 15 "$@" 2>"$work/curl.err") || rc=$?
  log "curl $* -> status $code, exit $rc $(head -c 100 "$work/curl.err")"
}
ports() { echo "tcp port $1 or tcp port $2"; }

# A whole frame is at most 1514 bytes here (offloads off), so a 4096-byte snaplen cuts nothing,
# and keeps libpcap's immediate-mode ring (one slot per snaplen) from dropping frames.
clean() { # name...: every capture of this case lost no frame in the kernel
  local n
  for n in "$@"; do
    grep -q "^0 packets dropped by kernel" "$work/$n.tcpdump.err" || { log "$n: $(grep dropped "$work/$n.tcpdump.err")"; return 1; }
  done
}
take() { # name function [args]: one case; again (3 tries) if tcpdump dropped frames
  local name=$1 try; shift
  for try in 1 2 3; do
    "$@"
    clean "$name" && return 0
    log "$name: try $try lost frames; again"
  done
  echo "$name: no whole capture in 3 tries" >&2; return 1
}

case_refused() {
  cap_start proxy-refused "$(ports 8001 9001)"
  curl_c "http://$BF:8001/cart"
  cap_stop
}
case_connect_timeout() { # SYNs dropped in the backend namespace; nginx gives up after 2 s
  ip netns exec $S iptables -A INPUT -p tcp --dport 9002 --syn -j DROP
  cap_start proxy-connect-timeout "$(ports 8002 9002)"
  curl_c "http://$BF:8002/search?q=lamp"
  cap_stop
  ip netns exec $S iptables -D INPUT -p tcp --dport 9002 --syn -j DROP
}
case_reset() { # name mode front back path: during the head (502), during the body (200 head sent)
  server "$2" $S1 "$4" 8
  cap_start "$1" "$(ports "$3" "$4")"
  curl_c "http://$BF:$3$5"
  server_done; cap_stop
}
case_slow() { # name front back [curl args]: a 5 s backend; it still answers at 5 s
  server slow $S1 "$3" 9 --delay 5
  cap_start "$1" "$(ports "$2" "$3")"
  curl_c "http://$BF:$2/search?q=chair"
  server_done; cap_stop 0.5
}
case_gives_up() { # the client gives up after 1 s on a 5 s backend
  server slow $S1 9005 9 --delay 5
  cap_start proxy-client-gives-up "$(ports 8005 9005)"
  ip netns exec $C timeout 10 "$PY" "$tools/proxy_peers.py" give-up $BF 8005 /export 1 2>>"$work/run.log"
  server_done; cap_stop 0.5
}
case_restart() { # killed with 4 requests in flight, 2 refused, restarted, 2 answered
  server ok $S1 9008 30 --delay 3
  cap_start proxy-backend-restart "$(ports 8008 9008)"
  local inflight=() i
  for i in 1 2 3 4; do curl_c "http://$BF:8008/slow?job=$i" & inflight+=($!); sleep 0.05; done
  sleep 1
  kill -KILL "$server_pid"; wait "$server_pid" 2>/dev/null || true
  log "backend killed"
  sleep 0.3
  curl_c "http://$BF:8008/status?try=1"
  curl_c "http://$BF:8008/status?try=2"
  sleep 0.7
  server ok $S1 9008 8
  log "backend restarted"
  sleep 0.5
  curl_c "http://$BF:8008/status?try=3"
  curl_c "http://$BF:8008/status?try=4"
  wait "${inflight[@]}" 2>/dev/null || true
  cap_stop
  kill "$server_pid" 2>/dev/null; server_done
}
case_refused_retried() { # two upstream servers, the first refuses: nginx retries the second
  server ok $S2 9009 6
  cap_start proxy-refused-retried "$(ports 8009 9009)"
  curl_c "http://$BF:8009/catalog"
  cap_stop
  kill "$server_pid" 2>/dev/null; server_done
}
case_blackhole() { # router link 1280 bytes, frag-needed dropped, a 20 KB POST
  ip netns exec $R ip link set pxr1 mtu 1280
  ip netns exec $R iptables -A OUTPUT -p icmp --icmp-type fragmentation-needed -j DROP
  ip netns exec $B ip route flush cache
  head -c 20000 /dev/zero | tr '\0' 'p' > "$work/body"
  server sink $S1 9010 10
  cap_start proxy-mtu-blackhole "$(ports 8010 9010) or icmp"
  curl_c -H 'Expect:' --data-binary @"$work/body" "http://$BF:8010/upload"
  cap_stop 0.5
  ip netns exec $R iptables -D OUTPUT -p icmp --icmp-type fragmentation-needed -j DROP
  ip netns exec $R ip link set pxr1 mtu 1500
  kill "$server_pid" 2>/dev/null; server_done
}
case_haproxy_refused() { # haproxy retries 3 times, then 503
  cap_start proxy-haproxy-refused "$(ports 8101 9101)"
  curl_c "http://$BF:8101/cart"
  cap_stop
}

case_two_balancers() { # nginx 504 and haproxy 502 at once, healthy GET /health through both
  local pids=()
  server slow $S1 9201 10 --delay 5; pids+=("$server_pid")
  server ok $S1 9211 10; pids+=("$server_pid")
  server reset-head $S2 9202 10; pids+=("$server_pid")
  server ok $S2 9212 10; pids+=("$server_pid")
  cap_start proxy-two-balancers "$(ports 8201 9201) or tcp port 9211 or $(ports 8202 9202) or tcp port 9212"
  curl_c "http://$BF:8201/health"
  curl_c "http://$BF2:8202/health"
  curl_c "http://$BF:8201/search?q=sofa" & local slow=$!
  sleep 0.4
  curl_c "http://$BF2:8202/health"
  sleep 0.2
  curl_c "http://$BF2:8202/pay?order=17"
  sleep 0.2
  curl_c "http://$BF:8201/health"
  wait "$slow" 2>/dev/null || true
  sleep 0.3
  curl_c "http://$BF:8201/health"
  curl_c "http://$BF2:8202/health"
  cap_stop
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null || true; done
}
case_retries_some_fail() { # round robin over a refusing and a healthy server
  server ok $S2 9301 10
  cap_start proxy-retries-some-fail "$(ports 8301 9301)"
  local path
  for path in /catalog?page=1 /catalog?page=2 /checkout?cart=1 /checkout?cart=2 /catalog?page=3 \
              /checkout?cart=3 /checkout?cart=4; do
    curl_c "http://$BF:8301$path"
    sleep 0.3
  done
  cap_stop
  kill "$server_pid" 2>/dev/null; server_done
}

wanted() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }
want_take() { if wanted "$1"; then take "$@"; fi; }
want_take proxy-refused case_refused
want_take proxy-connect-timeout case_connect_timeout
want_take proxy-reset-mid-head case_reset proxy-reset-mid-head reset-head 8003 9003 /invoice/7
want_take proxy-reset-mid-body case_reset proxy-reset-mid-body reset-body 8013 9013 /report.csv
want_take proxy-read-timeout case_slow proxy-read-timeout 8004 9004
want_take proxy-client-gives-up case_gives_up
want_take proxy-backend-restart case_restart
want_take proxy-refused-retried case_refused_retried
want_take proxy-mtu-blackhole case_blackhole
want_take proxy-haproxy-refused case_haproxy_refused
want_take proxy-haproxy-read-timeout case_slow proxy-haproxy-read-timeout 8104 9104
want_take proxy-two-balancers case_two_balancers
want_take proxy-retries-some-fail case_retries_some_fail

# 6, 7, 11: keep-alive races. 50 ms each way between balancer and backends; the backend closes
# connections idle for 1.0 s; the client sends 0.95 s after its answer, so the balancer's request
# leaves about when the backend's FIN does, and they cross.
race() { # name front-port back-port method [backend capture name]
  local name=$1 fp=$2 bp=$3 method=$4 bname=${5:-}
  bridge_off
  ip netns exec $D timeout 20 "$PY" "$tools/delay_bridge.py" pxd0 pxd1 50 15 &
  local bridge=$!
  sleep 0.5
  server ok $S1 "$bp" 12 --idle 1.0
  cap_start "$name" "$(ports "$fp" "$bp")"
  [ -n "$bname" ] && cap_start "$bname" "$(ports "$fp" "$bp")" $S pxs0
  ip netns exec $C timeout 12 "$PY" "$tools/proxy_peers.py" race-client $BF "$fp" "$method" 0.95 \
    2>>"$work/run.log" | tee -a "$work/run.log"
  cap_stop 1.5
  kill "$server_pid" 2>/dev/null; server_done
  kill "$bridge" 2>/dev/null; wait "$bridge" 2>/dev/null || true
  bridge_kernel
}
take_race() { # name ... : the race is timing; try again (3 tries) until the request crossed the FIN
  local try
  for try in 1 2 3; do
    race "$@"
    if clean "$1" ${5:-} && "$PY" "$tools/proxy_truth.py" --check-race "$work/$1.pcap"; then return 0; fi
    log "$1: try $try did not cross; again"
  done
  echo "$1: no crossing in 3 tries" >&2; return 1
}
if wanted proxy-keepalive-race-post || wanted backend-keepalive-race; then
  take_race proxy-keepalive-race-post 8006 9006 POST backend-keepalive-race
fi
if wanted proxy-keepalive-race-get-retried; then take_race proxy-keepalive-race-get-retried 8007 9007 GET; fi
if wanted proxy-haproxy-keepalive-race; then take_race proxy-haproxy-keepalive-race 8106 9106 POST; fi

log "--- nginx access log"; cat "$ng/access.log" | tee -a "$work/run.log"
log "--- nginx error log"; grep -E 'error|warn' "$ng/error.log" | tee -a "$work/run.log" || true
log "--- haproxy log"; cat "$hp/haproxy.log" | tee -a "$work/run.log"

"$PY" "$tools/proxy_truth.py" "$work" "$here" ${ONLY:-}
for f in "$work"/*.pcap; do cp "$f" "$here/"; done
log "done"
