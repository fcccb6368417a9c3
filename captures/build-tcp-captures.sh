#!/usr/bin/env bash
# Rebuilds the TCP-level captures (refused, unanswered, resets, reuse, link types) with real
# software in two network namespaces joined by a veth pair. Needs root, iproute2, iptables,
# tcpdump, tshark (mergecap), tcpreplay (tcprewrite), curl, nginx, python3, gzip. CI does not run it; it runs the
# analyzer on the files this script left in captures/.
#   sudo bash captures/build-tcp-captures.sh
set -euo pipefail
cd "$(dirname "$0")"
out=$PWD
tools=$PWD/tools
work=$(mktemp -d)
C=lbc; S=lbs
CA=10.77.0.1; SA=10.77.0.2; C6=fd77::1; S6=fd77::2

cleanup() {
  for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  ip netns del $C 2>/dev/null || true
  ip netns del $S 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cleanup_ns() { ip netns del $C 2>/dev/null || true; ip netns del $S 2>/dev/null || true; }
cleanup_ns
mkdir -p "$work"
chmod 755 "$work"

ip netns add $C; ip netns add $S
ip link add lbc0 type veth peer name lbs0
ip link set lbc0 netns $C; ip link set lbs0 netns $S
for ns in $C $S; do ip netns exec $ns ip link set lo up; done
ip netns exec $C ip addr add $CA/24 dev lbc0
ip netns exec $S ip addr add $SA/24 dev lbs0
ip netns exec $C ip -6 addr add $C6/64 dev lbc0 nodad
ip netns exec $S ip -6 addr add $S6/64 dev lbs0 nodad
ip netns exec $C ip link set lbc0 up; ip netns exec $S ip link set lbs0 up
for ns_if in "$C lbc0" "$S lbs0"; do
  set -- $ns_if
  ip netns exec "$1" ethtool -K "$2" tso off gso off gro off >/dev/null 2>&1 || true
done
sleep 1


# nginx answering keep-alive requests on 8080 (IPv4 and IPv6, and the VLAN address).
mkdir -p "$work/www" "$work/nginx"
for p in a b c; do echo "page $p" > "$work/www/$p.html"; done
head -c 30000 /dev/zero | tr '\0' 'd' > "$work/www/doc.html"
cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  keepalive_timeout 10s;
  server { listen 8080; listen [::]:8080; root $work/www; }
}
NGINX
ip netns exec $S nginx -c "$work/nginx.conf"
sleep 0.5

capture_start() { # ns iface file [extra tcpdump args...]
  local ns=$1 ifc=$2 file=$3; shift 3
  ip netns exec "$ns" tcpdump -U -n -s 0 -i "$ifc" -w "$file" "$@" 2>/dev/null &
  echo $! > "$work/tcpdump.pid"
  sleep 1
}
capture_stop() {
  sleep 1
  kill -INT "$(cat "$work/tcpdump.pid")"; wait "$(cat "$work/tcpdump.pid")" 2>/dev/null || true
}
healthy_get() { # one -o per URL so curl writes nothing to the terminal
  local outs=(); for _ in "$@"; do outs+=(-o /dev/null); done
  ip netns exec $C curl -s "${outs[@]}" --max-time 5 "$@" || true
}
refused_get() { ip netns exec $C curl -s -o /dev/null --max-time 5 "$@" || true; }

# 1. refused: nothing listens on 8081; a healthy request to 8080 for contrast.
capture_start $C lbc0 "$out/refused.pcap" tcp
refused_get http://$SA:8081/
healthy_get http://$SA:8080/a.html
refused_get http://$SA:8081/
capture_stop
head -c -20 "$out/refused.pcap" > "$out/cut-mid-record.pcap"

# 2. unanswered: iptables on the server drops SYNs to 8082.
ip netns exec $S iptables -A INPUT -p tcp --dport 8082 --syn -j DROP
capture_start $C lbc0 "$out/syn-unanswered.pcap" tcp
ip netns exec $C curl -s -o /dev/null --connect-timeout 4 http://$SA:8082/ || true
capture_stop
ip netns exec $S iptables -D INPUT -p tcp --dport 8082 --syn -j DROP

