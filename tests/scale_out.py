"""Loads the JSON Lines reports in ./reports into DuckDB with docs/examples/load-reports.sql,
ranks servers with docs/examples/rank-servers.sql, and checks the ranking against what the
truth files of captures/ say: which servers answer (or make a balancer answer) 502 or 504,
and why. Run by tests/scale_out.sh; the argument is the repository's root.

What the truth files give, and so what is checked (they name a server by its port only):
- every expected finding that explains a 502 or 504 and that nothing else explains, and every
  back-leg finding that a front 502 or 504 is expected to be explained by, is ranked: a row for
  its port and kind, holding its status, with at least as many findings as the truth expects;
- no front-leg symptom (a balancer's 502 that a backend finding explains) is ranked;
- every ranked row is one that some truth file allows: a kind it expects or also accepts, on
  a port it names (or any port, when it names none);
- the ranks follow the servers' totals.
The check is also run on rankings broken on purpose, which it must reject, so that a check
that passes everything fails here instead.
"""

import glob
import json
import os
import sys

import duckdb

STATUSES = (502, 504)


def kinds(v):
    return frozenset([v] if isinstance(v, str) else v)


def port(server):
    return int(server.rsplit(":", 1)[1])


def load_truth(root):
    truths = []
    for path in sorted(glob.glob(os.path.join(root, "captures", "*.truth.json"))):
        with open(path) as f:
            truths.append(json.load(f))
    return truths


def expected(truths):
    """(causes, symptoms): causes maps (capture, i) of an expectation to (port, kinds, status);
    symptoms is a set of (port, kind) of front findings that something else explains."""
    causes, symptoms = {}, set()
    for t in truths:
        # Captures that need their own flags are analyzed with the fleet's here: their
        # expectations may not hold, though their findings are still allowed below.
        if t.get("args"):
            continue
        exp = t["expect"]
        for i, e in enumerate(exp):
            status = e.get("status")
            if status not in STATUSES:
                continue
            refs = e.get("explained_by")
            if not refs:
                causes[(t["capture"], i)] = (e.get("server_port"), kinds(e["kind"]), status)
                continue
            for k in kinds(e["kind"]):
                symptoms.add((e.get("server_port"), k))
            for r in refs:
                behind = [
                    j
                    for j, b in enumerate(exp)
                    if b.get("leg") == r.get("leg")
                    and kinds(b["kind"]) & kinds(r["kind"])
                    and set(r.get("frames", [])) <= set(b.get("frames", []))
                    and not b.get("explained_by")
                ]
                # A reference may name a finding the truth only accepts (a refused retry
                # behind a restart): it is not a cause that must be ranked.
                for j in behind:
                    b = exp[j]
                    causes[(t["capture"], j)] = (b.get("server_port"), kinds(b["kind"]), status)
    return causes, symptoms


def allowed(truths, p, kind):
    for t in truths:
        ports = {e.get("server_port") for e in t["expect"]} - {None}
        for e in t["expect"]:
            if kind in kinds(e["kind"]) and e.get("server_port") in (p, None):
                return True
        if kind in t.get("also_acceptable", []) and (p in ports or not ports):
            return True
    return False


