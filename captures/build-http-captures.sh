#!/usr/bin/env bash
# Rebuilds the HTTP captures: nginx rejecting requests (large head, long URI, TRACE, plain HTTP
# on its TLS port, a stalled head, a malformed request) and small Python servers and clients
# that misbehave on purpose (tools/http_peer.py), plus a healthy capture with keep-alive,
# pipelining, HEAD, 204, 304, 100-continue and chunked trailers. Needs root, iproute2, ethtool,
# tcpdump, tshark, curl, nginx, openssl, python3. CI does not run it.
#   sudo bash captures/build-http-captures.sh
set -euo pipefail
cd "$(dirname "$0")"
out=$PWD
tools=$PWD/tools
work=$(mktemp -d); chmod 755 "$work"
C=h6cli; S=h6srv; SA=10.60.0.2

cleanup() {
  for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  ip netns del $C 2>/dev/null || true; ip netns del $S 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns del $C 2>/dev/null || true; ip netns del $S 2>/dev/null || true
ip netns add $C; ip netns add $S
ip link add h6c0 type veth peer name h6s0
ip link set h6c0 netns $C; ip link set h6s0 netns $S
ip netns exec $C ip addr add 10.60.0.1/24 dev h6c0
ip netns exec $S ip addr add $SA/24 dev h6s0
for pair in "$C h6c0" "$S h6s0"; do
  set -- $pair
  ip netns exec "$1" ip link set lo up
  ip netns exec "$1" ip link set "$2" up
  ip netns exec "$1" ethtool -K "$2" tso off gso off gro off >/dev/null 2>&1 || true
done
sleep 1

mkdir -p "$work/www" "$work/nginx"
for p in a b c; do echo "page $p" > "$work/www/$p.html"; done
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=backend.test" \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  client_header_timeout 3s;
  large_client_header_buffers 4 8k;
  keepalive_timeout 10s;
  server {
    listen 80;
    listen 443 ssl;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    root $work/www;
    location = /empty { return 204; }
    location = /upload { client_max_body_size 1m; return 200 "stored\n"; }
  }
}
NGINX
ip netns exec $S nginx -c "$work/nginx.conf"
sleep 0.5

capture_start() { # file [filter]
  local file=$1; shift
  ip netns exec $C tcpdump -U -n -s 0 -i h6c0 -w "$file" "${@:-tcp}" 2>/dev/null &
  echo $! > "$work/tcpdump.pid"; sleep 1
}
capture_stop() { sleep "${1:-1}"; kill -INT "$(cat "$work/tcpdump.pid")"; wait "$(cat "$work/tcpdump.pid")" 2>/dev/null || true; }
curl_c() { ip netns exec $C curl -s -o /dev/null --max-time 12 "$@" || true; }
peer_server() { ip netns exec $S python3 "$tools/http_peer.py" serve "$@" & sleep 0.5; }
peer_client() { ip netns exec $C python3 "$tools/http_peer.py" client "$@"; }

big=$(head -c 40000 /dev/zero | tr '\0' a)
capture_start "$out/nginx-header-too-large.pcap"; curl_c -H "X-Big: $big" http://$SA/a.html; capture_stop
capture_start "$out/nginx-uri-too-long.pcap"; curl_c "http://$SA/$big"; capture_stop
capture_start "$out/nginx-trace.pcap"; curl_c -X TRACE http://$SA/a.html; capture_stop
capture_start "$out/nginx-http-to-tls-port.pcap"; curl_c http://$SA:443/a.html; capture_stop
capture_start "$out/nginx-request-timeout.pcap"; peer_client half-head $SA 80; capture_stop
capture_start "$out/malformed-request.pcap"; peer_client malformed-request $SA 80; capture_stop

port=8100
for mode in bad-status-line header-without-colon body-shorter body-longer two-content-lengths \
            content-length-with-chunked bad-chunk-size reset-mid-body close-without-response; do
  name=$mode
  case $mode in
    body-shorter) name=body-shorter-than-content-length ;;
    body-longer) name=body-longer-than-content-length ;;
  esac
  peer_server "$mode" $port
  capture_start "$out/$name.pcap"; curl_c http://$SA:$port/resource; capture_stop
  wait; port=$((port + 1))
done

peer_server sleep-7 $port
capture_start "$out/slow-first-byte.pcap"; curl_c http://$SA:$port/report; capture_stop; wait; port=$((port + 1))

peer_server qps-limited $port
capture_start "$out/alb-headers.pcap"; peer_client alb-trace $SA $port; capture_stop; wait; port=$((port + 1))

peer_server sleep-3 $port
capture_start "$out/client-gives-up.pcap"; peer_client give-up-fin $SA $port; capture_stop 3; wait; port=$((port + 1))

peer_server never $port
capture_start "$out/no-response-at-capture-end.pcap"
peer_client no-response $SA $port & client=$!
# Other traffic goes on meanwhile, as on any real host: the capture's clock runs past the request.
for _ in 1 2 3 4; do sleep 0.5; curl_c http://$SA/a.html; done
capture_stop 0.2
wait; port=$((port + 1))

capture_start "$out/request-body-truncated.pcap"; peer_client body-truncated $SA 80; capture_stop

# Healthy: keep-alive, HEAD, 204, 304, 100-continue, pipelining, chunked with trailers.
peer_server chunked-trailers 8199
head -c 2048 /dev/zero | tr '\0' b > "$work/body"
capture_start "$out/healthy-http.pcap"
curl_c http://$SA/a.html http://$SA/b.html http://$SA/c.html -o /dev/null -o /dev/null
curl_c -I http://$SA/a.html
curl_c http://$SA/empty
etag=$(ip netns exec $C curl -sI http://$SA/b.html | tr -d '\r' | awk -F': ' 'tolower($1)=="etag"{print $2}')
curl_c -H "If-None-Match: $etag" http://$SA/b.html
curl_c -H 'Expect: 100-continue' --data-binary @"$work/body" http://$SA/upload
peer_client pipelined $SA 80
curl_c http://$SA:8199/stream
capture_stop; wait

python3 "$tools/truth_http.py" "$out"
echo "HTTP captures rebuilt in $out"
