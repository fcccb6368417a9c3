#!/usr/bin/env bash
# Saves `tshark -q -z expert` for every capture, for docs/comparison.md (CI has no tshark; the
# comparison test reads these files).
set -euo pipefail
cd "$(dirname "$0")/.."
for f in *.pcap *.pcapng *.pcap.gz; do
  [ -e "$f" ] || continue
  tshark -q -z expert -r "$f" > "expert/$f.txt" 2>/dev/null || true
done
