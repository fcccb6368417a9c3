#!/usr/bin/env bash
# The scale-out pipeline of docs/scale-out.md on captures/, end to end:
#   1. GNU parallel maps `lbdiag analyze --format jsonl` over captures/, one report per capture;
#   2. the Indexed Job's shard script (docs/examples/lbdiag-indexed-job.yaml) runs once per
#      completion index, and the pods' reports must be exactly parallel's;
#   3. GNU parallel runs one capture's three shards (`analyze --shard I/3`), `lbdiag merge`
#      combines their shard reports, and the result must be the report of one full run;
#   4. DuckDB loads the reports (docs/examples/load-reports.sql), runs
#      docs/examples/rank-servers.sql, and tests/scale_out.py checks the ranking against the
#      captures' truth files.
# Needs GNU parallel and a Python with the packages of tests/scale_out.requirements.txt
# ($SCALE_OUT_PYTHON, else python3); .ci/run installs both. LBDIAG names the binary
# (default target/debug/lbdiag, built when missing). tests/scale_out.rs runs this under
# `cargo test`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

python=${SCALE_OUT_PYTHON:-python3}
lbdiag=${LBDIAG:-$root/target/debug/lbdiag}
if [ ! -x "$lbdiag" ]; then
  cargo build --quiet --bin lbdiag
fi
command -v parallel >/dev/null || { echo "scale_out: GNU parallel is not installed" >&2; exit 2; }
"$python" -c 'import duckdb, yaml' || { echo "scale_out: $python lacks duckdb or yaml" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The captures a directory search finds, as docs/scale-out.md lists them.
find captures -maxdepth 1 -type f \( -iname '*.pcap' -o -iname '*.pcapng' -o -iname '*.cap' \
  -o -iname '*.pcap.gz' -o -iname '*.pcapng.gz' -o -iname '*.cap.gz' -o -iname '*.pcap[0-9]*' \) \
  | LC_ALL=C sort > "$work/captures.txt"
echo "scale_out: $(wc -l < "$work/captures.txt") captures"

# 1. GNU parallel, as docs/scale-out.md shows it. A failed job fails the run here; a fleet
# would rather let the others finish (--halt never) and read the joblog.
mkdir -p "$work/reports"
parallel --halt now,fail=1 --joblog "$work/joblog" \
  "'$lbdiag' analyze --format jsonl --fail-on never --quiet {} > '$work/reports'/{/}.jsonl" \
  :::: "$work/captures.txt"
jobs=$(tail -n +2 "$work/joblog" | wc -l)
[ "$jobs" = "$(wc -l < "$work/captures.txt")" ] || { echo "scale_out: parallel ran $jobs jobs" >&2; exit 1; }

# 2. The Indexed Job: its shard script, run for every index as the pods would be (lbdiag on
# the PATH, the variables the manifest sets), each index into its own directory so that a
# capture two pods both took is caught.
"$python" - "$root/docs/examples/lbdiag-indexed-job.yaml" "$work" <<'EOF'
import sys, yaml
docs = list(yaml.safe_load_all(open(sys.argv[1])))
config = next(d for d in docs if d["kind"] == "ConfigMap")
job = next(d for d in docs if d["kind"] == "Job")
spec = job["spec"]
assert spec["completionMode"] == "Indexed", spec
env = {e["name"]: e["value"] for e in spec["template"]["spec"]["containers"][0]["env"]}
assert int(env["COMPLETIONS"]) == spec["completions"], "COMPLETIONS must equal spec.completions"
open(sys.argv[2] + "/shard.sh", "w").write(config["data"]["shard.sh"])
open(sys.argv[2] + "/completions", "w").write(str(spec["completions"]))
EOF
mkdir -p "$work/bin"
ln -s "$lbdiag" "$work/bin/lbdiag"
completions=$(cat "$work/completions")
for ((i = 0; i < completions; i++)); do
  PATH="$work/bin:$PATH" JOB_COMPLETION_INDEX=$i COMPLETIONS=$completions \
    CAPTURES=captures REPORTS="$work/pods/$i" sh "$work/shard.sh"
done
taken=$(find "$work/pods" -name '*.jsonl' | wc -l)
[ "$taken" = "$jobs" ] || { echo "scale_out: the pods wrote $taken reports, parallel $jobs" >&2; exit 1; }
mkdir -p "$work/pod-reports"
cp "$work"/pods/*/*.jsonl "$work/pod-reports/"
diff -r "$work/reports" "$work/pod-reports" >&2 || { echo "scale_out: the pods' reports differ from parallel's" >&2; exit 1; }
echo "scale_out: $completions Indexed Job pods wrote the same $taken reports as GNU parallel"

# 3. One capture split into shards, as a capture too big for one machine would be: each
# shard's job reads the whole file and analyzes a third of its connections.
big=captures/proxy-retries-some-fail.pcap
mkdir -p "$work/shards"
parallel --halt now,fail=1 \
  "'$lbdiag' analyze --shard {}/3 --threads 1 $big -o '$work/shards'/{}.jsonl.gz" ::: 1 2 3
"$lbdiag" merge --format json --fail-on never "$work"/shards/*.jsonl.gz > "$work/merged.json"
"$lbdiag" analyze --format json --fail-on never --threads 1 "$big" > "$work/whole.json"
cmp "$work/merged.json" "$work/whole.json" || { echo "scale_out: the merged shards differ from one run" >&2; exit 1; }
echo "scale_out: 3 shards of $big merged into the report of one run"

# 4. DuckDB and the ranking, checked against the truth files.
(cd "$work" && "$python" "$root/tests/scale_out.py" "$root")
