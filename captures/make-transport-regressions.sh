#!/usr/bin/env bash
# Rebuilds the regression captures for transport and TLS defects with real software in two
# network namespaces joined by a veth pair: iptables REJECT answering SYNs with ICMP (port
# unreachable, host prohibited, ICMPv6 port unreachable); a client whose first SYN-ACK is
# dropped so it repeats a SYN the server had already answered; one-sided captures (tcpdump -Q
# out / -Q in) and one without the SYN-ACK; TLS 1.3 with a HelloRetryRequest and
# middlebox-compatibility ChangeCipherSpec (openssl s_server/s_client); TLS over TCP Fast Open
# (curl --tcp-fastopen); an SSLv2-format ClientHello to a server with an expired certificate;
# and a 340 KB certificate chain. Then writes NAME.truth.json beside each capture from
# tshark's reading of it (tools/truth_regressions.py).
#
#   sudo bash captures/make-transport-regressions.sh [OUTDIR]   (default: captures/)
#
# Needs root, iproute2, iptables/ip6tables, ethtool, tcpdump, tshark, curl, openssl, python3
# with the cryptography package. CI does not run it. All traffic stays between the two
# namespaces it creates; every wait is bounded.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "make-transport-regressions.sh: needs root" >&2; exit 1; }
for t in ip iptables ip6tables ethtool tcpdump tshark curl openssl python3; do
  command -v "$t" >/dev/null || { echo "make-transport-regressions.sh: $t is missing" >&2; exit 1; }
done
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
mkdir -p "$out"; out=$(cd "$out" && pwd)
tools=$here/tools
PY=$(command -v python3)
work=$(mktemp -d /tmp/lbdiag-regressions.XXXXXX); chmod 755 "$work"
C=trgc; S=trgs; CA=10.80.0.1; SA=10.80.0.2; C6=fd00:80::1; S6=fd00:80::2

