#!/usr/bin/env bash
# The event-path benchmark: lbdiag next to baselines measured in the same run, on synthetic
# captures of realistic shapes (examples/synth.rs):
#   keepalive-api  100 concurrent keep-alive connections of small API transactions
#   mixed          plain HTTP downloads and TLS connections, a few hundred open at a time, a
#                  little loss
#   syn-flood      1,000,000 half-open connections
# For each file: its size, then wall time, MB/s, packets/s, transactions/s and peak RSS of
# `cat FILE > /dev/null`, the parse-only baseline (benches/parse_only.rs: pcap-parser and
# etherparse, nothing else), lbdiag, and `tshark -q -z expert` (100 MB files only, when
# installed); then lbdiag's ratios to cat and to parse-only, and what lbdiag found.
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
parse_only=$(cargo build --release --quiet --bench parse_only --message-format=json |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "parse_only" and m.get("executable"):
        print(m["executable"])')
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
  read -r cat_s cat_kb < <(measure "$n" /dev/null cat "$f")
  read -r po_s po_kb < <(measure "$n" "$work/out" "$parse_only" "$f")
  packets=$(sed -n 's/.*: \([0-9]*\) packets.*/\1/p' "$work/out")
  read -r lb_s lb_kb < <(measure "$n" "$work/out" "$lbdiag" analyze --format json --fail-on never "$f")
  cp "$work/out" "$work/$name.json"
  ts_s=- ts_kb=-
  if [ "$quick" = 0 ] && [ "$size" -lt $((200 << 20)) ] && [ "$kind" != syn-flood ] && command -v tshark > /dev/null; then
    read -r ts_s ts_kb < <(measure 1 /dev/null tshark -q -z expert -r "$f")
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$size" "$packets" \
    "$cat_s" "$cat_kb" "$po_s" "$po_kb" "$lb_s" "$lb_kb" "$ts_s" "$ts_kb" "$f" "$work/$name.json" >> "$results"
done

python3 - "$results" <<'PY'
import json, os, sys

def meta(path):
    try:
        with open(path + ".meta") as fh:
            return dict(line.strip().split("=", 1) for line in fh if "=" in line)
    except OSError:
        return {}

rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
print(f"{'shape':<16} {'file MB':>8} {'tool':<11} {'wall s':>8} {'MB/s':>8} {'packets/s':>11} {'trans/s':>10} {'peak RSS MB':>11}")
ratios, found = [], []
for name, size, packets, cat_s, cat_kb, po_s, po_kb, lb_s, lb_kb, ts_s, ts_kb, path, report in rows:
    size, packets = int(size), int(packets or 0)
    m = meta(path)
    with open(report) as fh:
        r = json.load(fh)
    cap = r["captures"][0]
    # Transactions: from the capture summary when lbdiag reports them, else what synth made.
    tx = cap.get("transactions", cap.get("http_transactions"))
    if not isinstance(tx, int):
        tx = int(m["transactions"]) if "transactions" in m else None
    mb = size / 1048576
    for tool, s, kb in (("cat", cat_s, cat_kb), ("parse-only", po_s, po_kb), ("lbdiag", lb_s, lb_kb), ("tshark", ts_s, ts_kb)):
        if s == "-":
            continue
        s = max(float(s), 0.0005)
        tps = f"{tx / s:,.0f}" if tx else "-"
        print(f"{name:<16} {mb:>8.0f} {tool:<11} {s:>8.3f} {mb / s:>8.0f} {packets / s:>11,.0f} {tps:>10} {int(kb) / 1024:>11.0f}")
    lb = max(float(lb_s), 0.005)
    line = f"{name:<16} lbdiag = {lb / max(float(cat_s), 0.005):.1f}x cat, {lb / max(float(po_s), 0.005):.1f}x parse-only"
    if ts_s != "-":
        line += f", tshark = {float(ts_s) / lb:.0f}x lbdiag"
    ratios.append(line)
    errors = f" (synth made {m.get('status_4xx', 0)} 4xx, {m.get('status_5xx', 0)} 5xx, {m.get('retransmissions', 0)} retransmissions)" if m else ""
    warnings = "; ".join(w["message"] for w in cap["warnings"]) or "none"
    found.append(f"{name:<16} findings {r['summary']['by_kind'] or '{}'}, suppressed {r['summary']['suppressed']}{errors}; warnings: {warnings}")
print()
print("\n".join(ratios))
print()
print("\n".join(found))
PY
