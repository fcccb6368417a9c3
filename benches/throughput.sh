#!/usr/bin/env bash
# Throughput on one large capture, as ratios against baselines measured in the same run:
# reading the file (cat) and tshark's expert analysis of the same file.
#   bash benches/throughput.sh [FILE]   (default: a synthesized 300,000-frame, 296 MB download;
#   tshark needs about five minutes for it)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --example synth
cargo build --release --quiet
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
file=${1:-}
if [ -z "$file" ]; then
  file="$dir/download.pcap"
  ./target/release/examples/synth in-order 300000 "$file"
fi
size=$(stat -c %s "$file")
# Best of three runs, to keep the machine's other work out of the figure.
t() {
  local best="" s e d
  for _ in 1 2 3; do
    s=$(date +%s.%N); "$@" > /dev/null 2>&1 || true; e=$(date +%s.%N)
    d=$(echo "$e - $s" | bc -l)
    if [ -z "$best" ] || [ "$(echo "$d < $best" | bc -l)" = 1 ]; then best=$d; fi
  done
  echo "$best"
}
cat_s=$(t cat "$file")
lb_s=$(t ./target/release/lbdiag analyze --format json --fail-on never "$file")
ts_s=""
if command -v tshark >/dev/null; then
  s=$(date +%s.%N); tshark -q -z expert -r "$file" > /dev/null 2>&1 || true; e=$(date +%s.%N)
  ts_s=$(echo "$e - $s" | bc -l)
fi
mbps() { echo "$size / 1048576 / $1" | bc -l; }
printf 'file: %s (%d MB)\n' "$file" $((size / 1048576))
printf 'cat:    %6.2f s  %8.0f MB/s\n' "$cat_s" "$(mbps "$cat_s")"
printf 'lbdiag: %6.2f s  %8.0f MB/s  (%.1fx the time of cat)\n' "$lb_s" "$(mbps "$lb_s")" "$(echo "$lb_s / $cat_s" | bc -l)"
if [ -n "$ts_s" ]; then
  printf 'tshark: %6.2f s  %8.0f MB/s  (lbdiag is %.1fx faster)\n' "$ts_s" "$(mbps "$ts_s")" "$(echo "$ts_s / $lb_s" | bc -l)"
fi