cleanup() {
  local p
  for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done
  for p in $(jobs -p); do wait "$p" 2>/dev/null || true; done
  ip netns del $C 2>/dev/null || true; ip netns del $S 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns del $C 2>/dev/null || true; ip netns del $S 2>/dev/null || true
ip link del trgc0 2>/dev/null || true
ip netns add $C; ip netns add $S
ip link add trgc0 type veth peer name trgs0
ip link set trgc0 netns $C; ip link set trgs0 netns $S
inc() { ip netns exec $C "$@"; }
ins() { ip netns exec $S "$@"; }
for pair in "$C trgc0" "$S trgs0"; do
  set -- $pair
  ip netns exec "$1" ip link set lo up
  ip netns exec "$1" sysctl -qw net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0
  ip netns exec "$1" ip link set "$2" up
  ip netns exec "$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null 2>&1 || true
done
inc ip addr add $CA/24 dev trgc0; ins ip addr add $SA/24 dev trgs0
inc ip -6 addr add $C6/64 dev trgc0 nodad; ins ip -6 addr add $S6/64 dev trgs0 nodad
"$PY" "$tools/make_certs.py" "$work"
"$PY" "$tools/regression_peers.py" bigcert "$work"
"$PY" "$tools/regression_peers.py" rsa-expired "$work"
sleep 1

cap_pid=
capture_start() { # ns iface file [tcpdump args...]
  local ns=$1 ifc=$2 file=$3 i; shift 3
  rm -f "$file"; : > "$work/cap.err"
  ip netns exec "$ns" tcpdump -U --immediate-mode -n -s 262144 -i "$ifc" -w "$file" "$@" \
    2>"$work/cap.err" &
  cap_pid=$!
  for i in $(seq 50); do grep -q "listening on" "$work/cap.err" && break; sleep 0.1; done
  sleep 0.5
}
capture_stop() { sleep 1; kill -INT "$cap_pid"; wait "$cap_pid" 2>/dev/null || true; }
wait_listen() { # ns port
  local i
  for i in $(seq 50); do
    ip netns exec "$1" ss -Htln "sport = :$2" | grep -q . && return 0; sleep 0.1
  done
  echo "make-transport-regressions.sh: nothing listens on $2" >&2; exit 1
}
srv_pid=
http_server() { # port: python's http.server in the server namespace
  (cd "$work" && exec ip netns exec $S timeout 30 "$PY" -m http.server "$1" --bind :: >/dev/null 2>&1) &
  srv_pid=$!; wait_listen $S "$1"
}
tls_server() { # cert port [s_server options...]
  local cert=$1 port=$2; shift 2
  ip netns exec $S timeout 30 openssl s_server -quiet -www -accept "$port" \
    -cert "$work/$cert.pem" -key "$work/$cert.key" "$@" >/dev/null 2>&1 &
  srv_pid=$!; wait_listen $S "$port"
}
server_stop() { kill "$srv_pid" 2>/dev/null || true; wait "$srv_pid" 2>/dev/null || true; }
show() { echo "== $(basename "$1")"; tshark -r "$1" 2>/dev/null | sed 's/^/   /' | head -40 || true; }

# 1. iptables REJECT: port unreachable (the default), host prohibited, and ICMPv6 port
# unreachable; curl's kernel gives up at the first ICMP message.
ins iptables -A INPUT -p tcp --dport 8101 -j REJECT
ins iptables -A INPUT -p tcp --dport 8102 -j REJECT --reject-with icmp-host-prohibited
ins ip6tables -A INPUT -p tcp --dport 8103 -j REJECT
capture_start $C trgc0 "$out/icmp-reject.pcap" tcp or icmp or icmp6
inc curl -s -o /dev/null --max-time 3 --local-port 41101 http://$SA:8101/ || true
inc curl -s -o /dev/null --max-time 3 --local-port 41102 http://$SA:8102/ || true
inc curl -s -o /dev/null --max-time 3 --local-port 41103 "http://[$S6]:8103/" || true
capture_stop
ins iptables -F INPUT; ins ip6tables -F INPUT
show "$out/icmp-reject.pcap"

# 2. The client's kernel drops the first SYN-ACK, so the client repeats a SYN the server had
# answered at once; captured on the server, which sees both SYN-ACKs.
http_server 8104
inc iptables -A INPUT -p tcp --sport 8104 --tcp-flags SYN,ACK SYN,ACK \
  -m statistic --mode nth --every 1000 --packet 0 -j DROP
capture_start $S trgs0 "$out/syn-repeated-after-synack.pcap" tcp
inc curl -s -o /dev/null --max-time 5 --local-port 41104 http://$SA:8104/ || true
capture_stop
inc iptables -F INPUT; server_stop
show "$out/syn-repeated-after-synack.pcap"

# 3. One-sided captures: only what the client sends (-Q out), only what it receives (-Q in),
# and both directions without the SYN-ACK.
http_server 8105
capture_start $C trgc0 "$out/one-sided-client.pcap" -Q out tcp port 8105
inc curl -s -o /dev/null --max-time 5 --local-port 41105 http://$SA:8105/ || true
capture_stop
capture_start $C trgc0 "$out/one-sided-server.pcap" -Q in tcp port 8105
inc curl -s -o /dev/null --max-time 5 --local-port 41106 http://$SA:8105/ || true
capture_stop
capture_start $C trgc0 "$out/synack-not-captured.pcap" \
  "tcp port 8105 and not (tcp[tcpflags] & (tcp-syn|tcp-ack) == (tcp-syn|tcp-ack))"
inc curl -s -o /dev/null --max-time 5 --local-port 41107 http://$SA:8105/ || true
capture_stop
server_stop
for f in one-sided-client one-sided-server synack-not-captured; do show "$out/$f.pcap"; done

# 4. TLS 1.3 with a HelloRetryRequest: the server wants P-256, the client's key share is for
# X25519 only; both send middlebox-compatibility ChangeCipherSpec records.
tls_server good 9461 -tls1_3 -groups P-256
capture_start $C trgc0 "$out/tls13-hrr-ccs.pcap" tcp
printf 'GET / HTTP/1.0\r\n\r\n' | inc timeout 5 openssl s_client -quiet -tls1_3 \
  -groups X25519:P-256 -connect $SA:9461 -servername backend.test >/dev/null 2>&1 || true
capture_stop; server_stop
show "$out/tls13-hrr-ccs.pcap"

# 5. TLS over TCP Fast Open: the ClientHello rides on the SYN (no cookie needed: client flag
# 0x4, server flags 0x200 and 0x400 for listeners without the socket option); TLS 1.3, then
# TLS 1.2; both complete and close with FIN.
inc sysctl -qw net.ipv4.tcp_fastopen=5
ins sysctl -qw net.ipv4.tcp_fastopen=1538
tls_server good 9462
capture_start $C trgc0 "$out/tls-fast-open.pcap" tcp
inc curl -s -o /dev/null --max-time 5 --tcp-fastopen --tlsv1.3 --cacert "$work/ca.pem" \
  --resolve backend.test:9462:$SA https://backend.test:9462/ || true
inc curl -s -o /dev/null --max-time 5 --tcp-fastopen --tlsv1.2 --tls-max 1.2 \
  --cacert "$work/ca.pem" --resolve backend.test:9462:$SA https://backend.test:9462/ || true
capture_stop; server_stop
inc sysctl -qw net.ipv4.tcp_fastopen=1; ins sysctl -qw net.ipv4.tcp_fastopen=1
show "$out/tls-fast-open.pcap"

# 6. An SSLv2-format ClientHello (offering TLS 1.2, RSA key exchange) to a server whose
# certificate expired.
tls_server rsa-expired 9464 -tls1_2 -cipher 'AES128-SHA:AES256-SHA:AES128-GCM-SHA256:@SECLEVEL=0'
capture_start $C trgc0 "$out/tls-sslv2-hello-expired.pcap" tcp
inc "$PY" "$tools/regression_peers.py" sslv2-hello $SA 9464 || true
capture_stop; server_stop
show "$out/tls-sslv2-hello-expired.pcap"

# 7. A 340 KB certificate chain (an expired certificate with 13,000 names), in a Certificate
# message spread over some twenty records.
tls_server big 9465 -tls1_2
capture_start $C trgc0 "$out/tls-large-certificate.pcap" tcp
inc "$PY" "$tools/regression_peers.py" tls12-hello $SA 9465 backend.test || true
capture_stop; server_stop
show "$out/tls-large-certificate.pcap"

"$PY" "$tools/truth_regressions.py" "$out"
echo "regression captures rebuilt in $out"
