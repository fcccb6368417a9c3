#!/usr/bin/env python3
"""The tables of benches/run.sh, from the measurements it collected.

    python3 benches/summary.py RESULTS QUICK THREADS...

RESULTS holds tab-separated lines: "row SHAPE TOOL SECONDS PEAK_KB" per timed tool,
"cpu SHAPE TOOL 'WALL TOTAL MAIN T1 T2 ...'" per run under benches/threadcpu.py, and
"shape NAME KIND SIZE PACKETS CAPTURE REPORT_PREFIX" after each shape's rows. THREADS are the
thread counts lbdiag ran at, the first being 1.
"""
import json
import os
import sys


def meta(path):
    try:
        with open(path + ".meta") as fh:
            return dict(line.strip().split("=", 1) for line in fh if "=" in line)
    except OSError:
        return {}


def lb(t):
    return f"lbdiag -t {t}"


def main():
    results, quick, threads = sys.argv[1], sys.argv[2] == "1", [int(t) for t in sys.argv[3:]]
    most = threads[-1]
    rows, cpu, shapes = {}, {}, []
    for line in open(results):
        f = line.rstrip("\n").split("\t")
        if f[0] == "row":
            rows.setdefault(f[1], {})[f[2]] = (max(float(f[3]), 0.0005), int(f[4] or 0))
        elif f[0] == "cpu":
            cpu.setdefault(f[1], {})[f[2]] = [float(x) for x in f[3].split()]
        elif f[0] == "shape":
            shapes.append(f[1:])

    print(f"{'shape':<16} {'file MB':>8} {'tool':<13} {'wall s':>8} {'MB/s':>8} {'packets/s':>11} {'trans/s':>10} {'peak RSS MB':>11}")
    ratios, readers, found, same = [], [], [], []
    checks = {"parse": [], "tshark": [], "speedup": [], "memory": []}
    saturation = {}
    for name, kind, size, packets, path, prefix in shapes:
        size, packets = int(size), int(packets or 0)
        r = rows[name]
        m = meta(path)
        with open(f"{prefix}.t1.json") as fh:
            text1 = fh.read()
        report = json.loads(text1)
        cap = report["captures"][0]
        # Transactions: from the capture summary when lbdiag reports them, else what synth made.
        tx = cap.get("transactions", cap.get("http_transactions"))
        if not isinstance(tx, int):
            tx = int(m["transactions"]) if "transactions" in m else None
        mb = size / 1048576
        for tool, (s, kb) in r.items():
            tps = f"{tx / s:,.0f}" if tx else "-"
            print(f"{name:<16} {mb:>8.0f} {tool:<13} {s:>8.3f} {mb / s:>8.0f} {packets / s:>11,.0f} {tps:>10} {kb / 1024:>11.0f}")

        cat_s, po_s = r["cat"][0], r["parse-only"][0]
        one_s, one_kb = r[lb(1)]
        parts = []
        for t in threads:
            s, kb = r[lb(t)]
            part = f"-t {t} = {s / cat_s:.1f}x cat, {s / po_s:.1f}x parse-only"
            if t > 1:
                part += f", {one_s / s:.2f}x as fast as -t 1 in {kb / max(one_kb, 1):.2f}x its memory"
            parts.append(part)
        if "tshark" in r:
            ts = r["tshark"][0]
            parts.append("tshark = " + ", ".join(f"{ts / r[lb(t)][0]:.0f}x -t {t}" for t in threads))
        ratios.append(f"{name:<16} " + "; ".join(parts))

        differ = [t for t in threads[1:] if open(f"{prefix}.t{t}.json").read() != text1]
        same.append(f"{name}: {'identical' if not differ else 'DIFFERENT at -t ' + ', '.join(map(str, differ))}")

        # How many workers one reader keeps busy: the reader's CPU time against the workers'
        # for the same packets, from one run of each under threadcpu.py.
        alone = cpu.get(name, {}).get("reader alone")
        run = cpu.get(name, {}).get(lb(most))
        if alone and run and len(run) == 3 + most + 2:
            reader_alone = alone[2]
            merge, workers, reader = run[3], run[4:4 + most], run[4 + most]
            per_worker = sum(workers)
            k = per_worker / max(reader_alone, 1e-6)
            km = per_worker / max(merge, 1e-6)
            saturation[name] = (kind, k, km)
            line = (
                f"{name:<16} reader alone {packets / reader_alone:,.0f} packets/s, {mb / reader_alone:,.0f} MB/s of CPU; "
                f"in -t {most} (CPU s): reader {reader:.3f}, workers {' + '.join(f'{w:.3f}' for w in workers)}, merge {merge:.3f}, report {run[2]:.3f}; "
                f"one worker {packets / max(per_worker, 1e-6):,.0f} packets/s: the reader saturates at about {k:.1f} workers, the merge at about {km:.1f}")
            single = cpu.get(name, {}).get(lb(1))
            if single:
                # What -t N could do on N idle cores: its CPU spread evenly, but never faster
                # than its busiest thread.
                bound = single[1] / max(run[1] / most, reader, merge, *workers)
                line += (f"; CPU -t 1 {single[1]:.3f} s, -t {most} {run[1]:.3f} s ({run[1] / max(single[1], 1e-6):.2f}x): "
                         f"on {most} idle cores -t {most} could be at most {bound:.2f}x -t 1")
            readers.append(line)
        elif most > 1:
            readers.append(f"{name:<16} thread times not available")

        if kind in ("mixed", "keepalive-api"):
            if kind == "mixed":
                checks["parse"].append((name, po_s / one_s, po_s / one_s >= 1 / 3))
            if "tshark" in r:
                x = r["tshark"][0] / one_s
                checks["tshark"].append((name, x, x >= 30))
            if 2 in threads:
                two_s, two_kb = r[lb(2)]
                checks["speedup"].append((name, one_s / two_s, one_s / two_s >= 1.7))
                checks["memory"].append((name, two_kb / max(one_kb, 1), two_kb <= 1.5 * one_kb))

        errors = f" (synth made {m.get('status_4xx', 0)} 4xx, {m.get('status_5xx', 0)} 5xx, {m.get('retransmissions', 0)} retransmissions)" if m else ""
        warnings = "; ".join(w["message"] for w in cap["warnings"]) or "none"
        found.append(f"{name:<16} findings {report['summary']['by_kind'] or '{}'}, suppressed {report['summary']['suppressed']}{errors}; warnings: {warnings}")

    cores = len(os.sched_getaffinity(0))
    if cores <= 2:
        print(f"(all threads = -t {cores}: this machine has {cores} core(s), so it has no row of its own)")
    print()
    print("\n".join(ratios))
    print()
    print("\n".join(readers))
    print()
    print("reports at " + ", ".join(f"-t {t}" for t in threads) + ": " + "; ".join(same))
    print()
    print("\n".join(found))
    print()

    def verdict(label, items, fmt, missing):
        if not items:
            print(f"  {'--':<5} {label}: {missing}")
            return
        ok = all(i[2] for i in items)
        print(f"  {'PASS' if ok else 'MISS':<5} {label}: " + ", ".join(f"{n} {fmt.format(v)}" for n, v, _ in items))

    print("Targets (issue 14), from this run:")
    verdict("one thread, bulk at least 1/3 of parse-only's speed", checks["parse"], "{:.3f}", "no bulk file")
    verdict("one thread at least 30x faster than tshark -q -z expert", checks["tshark"], "{:.0f}x",
            "not measured (--quick runs no tshark)" if quick else "not measured (no tshark)")
    verdict("two threads at least 1.7x one thread", checks["speedup"], "{:.2f}x", "not measured")
    verdict("two threads' peak RSS at most 1.5x one thread's", checks["memory"], "{:.2f}x", "not measured")
    for name, (kind, k, km) in saturation.items():
        print(f"  {'info':<5} {name}: one reader keeps about {k:.1f} workers busy ({kind}); the merge about {km:.1f}")


if __name__ == "__main__":
    main()
