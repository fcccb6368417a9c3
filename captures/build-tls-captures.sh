#!/usr/bin/env bash
# Rebuilds the TLS captures with openssl s_server/s_client and curl in two network namespaces:
# expired and not-yet-valid certificates, a wildcard that matches and one that does not, a
# CN-only certificate, an IP-address SNI, a version mismatch, a client that rejects the
# certificate, and healthy TLS 1.2 and 1.3. Certificates come from tools/make_certs.py (python3
# with the cryptography package). Needs root, iproute2, ethtool, tcpdump, tshark, openssl,
# curl. CI does not run it.
#   sudo bash captures/build-tls-captures.sh
set -euo pipefail
cd "$(dirname "$0")"
out=$PWD
tools=$PWD/tools
work=$(mktemp -d); chmod 755 "$work"
C=tlc; S=tls; SA=10.70.0.2

cleanup() {
  for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done
  ip netns del $C 2>/dev/null || true; ip netns del $S 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns del $C 2>/dev/null || true; ip netns del $S 2>/dev/null || true
ip netns add $C; ip netns add $S
ip link add tlc0 type veth peer name tls0
ip link set tlc0 netns $C; ip link set tls0 netns $S
ip netns exec $C ip addr add 10.70.0.1/24 dev tlc0
ip netns exec $S ip addr add $SA/24 dev tls0
for pair in "$C tlc0" "$S tls0"; do
  set -- $pair
  ip netns exec "$1" ip link set lo up
  ip netns exec "$1" ip link set "$2" up
  ip netns exec "$1" ethtool -K "$2" tso off gso off gro off >/dev/null 2>&1 || true
done
python3 "$tools/make_certs.py" "$work"
sleep 1

capture_start() {
  ip netns exec $C tcpdump -U -n -s 0 -i tlc0 -w "$1" tcp 2>/dev/null &
  echo $! > "$work/tcpdump.pid"; sleep 1
}
capture_stop() { sleep 1; kill -INT "$(cat "$work/tcpdump.pid")"; wait "$(cat "$work/tcpdump.pid")" 2>/dev/null || true; }
server() { # cert port [s_server options...]
  local cert=$1 port=$2; shift 2
  ip netns exec $S timeout 20 openssl s_server -quiet -www -accept "$port" \
    -cert "$work/$cert.pem" -key "$work/$cert.key" "$@" >/dev/null 2>&1 &
  echo $! > "$work/server.pid"; sleep 0.7
}
server_stop() { kill "$(cat "$work/server.pid")" 2>/dev/null || true; wait "$(cat "$work/server.pid")" 2>/dev/null || true; }
client() { # port sni [s_client options...]
  local port=$1 sni=$2; shift 2
  printf 'GET / HTTP/1.0\r\n\r\n' | ip netns exec $C timeout 5 openssl s_client -quiet \
    -connect $SA:"$port" -servername "$sni" "$@" >/dev/null 2>&1 || true
}

server expired 9443 -tls1_2
capture_start "$out/tls-expired.pcap"; client 9443 backend.test -tls1_2; capture_stop; server_stop

server not-yet-valid 9444 -tls1_2
capture_start "$out/tls-not-yet-valid.pcap"; client 9444 backend.test -tls1_2; capture_stop; server_stop

server wildcard 9445 -tls1_2
capture_start "$out/tls-wildcard.pcap"
client 9445 a.example.test -tls1_2
client 9445 a.b.example.test -tls1_2
capture_stop; server_stop

server cn-only 9446 -tls1_2
capture_start "$out/tls-cn-only.pcap"
client 9446 backend.test -tls1_2
client 9446 other.test -tls1_2
capture_stop; server_stop

server ip 9447 -tls1_2
capture_start "$out/tls-ip-sni.pcap"
client 9447 10.70.0.2 -tls1_2
client 9447 10.70.0.9 -tls1_2
capture_stop; server_stop

server good 9452 -tls1_2
capture_start "$out/tls-no-sni.pcap"
printf 'GET / HTTP/1.0\r\n\r\n' | ip netns exec $C timeout 5 openssl s_client -quiet -connect $SA:9452 \
  -noservername -tls1_2 >/dev/null 2>&1 || true
capture_stop; server_stop

server good 9448 -tls1_3
capture_start "$out/tls-version-mismatch.pcap"; client 9448 backend.test -tls1_2; capture_stop; server_stop

server good 9449 -tls1_2
capture_start "$out/tls-client-rejects-cert.pcap"
ip netns exec $C curl -s -o /dev/null --max-time 5 --tlsv1.2 --tls-max 1.2 \
  --resolve backend.test:9449:$SA https://backend.test:9449/ || true
capture_stop; server_stop

server good 9450 -tls1_2
capture_start "$out/tls12-healthy.pcap"
ip netns exec $C curl -s -o /dev/null --max-time 5 --tlsv1.2 --tls-max 1.2 --cacert "$work/ca.pem" \
  --resolve backend.test:9450:$SA https://backend.test:9450/ || true
capture_stop; server_stop

server good 9451 -tls1_3
capture_start "$out/tls13-healthy.pcap"
ip netns exec $C curl -s -o /dev/null --max-time 5 --tlsv1.3 --cacert "$work/ca.pem" \
  --resolve backend.test:9451:$SA https://backend.test:9451/ || true
capture_stop; server_stop

python3 "$tools/truth_tls.py" "$out"
echo "TLS captures rebuilt in $out"
