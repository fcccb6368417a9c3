#!/usr/bin/env bash
# Rebuilds lbdiag's TCP-level captures (refusals, unanswered SYNs, resets, 4-tuple reuse, link
# types, VLAN, IPv6, gzip, a cut file, nanosecond timestamps, a short snaplen) with real software: the Linux TCP
# stack, curl, nginx, tcpdump, dumpcap and the small Python peers in tools/tcp_peers.py, in two
# network namespaces joined by veth pairs. Then writes NAME.truth.json beside each capture from
# tshark's reading of it (tools/make_truth.py, which fails if a capture does not show its story).
#
#   sudo bash captures/make-captures.sh [OUTDIR]     (OUTDIR defaults to captures/ itself)
#
# Needs root, iproute2, iptables, ethtool, tcpdump, tshark (dumpcap, capinfos), curl, nginx,
# python3, gzip. CI does not run it; the tests read the files it leaves in captures/.
# Idempotent: it deletes and recreates its namespaces, and deletes them again when it ends.
# All traffic stays between the two namespaces it creates; every loop is bounded.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "make-captures.sh: needs root (sudo bash $0)" >&2; exit 1; }
for t in ip iptables ethtool ss tcpdump tshark dumpcap capinfos curl nginx gzip python3; do
  command -v "$t" >/dev/null || { echo "make-captures.sh: $t is missing" >&2; exit 1; }
done

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
mkdir -p "$out"; out=$(cd "$out" && pwd)
# One run at a time (two runs would share namespace names and output files).
exec 9>/run/lock/lbdiag-make-captures.lock
flock -n 9 || { echo "make-captures.sh: another run is in progress" >&2; exit 1; }
tools=$here/tools
PY=$(command -v python3)
work=$(mktemp -d /tmp/lbdiag-captures.XXXXXX)
chmod 755 "$work"

# Fixed names and addresses, so that regenerated captures look alike.
C=lbdiag-client; S=lbdiag-server          # namespaces
CIF=vc0; SIF=vs0                          # main veth pair
CVIF=vc100; SVIF=vs100                    # VLAN 100 trunk (second veth pair)
CA=10.10.0.1; SA=10.10.0.2                # client, server
C6=fd00:10::1; S6=fd00:10::2
CV=10.10.100.1; SV=10.10.100.2            # addresses on VLAN 100

