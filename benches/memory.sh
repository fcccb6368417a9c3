#!/usr/bin/env bash
# Peak memory and time on stress captures, next to a baseline measured in the same run:
# `cat FILE > /dev/null` for time, and the size of the file for memory.
#   bash benches/memory.sh [N]      (default N = 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cargo build --release --quiet --example synth
cargo build --release --quiet
for kind in syn-flood out-of-order; do
  f="$dir/$kind.pcap"
  ./target/release/examples/synth "$kind" "$n" "$f"
  size=$(stat -c %s "$f")
  base=$( { /usr/bin/time -f "%e" cat "$f" > /dev/null; } 2>&1 )
  out=$( { /usr/bin/time -f "%e %M" ./target/release/lbdiag analyze --format json --fail-on never "$f" > "$dir/report.json"; } 2>&1 )
  secs=${out% *}; kb=${out#* }
  warn=$(python3 -c "import json,sys; r=json.load(open('$dir/report.json')); print('; '.join(w['message'] for w in r['captures'][0]['warnings']) or 'none')")
  printf '%s: %d packets, %d MB file; lbdiag %ss (cat %ss), peak RSS %d MB (%.2f x file size); warnings: %s\n' \
    "$kind" "$n" $((size / 1048576)) "$secs" "$base" $((kb / 1024)) "$(echo "$kb * 1024 / $size" | bc -l)" "$warn"
done