# 3. the server resets while the request waits for its response.
ip netns exec $S python3 "$tools/peer.py" serve reset-awaiting 8083 1 & sleep 0.5
capture_start $C lbc0 "$out/server-reset-awaiting-response.pcap" tcp
ip netns exec $C curl -s -o /dev/null --max-time 5 http://$SA:8083/orders || true
capture_stop; wait

# 4. the client gives up and resets while the server is slow.
ip netns exec $S python3 "$tools/peer.py" serve slow 8084 1 & sleep 0.5
capture_start $C lbc0 "$out/client-reset.pcap" tcp
ip netns exec $C python3 "$tools/peer.py" client give-up $SA 8084
sleep 2.5
capture_stop; wait

# 5. the same 4-tuple twice: answered, then reset.
ip netns exec $S python3 "$tools/peer.py" serve answer-then-reset 8085 2 & sleep 0.5
capture_start $C lbc0 "$out/reused-4tuple.pcap" tcp
ip netns exec $C python3 "$tools/peer.py" client reuse $SA 8085 45000
capture_stop; wait

# 6. a late reset after both FINs: normal teardown.
ip netns exec $S python3 "$tools/peer.py" serve reset-after-fins 8086 1 & sleep 0.5
capture_start $C lbc0 "$out/reset-after-fin.pcap" tcp
healthy_get http://$SA:8086/
capture_stop; wait

# 7. healthy keep-alive: three requests on one connection.
capture_start $C lbc0 "$out/healthy-keepalive.pcap" tcp
healthy_get http://$SA:8080/a.html http://$SA:8080/b.html http://$SA:8080/c.html
capture_stop

# 8. two link types in one pcapng: the client's Ethernet view of a refused connection and
# the server host's Linux-cooked view of a healthy one, merged.
capture_start $C lbc0 "$work/eth.pcap" tcp port 8081
refused_get http://$SA:8081/
capture_stop
capture_start $S any "$work/cooked.pcap" tcp port 8080 -y LINUX_SLL
healthy_get http://$SA:8080/b.html
capture_stop
mergecap -F pcapng -w "$out/two-linktypes.pcapng" "$work/eth.pcap" "$work/cooked.pcap"

# 9. Linux cooked v2 (tcpdump -i any).
capture_start $C any "$out/sll2-refused.pcap" tcp -y LINUX_SLL2
refused_get http://$SA:8081/
healthy_get http://$SA:8080/a.html
capture_stop

# 10. 802.1Q. This kernel has no 8021q module, so the tag is added to a real capture by
# tcprewrite (tcpreplay's rewriter), as a switch port would.
capture_start $C lbc0 "$work/untagged.pcap" tcp
refused_get http://$SA:8081/
healthy_get http://$SA:8080/a.html
capture_stop
tcprewrite --enet-vlan=add --enet-vlan-tag=100 --enet-vlan-cfi=0 --enet-vlan-pri=0 \
  -i "$work/untagged.pcap" -o "$out/vlan-refused.pcap"

# 11. IPv6.
capture_start $C lbc0 "$out/ipv6-refused.pcap" ip6 and tcp
refused_get "http://[$S6]:8081/"
healthy_get "http://[$S6]:8080/a.html"
capture_stop

# 12. gzip: a server reset, compressed (detected by magic bytes, not by name).
ip netns exec $S python3 "$tools/peer.py" serve reset-awaiting 8083 1 & sleep 0.5
capture_start $C lbc0 "$work/server-reset.pcap" tcp
ip netns exec $C curl -s -o /dev/null --max-time 5 http://$SA:8083/checkout || true
capture_stop; wait
gzip -n -c "$work/server-reset.pcap" > "$out/server-reset.pcap.gz"

# 13. nanosecond timestamps.
ip netns exec $S python3 "$tools/peer.py" serve reset-awaiting 8083 1 & sleep 0.5
capture_start $C lbc0 "$out/nanosecond-reset.pcap" tcp --time-stamp-precision nano
ip netns exec $C curl -s -o /dev/null --max-time 5 http://$SA:8083/nano || true
capture_stop; wait

# 14. A small snaplen: every frame is cut after 96 bytes, so most of the HTTP response is
# missing from the capture. Only a capture_gap note may come of it, never malformed HTTP.
capture_start $C lbc0 "$out/snaplen-cut.pcap" -s 96 tcp
healthy_get http://$SA:8080/doc.html
capture_stop

python3 "$tools/truth.py" "$out"
echo "captures rebuilt in $out"