cleanup() {
  local p
  # Only background jobs of this script that are still running (waited-for ones are gone).
  for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done
  for p in $(jobs -p); do wait "$p" 2>/dev/null || true; done
  if [ -s "$work/nginx.pid" ]; then kill "$(cat "$work/nginx.pid")" 2>/dev/null || true; fi
  ip netns del $C 2>/dev/null || true
  ip netns del $S 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns del $C 2>/dev/null || true
ip netns del $S 2>/dev/null || true
ip link del $CIF 2>/dev/null || true    # left in the root namespace by an interrupted run
ip link del $CVIF 2>/dev/null || true

# --- topology ----------------------------------------------------------------------------
ip netns add $C
ip netns add $S
ip link add $CIF type veth peer name $SIF
ip link add $CVIF type veth peer name $SVIF
ip link set $CIF netns $C; ip link set $CVIF netns $C
ip link set $SIF netns $S; ip link set $SVIF netns $S
inc() { ip netns exec $C "$@"; }
ins() { ip netns exec $S "$@"; }
for ns in $C $S; do
  ip netns exec $ns ip link set lo up
  ip netns exec $ns sysctl -qw net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0
done
inc ip addr add $CA/24 dev $CIF;  ins ip addr add $SA/24 dev $SIF
inc ip -6 addr add $C6/64 dev $CIF nodad; ins ip -6 addr add $S6/64 dev $SIF nodad
for pair in "$C $CIF" "$C $CVIF" "$S $SIF" "$S $SVIF"; do
  set -- $pair
  ip netns exec "$1" ip link set "$2" up
  # No segmentation or checksum offload: frames no larger than the MTU, and correct TCP
  # checksums in the captures (with offload a veth capture shows unfilled checksums).
  ip netns exec "$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null 2>&1 || true
done
# VLAN 100 on the second veth pair: VLAN subinterfaces where the kernel has the 8021q driver;
# otherwise (as on the kernel these captures were made on) eBPF programs that push and pop the
# tag on the veths themselves (tools/vlan_tcx.py, attached around capture 10).
if inc ip link add link $CVIF name $CVIF.100 type vlan id 100 2>/dev/null; then
  ins ip link add link $SVIF name $SVIF.100 type vlan id 100
  vlan_mode=8021q; CVDEV=$CVIF.100; SVDEV=$SVIF.100
  inc ip link set $CVDEV up; ins ip link set $SVDEV up
else
  vlan_mode=ebpf; CVDEV=$CVIF; SVDEV=$SVIF
fi
inc ip addr add $CV/24 dev $CVDEV; ins ip addr add $SV/24 dev $SVDEV
sleep 1

# --- helpers -----------------------------------------------------------------------------
start_bg() { # external command... ; runs it in the background, its pid in $last_pid
  # (an external command, not a shell function: $! must be the process itself, so that
  # killing it by pid stops it; ip netns exec execs its command in place)
  "$@" &
  last_pid=$!
}
wait_listen() { # ns port: until something listens there (at most 5 s)
  local i
  for i in $(seq 50); do
    if ip netns exec "$1" ss -Htln "sport = :$2" | grep -q .; then return 0; fi
    sleep 0.1
  done
  echo "make-captures.sh: nothing listens on port $2 in $1" >&2; exit 1
}
wait_pid() { wait "$1" 2>/dev/null || true; }
cap_pid=
capture_start() { # ns iface file [tcpdump args...]
  local ns=$1 ifc=$2 file=$3 i; shift 3
  rm -f "$file"
  : > "$work/cap.err"
  # --immediate-mode: with TPACKET_V3's 1 s block timeout, packets in the unfinished block
  # can be lost when tcpdump is stopped soon after the traffic.
  start_bg ip netns exec "$ns" tcpdump -U --immediate-mode -n -s 262144 -i "$ifc" -w "$file" "$@" \
    2>"$work/cap.err"
  cap_pid=$last_pid
  for i in $(seq 50); do grep -q "listening on" "$work/cap.err" && break; sleep 0.1; done
  sleep 0.5
}
dumpcap_start() { # ns file [dumpcap args...]
  local ns=$1 file=$2 i; shift 2
  rm -f "$file"
  : > "$work/cap.err"
  start_bg ip netns exec "$ns" dumpcap -q "$@" -w "$file" 2>"$work/cap.err"
  cap_pid=$last_pid
  for i in $(seq 50); do grep -q "Capturing on" "$work/cap.err" && break; sleep 0.1; done
  sleep 1
}
capture_stop() {
  sleep 1
  kill -INT "$cap_pid"
  wait_pid "$cap_pid"
}
show() { # file [max frames]: prints what tshark reads in a capture
  echo "== $(basename "$1")"
  { tshark -r "$1" ${2:+-c "$2"} 2>&1 || true; } | { grep -v '^Running as user' || true; } |
    sed 's/^/   /'
}
# curl from the client namespace with a fixed source port; one -o per URL.
get() { # local-port url...
  local lport=$1 outs=(); shift
  for _ in "$@"; do outs+=(-o /dev/null); done
  inc curl -s "${outs[@]}" --local-port "$lport" --max-time 5 "$@" || true
}
peer_serve() { # mode port
  start_bg ip netns exec $S "$PY" "$tools/tcp_peers.py" serve "$1" "$2"
  peer_pid=$last_pid
  wait_listen $S "$2"
}

# nginx on the server: keep-alive HTTP/1.1 on 8080 (IPv4, IPv6, VLAN address).
mkdir -p "$work/www" "$work/nginx"
for p in a b c; do printf 'page %s\n' "$p" > "$work/www/$p.html"; done
head -c 30000 /dev/zero | tr '\0' 'd' > "$work/www/doc.html"
chmod -R a+rX "$work/www"
cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
daemon on;
pid $work/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body; proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi; uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  keepalive_timeout 30s;
  server { listen 8080; listen [::]:8080; root $work/www; }
}
NGINX
ins nginx -c "$work/nginx.conf"
wait_listen $S 8080

