#!/usr/bin/env python3
"""Shared by the truth writers of the transport, HTTP and TLS captures: writes NAME.truth.json
beside a capture. (The TCP captures' truth files come from make_truth.py.)"""
import json
import os


def write(out, capture, vantage, story, expect, must_not, healthy=False, warnings=None, also=None):
    base = capture
    for ext in (".gz", ".pcapng", ".pcap"):
        base = base[: -len(ext)] if base.endswith(ext) else base
    truth = {"capture": capture, "vantage": vantage, "story": story, "args": [],
             "healthy": healthy, "expect": expect, "also_acceptable": also or [],
             "must_not": must_not, "warnings": warnings or []}
    with open(os.path.join(out, base + ".truth.json"), "w") as f:
        json.dump(truth, f, indent=2)
        f.write("\n")
