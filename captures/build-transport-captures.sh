#!/usr/bin/env bash
# Rebuilds the transport captures (accept queue, MTU blackhole and working PMTUD, loss,
# stalled receiver, offload super-frames, idle keep-alive close) with real software: a client,
# a router and a server namespace. Needs root, iproute2, iptables, ethtool, tcpdump, tshark,
# curl, nginx, python3. CI does not run it.
#   sudo bash captures/build-transport-captures.sh
set -euo pipefail
cd "$(dirname "$0")"
out=$PWD
tools=$PWD/tools
work=$(mktemp -d); chmod 755 "$work"
C=t5cli; R=t5rtr; S=t5srv
CA=10.50.1.1; SA=10.50.2.1

cleanup() {
  for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  for ns in $C $R $S t5c2 t5br t5s2; do ip netns del $ns 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
for ns in $C $R $S; do ip netns del $ns 2>/dev/null || true; done

for ns in $C $R $S; do ip netns add $ns; ip netns exec $ns ip link set lo up; done
ip link add t5c0 type veth peer name t5rc
ip link add t5s0 type veth peer name t5rs
ip link set t5c0 netns $C; ip link set t5rc netns $R
ip link set t5s0 netns $S; ip link set t5rs netns $R
ip netns exec $C ip addr add $CA/24 dev t5c0
ip netns exec $R ip addr add 10.50.1.254/24 dev t5rc
ip netns exec $R ip addr add 10.50.2.254/24 dev t5rs
ip netns exec $S ip addr add $SA/24 dev t5s0
for pair in "$C t5c0" "$R t5rc" "$R t5rs" "$S t5s0"; do
  set -- $pair
  ip netns exec "$1" ip link set "$2" up
  ip netns exec "$1" ethtool -K "$2" tso off gso off gro off >/dev/null 2>&1 || true
done
ip netns exec $C ip route add default via 10.50.1.254
ip netns exec $S ip route add default via 10.50.2.254
ip netns exec $R sysctl -qw net.ipv4.ip_forward=1
sleep 1

mkdir -p "$work/www" "$work/nginx"
echo small > "$work/www/small"
head -c 300000 /dev/zero | tr '\0' 'x' > "$work/www/big"
cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  keepalive_timeout 2s;
  server { listen 80; root $work/www; error_page 405 =200 /small; }
}
NGINX
ip netns exec $S nginx -c "$work/nginx.conf"
sleep 0.5

capture_start() { # ns iface file [filter...]
  local ns=$1 ifc=$2 file=$3; shift 3
  ip netns exec "$ns" tcpdump -U -n -s 0 -i "$ifc" -w "$file" "$@" 2>/dev/null &
  echo $! > "$work/tcpdump.pid"; sleep 1
}
capture_stop() { sleep 1; kill -INT "$(cat "$work/tcpdump.pid")"; wait "$(cat "$work/tcpdump.pid")" 2>/dev/null || true; }
get() { ip netns exec $C curl -s -o /dev/null --max-time "${2:-10}" "$1" || true; }

# 1. accept queue full (backend vantage): backlog 1, nothing accepted for 3 s.
ip netns exec $S python3 "$tools/peer.py" extra accept-late 8090 3 5 &
sleep 0.5
capture_start $S t5s0 "$out/accept-queue-full.pcap" tcp port 8090
for i in 1 2 3 4 5; do get http://$SA:8090/ 12 & sleep 0.05; done
wait_for() { for p in "$@"; do wait "$p" 2>/dev/null || true; done; }
sleep 9
capture_stop

# 2. MTU blackhole: the router's link to the server carries 1280 bytes, and the router's
# ICMP "fragmentation needed" never leaves it. Small requests work, a large POST stalls.
ip netns exec $R ip link set t5rs mtu 1280
ip netns exec $R iptables -A OUTPUT -p icmp --icmp-type fragmentation-needed -j DROP
head -c 20000 /dev/zero | tr '\0' 'p' > "$work/body"
# Each POST goes to its own port, so a connection still retransmitting after its capture
# stopped cannot spill into the next capture.
ip netns exec $S timeout 30 python3 "$tools/peer.py" extra sink 8093 1 &
ip netns exec $S timeout 30 python3 "$tools/peer.py" extra sink 8094 1 &
sleep 0.5
capture_start $C t5c0 "$out/mtu-blackhole.pcap" tcp port 80 or tcp port 8093 or icmp
get http://$SA/small
ip netns exec $C curl -s -o /dev/null --max-time 8 --data-binary @"$work/body" http://$SA:8093/upload || true
capture_stop

