#!/usr/bin/env bash
# Throughput on one large capture, as ratios against baselines measured in the same run:
# reading the file (cat) and tshark's expert analysis of the same file.
#   bash benches/throughput.sh [FILE]   (default: a synthesized 1,000,000-segment capture)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --example synth
cargo build --release --quiet
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
file=${1:-}
if [ -z "$file" ]; then
  file="$dir/stream.pcap"
  ./target/release/examples/synth out-of-order 1000000 "$file"
fi
size=$(stat -c %s "$file")
t() { local s e; s=$(date +%s.%N); "$@" > /dev/null 2>&1 || true; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
cat_s=$(t cat "$file")
lb_s=$(t ./target/release/lbdiag analyze --format json --fail-on never "$file")
ts_s=$(command -v tshark >/dev/null && t tshark -q -z expert -r "$file" || echo "")
mbps() { echo "$size / 1048576 / $1" | bc -l; }
printf 'file: %s (%d MB)\n' "$file" $((size / 1048576))
printf 'cat:    %6.2f s  %8.0f MB/s\n' "$cat_s" "$(mbps "$cat_s")"
printf 'lbdiag: %6.2f s  %8.0f MB/s  (%.1fx the time of cat)\n' "$lb_s" "$(mbps "$lb_s")" "$(echo "$lb_s / $cat_s" | bc -l)"
if [ -n "$ts_s" ]; then
  printf 'tshark: %6.2f s  %8.0f MB/s  (lbdiag is %.1fx faster)\n' "$ts_s" "$(mbps "$ts_s")" "$(echo "$ts_s / $lb_s" | bc -l)"
fi
