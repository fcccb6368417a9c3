#!/usr/bin/env bash
# Reassembly on hostile orders: one connection of N one-byte segments, all out of order
# (reversed; every other byte, then the rest; shuffled). Prints wall time and peak RSS of
# lbdiag for each, next to `cat` of the same file.
#   bash benches/reassembly.sh [N]      (default N = 400000)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-400000}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cargo build --release --quiet --example synth
cargo build --release --quiet
for order in reverse alternate random; do
  f="$dir/$order.pcap"
  ./target/release/examples/synth "one-byte-$order" "$n" "$f"
  size=$(stat -c %s "$f")
  base=$( { /usr/bin/time -f "%e" cat "$f" > /dev/null; } 2>&1 )
  /usr/bin/time -v ./target/release/lbdiag analyze --format json --fail-on never "$f" \
    > "$dir/report.json" 2> "$dir/time.txt"
  wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$dir/time.txt")
  kb=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$dir/time.txt")
  warn=$(python3 -c "import json; r=json.load(open('$dir/report.json')); print('; '.join(w['message'] for w in r['captures'][0]['warnings']) or 'none')")
  printf '%s: %d one-byte segments, %d MB file; lbdiag %s wall (cat %ss), peak RSS %d MB; warnings: %s\n' \
    "$order" "$n" $((size / 1048576)) "$wall" "$base" $((kb / 1024)) "$warn"
done
