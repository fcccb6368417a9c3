#!/usr/bin/env bash
# The event-path benchmark: lbdiag next to baselines measured in the same run, on synthetic
# captures of realistic shapes (examples/synth.rs):
#   keepalive-api  100 concurrent keep-alive connections of small API transactions
#   mixed          plain HTTP downloads and TLS connections, a few hundred open at a time, a
#                  little loss
#   syn-flood      1,000,000 half-open connections
# For each file: its size, then wall time, MB/s, packets/s, transactions/s and peak RSS of
# `cat FILE > /dev/null`, the parse-only baseline (benches/parse_only.rs: pcap-parser and
# etherparse, nothing else), the reader of a threaded run alone (benches/reader_only.rs: decode
# and dealing to the workers' queues, nobody analyzing), lbdiag at --threads 1, 2 and the cores
# available, and `tshark -q -z expert` (100 MB files only, when installed). Then, from
# benches/summary.py: lbdiag's ratios to cat, to parse-only, to one thread and from tshark; the
# CPU time of each thread of one more run (benches/threadcpu.py) and at how many workers the
# reader becomes the limit; whether the reports at every thread count are identical; what
# lbdiag found; and PASS or MISS for each target of issue 14.
#   bash benches/run.sh [--quick]
# --quick: only the 100 MB files (and the SYN flood), no tshark.
# LBDIAG_BENCH_DIR=DIR keeps the captures in DIR and reuses them while examples/synth.rs is
# unchanged (default: a temporary directory, removed at the end). LBDIAG_BENCH_RUNS=N times each
# tool N times and keeps the fastest (default 3; the 3 GB file is timed twice at most).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
for a in "$@"; do
  case "$a" in
    --quick) quick=1 ;;
    *) echo "usage: bash benches/run.sh [--quick]" >&2; exit 2 ;;
  esac
done
runs=${LBDIAG_BENCH_RUNS:-3}

cargo build --release --quiet --example synth
cargo build --release --quiet
# The two bench programs, by the paths cargo reports (their names carry a hash).
bench_bins=$(cargo build --release --quiet --bench parse_only --bench reader_only --message-format=json |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] in ("parse_only", "reader_only") and m.get("executable"):
        print(m["target"]["name"], m["executable"])')
parse_only=$(sed -n 's/^parse_only //p' <<< "$bench_bins")
reader_only=$(sed -n 's/^reader_only //p' <<< "$bench_bins")
synth=./target/release/examples/synth
lbdiag=./target/release/lbdiag

if [ -n "${LBDIAG_BENCH_DIR:-}" ]; then
  dir=$LBDIAG_BENCH_DIR
  mkdir -p "$dir"
else
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' EXIT
fi
work=$(mktemp -d)
trap 'rm -rf "$work"; [ -n "${LBDIAG_BENCH_DIR:-}" ] || rm -rf "$dir"' EXIT
stamp=$(sha256sum examples/synth.rs | cut -c1-16)

# name, then synth's arguments before OUT
shapes=("keepalive-100mb keepalive-api 500 100" "mixed-100mb mixed 100" "syn-flood syn-flood 1000000")
if [ "$quick" = 0 ]; then
  shapes+=("keepalive-1gb keepalive-api 5000 100" "mixed-1gb mixed 1024" "mixed-3gb mixed 3072")
fi

# Times a command with stdout to OUT, keeping the fastest of N runs: "seconds peak_kb".
measure() {
  local n=$1 out=$2; shift 2
  local best="" best_kb=0 i s kb
  local start end
  for ((i = 0; i < n; i++)); do
    start=$(date +%s%N)
    /usr/bin/time -o "$work/time" -f '%M' "$@" > "$out" 2> "$work/err" || true
    end=$(date +%s%N)
    # The clock around the command, not time's %e: that one counts in hundredths.
    s=$(echo "scale=4; ($end - $start) / 1000000000" | bc)
    kb=$(tail -n 1 "$work/time")
    if [ -z "$best" ] || [ "$(echo "$s < $best" | bc -l)" = 1 ]; then best=$s; best_kb=$kb; fi
  done
  echo "$best $best_kb"
}

# lbdiag at one thread, two, and all the cores (once when that is two).
threads=(1 2)
all=$(nproc)
if [ "$all" -gt 2 ]; then threads+=("$all"); fi
most=${threads[-1]}

echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)), load average $(cut -d' ' -f1-3 /proc/loadavg), lbdiag $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
results="$work/results.tsv"
: > "$results"
for shape in "${shapes[@]}"; do
  read -r name kind args <<< "$shape"
  f="$dir/$name.pcap"
  if [ ! -f "$f" ] || [ "$(cat "$f.stamp" 2>/dev/null)" != "$stamp" ]; then
    # shellcheck disable=SC2086
    "$synth" "$kind" $args "$f" 2> /dev/null
    echo "$stamp" > "$f.stamp"
  fi
  # Written back to disk before timing: writeback of a fresh file slows whatever runs beside it.
  sync "$f"
  size=$(stat -c %s "$f")
  n=$runs
  if [ "$size" -gt $((2 << 30)) ] && [ "$n" -gt 2 ]; then n=2; fi
  cat "$f" > /dev/null # into the page cache, so that every tool reads from memory
  read -r s kb < <(measure "$n" /dev/null cat "$f")
  printf 'row\t%s\tcat\t%s\t%s\n' "$name" "$s" "$kb" >> "$results"
  read -r s kb < <(measure "$n" "$work/out" "$parse_only" "$f")
  printf 'row\t%s\tparse-only\t%s\t%s\n' "$name" "$s" "$kb" >> "$results"
  packets=$(sed -n 's/.*: \([0-9]*\) packets.*/\1/p' "$work/out")
  read -r s kb < <(measure "$n" "$work/out" "$reader_only" --workers "$most" "$f")
  printf 'row\t%s\treader alone\t%s\t%s\n' "$name" "$s" "$kb" >> "$results"
  for t in "${threads[@]}"; do
    read -r s kb < <(measure "$n" "$work/out" "$lbdiag" analyze --threads "$t" --format json --fail-on never "$f")
    cp "$work/out" "$work/$name.t$t.json"
    printf 'row\t%s\tlbdiag -t %s\t%s\t%s\n' "$name" "$t" "$s" "$kb" >> "$results"
  done
  # One more run of each under benches/threadcpu.py, for the CPU time of every thread.
  printf 'cpu\t%s\treader alone\t%s\n' "$name" \
    "$(python3 benches/threadcpu.py /dev/null "$reader_only" --workers "$most" "$f")" >> "$results"
  for t in 1 "$most"; do
    printf 'cpu\t%s\tlbdiag -t %s\t%s\n' "$name" "$t" \
      "$(python3 benches/threadcpu.py /dev/null "$lbdiag" analyze --threads "$t" --format json --fail-on never "$f")" >> "$results"
  done
  if [ "$quick" = 0 ] && [ "$size" -lt $((200 << 20)) ] && [ "$kind" != syn-flood ] && command -v tshark > /dev/null; then
    read -r s kb < <(measure 1 /dev/null tshark -q -z expert -r "$f")
    printf 'row\t%s\ttshark\t%s\t%s\n' "$name" "$s" "$kb" >> "$results"
  fi
  printf 'shape\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$kind" "$size" "$packets" "$f" "$work/$name" >> "$results"
done

python3 benches/summary.py "$results" "$quick" "${threads[@]}"