# Ports on the server: 8080 nginx; 8081 nothing listens; 8082 SYNs dropped; 8083-8089 peers
# (8085 is skipped: tshark decodes it as another protocol).
# Each client connection uses its own fixed source port (40xxx), so no TIME_WAIT gets in the way.

# 1. refused: nothing listens on 8081, twice; a healthy request to nginx in between.
capture_start $C $CIF "$out/refused.pcap" tcp
get 40101 http://$SA:8081/api/orders
get 40102 http://$SA:8080/a.html
get 40103 http://$SA:8081/api/orders
capture_stop
show "$out/refused.pcap"

# 13. cut in the middle of the last record (the second refusal's RST).
head -c -20 "$out/refused.pcap" > "$out/cut-mid-record.pcap"

# 2. SYNs to 8082 dropped by iptables on the server; curl gives up after 4 s.
ins iptables -A INPUT -p tcp --dport 8082 --syn -j DROP
capture_start $C $CIF "$out/syn-unanswered.pcap" tcp
inc curl -s -o /dev/null --local-port 40201 --connect-timeout 4 http://$SA:8082/health || true
capture_stop
ins iptables -D INPUT -p tcp --dport 8082 --syn -j DROP
show "$out/syn-unanswered.pcap"

# 3. the server reads the request, waits 0.3 s and resets (SO_LINGER 0) while curl waits.
peer_serve reset-awaiting 8083
capture_start $C $CIF "$out/server-reset-awaiting-response.pcap" tcp
get 40301 http://$SA:8083/orders
capture_stop; wait_pid "$peer_pid"
show "$out/server-reset-awaiting-response.pcap"

# 4. the server takes 2 s; the client gives up after 0.5 s and resets (SO_LINGER 0).
peer_serve slow 8084
capture_start $C $CIF "$out/client-reset.pcap" tcp
inc "$PY" "$tools/tcp_peers.py" client give-up $SA 8084 40401
sleep 2
capture_stop; wait_pid "$peer_pid"
show "$out/client-reset.pcap"

# 5. the same 4-tuple twice: answered (server closes first), then reset while waiting.
peer_serve answer-then-reset 8089
capture_start $C $CIF "$out/reused-4tuple.pcap" tcp
inc "$PY" "$tools/tcp_peers.py" client reuse $SA 8089 40501
capture_stop; wait_pid "$peer_pid"
show "$out/reused-4tuple.pcap"

# 6. a late RST after both FINs: the server answers and closes; the client sends a stray CRLF
# in the segment that carries its FIN; the server's orphaned socket answers that with RST.
peer_serve answer-and-close 8086
capture_start $C $CIF "$out/reset-after-fin.pcap" tcp
inc "$PY" "$tools/tcp_peers.py" client stray-crlf $SA 8086 40601
capture_stop; wait_pid "$peer_pid"
show "$out/reset-after-fin.pcap"

# 7. healthy: three pages from nginx over one keep-alive connection.
capture_start $C $CIF "$out/healthy-keepalive.pcap" tcp
get 40701 http://$SA:8080/a.html http://$SA:8080/b.html http://$SA:8080/c.html
capture_stop
show "$out/healthy-keepalive.pcap"

# 8. one pcapng, two interfaces, two link types, captured live by dumpcap in the client
# namespace: "any" (Linux cooked) sees a healthy request first, then the veth (Ethernet) sees a
# refused connection, so the refusal's frame numbers count the other interface's frames too.
dumpcap_start $C "$out/two-linktypes.pcapng" \
  -i $CIF -f "tcp port 8081" -i any -f "tcp port 8080"