def check(rows, truths):
    """Problems with a ranking (rows as rank-servers.sql returns them), or [] when none."""
    causes, symptoms = expected(truths)
    problems = []
    by_port_kind = {}
    for r in rows:
        key = (port(r["server"]), r["kind"])
        found, statuses = by_port_kind.get(key, (0, set()))
        by_port_kind[key] = (found + r["findings"], statuses | set(r["statuses"]))

    # Each cause is ranked, with its status; and as many findings as the truth expects.
    wanted = {}
    for (capture, _), (p, ks, status) in causes.items():
        wanted.setdefault((p, ks), []).append(capture)
        rows_here = [by_port_kind[(p, k)] for k in ks if (p, k) in by_port_kind]
        if not any(status in statuses for _, statuses in rows_here):
            problems.append(f"{capture}: no ranked {'/'.join(sorted(ks))} on port {p} explaining {status}")
    for (p, ks), captures in sorted(wanted.items(), key=str):
        found = sum(by_port_kind.get((p, k), (0, set()))[0] for k in ks)
        if found < len(captures):
            problems.append(
                f"port {p}, {'/'.join(sorted(ks))}: {found} findings ranked, "
                f"the truth of {sorted(set(captures))} expects {len(captures)}"
            )

    cause_keys = {(p, k) for p, ks, _ in causes.values() for k in ks}
    for p, k in sorted(symptoms - cause_keys, key=str):
        if (p, k) in by_port_kind:
            problems.append(f"port {p}, {k}: a front symptom is ranked as a cause")

    for p, k in sorted(by_port_kind):
        if not allowed(truths, p, k):
            problems.append(f"port {p}, {k}: ranked, but no truth file expects or accepts it")

    # Ranks: servers in order of their totals, ties sharing a rank, each server's rows together.
    totals = {}
    for r in rows:
        totals.setdefault(r["server"], set()).add(r["server_findings"])
    seen, last = set(), None
    for r in rows:
        s = r["server"]
        if len(totals[s]) != 1:
            problems.append(f"{s}: server_findings differs between its rows")
        if sum(x["findings"] for x in rows if x["server"] == s) != r["server_findings"]:
            problems.append(f"{s}: server_findings is not the sum of its rows")
        rank = 1 + len({x["server"] for x in rows if x["server_findings"] > r["server_findings"]})
        if r["rank"] != rank:
            problems.append(f"{s}: rank {r['rank']}, should be {rank}")
        if s != last and s in seen:
            problems.append(f"{s}: its rows are not together")
        seen.add(s)
        last = s
    if [r["rank"] for r in rows] != sorted(r["rank"] for r in rows):
        problems.append("rows are not in rank order")
    return problems


def main():
    root = sys.argv[1]
    examples = os.path.join(root, "docs", "examples")
    db = duckdb.connect()
    with open(os.path.join(examples, "load-reports.sql")) as f:
        db.execute(f.read())
    with open(os.path.join(examples, "rank-servers.sql")) as f:
        result = db.execute(f.read())
    names = [d[0] for d in result.description]
    rows = [dict(zip(names, r)) for r in result.fetchall()]
    captures, unreadable = db.execute("SELECT count(*), count(error) FROM capture").fetchone()
    findings = db.execute("SELECT count(*) FROM finding").fetchone()[0]
    print(f"scale_out: DuckDB holds {captures} captures ({unreadable} unreadable), {findings} findings")
    for r in rows[:8]:
        print(f"  {r['rank']:>3}  {r['server']:<22} {r['server_findings']:>3}  {r['kind']:<24} "
              f"{r['statuses']} x{r['findings']}")

    truths = load_truth(root)
    problems = []
    if unreadable:
        problems.append(f"{unreadable} captures could not be read")
    if captures != len(truths):
        problems.append(f"{captures} captures loaded, {len(truths)} truth files")
    problems += check(rows, truths)

    # The check's own test: rankings that are wrong in known ways must not pass.
    top = rows[0]["server"]
    broken = {
        "the top server left out": [r for r in rows if r["server"] != top],
        "a front symptom ranked": rows + [dict(rows[-1], server="10.71.0.2:8002", kind="error_status",
                                               statuses=[504], findings=1, server_findings=1)],
        "statuses dropped": [dict(r, statuses=[]) for r in rows],
        "ranks reversed": list(reversed(rows)),
    }
    for what, ranking in broken.items():
        if not check(ranking, truths):
            problems.append(f"the check accepts a ranking with {what}")

    if problems:
        for p in problems:
            print(f"scale_out: {p}", file=sys.stderr)
        raise SystemExit(1)
    causes, _ = expected(truths)
    print(f"scale_out: the ranking of {len({r['server'] for r in rows})} servers holds all "
          f"{len(causes)} 502/504 causes the truth files expect")


if __name__ == "__main__":
    main()
