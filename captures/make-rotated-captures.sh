#!/usr/bin/env bash
# Rotated captures: tcpdump's -C splits a capture into files of about a million bytes each,
# named x.pcap, x.pcap1, x.pcap2, ... lbdiag analyzes such a set as one capture, so a connection
# that spans two files is one connection (tests/join.rs). Rebuilt from zero-window.pcap, a
# single long transfer of about 2 MB, so its one connection crosses both file boundaries.
#   bash captures/make-rotated-captures.sh   (needs tcpdump)
set -euo pipefail
cd "$(dirname "$0")"
rm -f rotated/zero-window.pcap*
mkdir -p rotated
# -Z root: tcpdump otherwise drops to its own user, which may not write here.
tcpdump -Z root -r zero-window.pcap -w rotated/zero-window.pcap -C 1 2>/dev/null
ls -l rotated/