get 40801 http://$SA:8080/b.html
# dumpcap hands each interface's packets over in buffered blocks (no immediate mode), so
# packets of two interfaces close in time can land in the file out of time order; a pause
# longer than its read timeout keeps the file in time order.
sleep 1.5
get 40802 http://$SA:8081/
capture_stop
chmod 644 "$out/two-linktypes.pcapng"  # dumpcap creates it 0600
show "$out/two-linktypes.pcapng"
capinfos "$out/two-linktypes.pcapng" | grep -iE "encapsulation|interface|Number of packets" || true

# 9. Linux cooked v2: tcpdump -i any -y LINUX_SLL2.
capture_start $C any "$out/sll2-refused.pcap" -y LINUX_SLL2 tcp
get 40901 http://$SA:8081/
get 40902 http://$SA:8080/a.html
capture_stop
show "$out/sll2-refused.pcap"

# 10. 802.1Q VLAN 100, captured on the client's parent veth so that frames carry the tag.
# Without the 8021q driver ("ip link add ... type vlan" fails), tools/vlan_tcx.py attaches
# eBPF programs that push the tag on egress and pop it on ingress (the kernel's own
# skb_vlan_push/pop, which a VLAN device uses too) for the duration of this capture.
if [ $vlan_mode = ebpf ]; then
  rm -f "$work/vlan-c.ready" "$work/vlan-s.ready"
  start_bg ip netns exec $C "$PY" "$tools/vlan_tcx.py" $CVIF 100 60 "$work/vlan-c.ready"
  vlan_c=$last_pid
  start_bg ip netns exec $S "$PY" "$tools/vlan_tcx.py" $SVIF 100 60 "$work/vlan-s.ready"
  vlan_s=$last_pid
  for i in $(seq 50); do
    [ -e "$work/vlan-c.ready" ] && [ -e "$work/vlan-s.ready" ] && break; sleep 0.1
  done
  [ -e "$work/vlan-c.ready" ] && [ -e "$work/vlan-s.ready" ] ||
    { echo "make-captures.sh: VLAN tagging could not be attached" >&2; exit 1; }
fi
capture_start $C $CVIF "$out/vlan-refused.pcap" tcp
get 41001 http://$SV:8081/
get 41002 http://$SV:8080/a.html
capture_stop
if [ $vlan_mode = ebpf ]; then kill "$vlan_c" "$vlan_s"; wait_pid "$vlan_c"; wait_pid "$vlan_s"; fi
show "$out/vlan-refused.pcap"

# 11. IPv6: a refusal and a healthy request.
capture_start $C $CIF "$out/ipv6-refused.pcap" ip6 and tcp
get 41101 "http://[$S6]:8081/"
get 41102 "http://[$S6]:8080/a.html"
capture_stop
show "$out/ipv6-refused.pcap"

# 12. a server reset, gzip-compressed (the analyzer detects gzip by its magic bytes).
peer_serve reset-awaiting 8087
capture_start $C $CIF "$work/server-reset.pcap" tcp
get 41201 http://$SA:8087/checkout
capture_stop; wait_pid "$peer_pid"
show "$work/server-reset.pcap"
gzip -n -9 -c "$work/server-reset.pcap" > "$out/server-reset.pcap.gz"

# 14. a server reset captured with nanosecond timestamps (legacy pcap, nanosecond magic).
peer_serve reset-awaiting 8088
capture_start $C $CIF "$out/nanosecond-reset.pcap" --time-stamp-precision nano tcp
get 41401 http://$SA:8088/nano
capture_stop; wait_pid "$peer_pid"
show "$out/nanosecond-reset.pcap"

show "$out/cut-mid-record.pcap"

# 15. a 96-byte snaplen: every frame is cut after 96 bytes while curl downloads 30 KB from
# nginx, so most of the HTTP response is missing from the capture (healthy traffic).
capture_start $C $CIF "$out/snaplen-cut.pcap" -s 96 tcp
get 41501 http://$SA:8080/doc.html
capture_stop
show "$out/snaplen-cut.pcap" 12

VLAN_MODE=$vlan_mode "$PY" "$tools/make_truth.py" "$out"
echo "captures rebuilt in $out"