# 3. The same path with ICMP allowed: path MTU discovery works.
ip netns exec $R iptables -D OUTPUT -p icmp --icmp-type fragmentation-needed -j DROP
ip netns exec $C ip route flush cache
capture_start $C t5c0 "$out/pmtud-works.pcap" tcp port 8094 or icmp
ip netns exec $C curl -s -o /dev/null --max-time 8 --data-binary @"$work/body" http://$SA:8094/upload || true
capture_stop
ip netns exec $R ip link set t5rs mtu 1500

# 4. Heavy random loss on the server-to-client direction, then light loss that TCP recovers.
ip netns exec $R iptables -A FORWARD -s $SA -m statistic --mode random --probability 0.15 -j DROP
capture_start $C t5c0 "$out/heavy-loss.pcap" tcp port 80
get http://$SA/big 20
capture_stop
ip netns exec $R iptables -F FORWARD
ip netns exec $R iptables -A FORWARD -s $SA -m statistic --mode nth --every 150 --packet 100 -j DROP
capture_start $C t5c0 "$out/light-loss-recovered.pcap" tcp
get http://$SA/big 20
capture_stop
ip netns exec $R iptables -F FORWARD

# 5. A client that stops reading for 3 s: zero window.
ip netns exec $S python3 "$tools/peer.py" extra bulk 8091 2000000 1 &
sleep 0.5
capture_start $C t5c0 "$out/zero-window.pcap" tcp
ip netns exec $C python3 "$tools/peer.py" extra slow-reader $SA 8091 3
capture_stop

# 6. Offload super-frames: captured on the sending host with TSO/GSO on.
ip netns exec $S ethtool -K t5s0 tso on gso on >/dev/null 2>&1 || true
capture_start $S t5s0 "$out/offload-superframes.pcap" tcp
get http://$SA/big 20
capture_stop
ip netns exec $S ethtool -K t5s0 tso off gso off >/dev/null 2>&1 || true

# 7. An idle keep-alive connection closed by nginx after 2 s, then by the client.
capture_start $C t5c0 "$out/keepalive-idle-close.pcap" tcp
ip netns exec $C python3 "$tools/peer.py" extra keepalive-idle $SA 80 4
capture_stop

# 8. A slow path: a userspace bridge holds every frame 200 ms each way (no netem here).
for ns in t5c2 t5br t5s2; do ip netns del $ns 2>/dev/null || true; ip netns add $ns; ip netns exec $ns ip link set lo up; done
ip link add t5x0 type veth peer name t5xa
ip link add t5y0 type veth peer name t5yb
ip link set t5x0 netns t5c2; ip link set t5xa netns t5br
ip link set t5y0 netns t5s2; ip link set t5yb netns t5br
ip netns exec t5c2 ip addr add 10.90.0.1/24 dev t5x0
ip netns exec t5s2 ip addr add 10.90.0.2/24 dev t5y0
for pair in "t5c2 t5x0" "t5br t5xa" "t5br t5yb" "t5s2 t5y0"; do
  set -- $pair
  ip netns exec "$1" ip link set "$2" up promisc on
  # Checksums too: a userspace bridge forwards frames whose checksum the NIC would fill in.
  ip netns exec "$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null 2>&1 || true
done
ip netns exec t5br python3 "$tools/delay_bridge.py" t5xa t5yb 200 14 &
bridge=$!
ip netns exec t5s2 python3 "$tools/peer.py" extra bulk 8092 2000 1 &
sleep 1
capture_start t5c2 t5x0 "$out/high-rtt.pcap" tcp
ip netns exec t5c2 curl -s -o /dev/null --max-time 8 http://10.90.0.2:8092/ || true
capture_stop
kill $bridge 2>/dev/null || true; wait $bridge 2>/dev/null || true
for ns in t5c2 t5br t5s2; do ip netns del $ns 2>/dev/null || true; done

python3 "$tools/truth_transport.py" "$out"
echo "transport captures rebuilt in $out"
