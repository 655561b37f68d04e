#!/usr/bin/env bash
# Numbers across runs, measured (issue 25): (1) the within-run CI against the between-run CI,
# resnet18 and vgg13 at two batch sizes with --repeats; (2) the found warmup (MSER-5) against a
# fixed 10 steps, three models on both backends; (3) an A/A comparison (one configuration twice)
# and an A/B with a real difference (the same configuration on one thread: --threads is not part
# of the key, so --compare pairs them) through report --compare; (4) time to train on digits with
# --repeats and an MLPerf log per run, each checked by MLPerf's compliance checker. Then a report.
#
# Usage: bash scripts/repeatability.sh [OUT]          # default OUT: results/repeatability
# Environment: REPEATS (5), WIDTH (0.5), STEPS (30), TARGET (top-1 for time to train, 0.9),
#              EPOCHS (most epochs for time to train, 8)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p "${1:-results/repeatability}"
out="$(cd "${1:-results/repeatability}" && pwd)"
py="$PWD/.venv/bin/python"
r="${REPEATS:-5}" w="${WIDTH:-0.5}" s="${STEPS:-30}"
log() { printf '[repeatability] %s\n' "$*" >&2; }
sweep() { "$py" -m bench.sweep --no-progress "$@"; }

log "(1) within-run against between-run CI: resnet18, vgg13 x batch 16, 32 x $r repeats"
sweep --models resnet18,vgg13 --batch-sizes 16,32 --repeats "$r" --output "$out/repeats.csv" \
  --width "$w" --steps "$s"

log "(2) the found warmup against a fixed 10 steps"
for backend in tensorflow jax; do
  for model in lenet5 resnet18 vgg13; do
    for warmup in auto 10; do
      "$py" bench/run.py "$model" --backend "$backend" --width "$w" --steps "$s" --warmup-steps "$warmup" \
        --no-progress --output "$out/warmup.csv" > /dev/null
    done
  done
done

log "(3) A/A and A/B: resnet18 batch 32, $r repeats each"
for name in a1 a2; do
  sweep --models resnet18 --batch-sizes 32 --repeats "$r" --output "$out/$name.csv" --width "$w" --steps "$s"
done
sweep --models resnet18 --batch-sizes 32 --repeats "$r" --output "$out/b.csv" --width "$w" --steps "$s" --threads 1
"$py" -m bench.report --compare "$out/a1.csv" "$out/a2.csv" | tee "$out/aa.txt"
"$py" -m bench.report --compare "$out/a1.csv" "$out/b.csv" | tee "$out/ab.txt"

log "(4) time to train on digits: vgg11 to top-1 ${TARGET:-0.9}, $r repeats, an MLPerf log each"
rm -f "$out/ttt.mllog"
"$py" bench/run.py vgg11 --data digits --width "$w" --epochs "${EPOCHS:-8}" --target-accuracy "${TARGET:-0.9}" \
  --repeats "$r" --mllog "$out/ttt.mllog" --no-progress --output "$out/ttt.csv" | tee "$out/ttt.txt" || true
"$py" - "$out" <<'EOF'
import subprocess, sys
from pathlib import Path
from bench.results.mllog import RULESET, split_runs
out = Path(sys.argv[1])
for i, text in enumerate(split_runs((out / "ttt.mllog").read_text())):
    f = out / f"ttt_run{i}.mllog"
    f.write_text(text)
    r = subprocess.run([sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", "training",
                        "--ruleset", RULESET, "--log_output", str(out / f"checker_run{i}.log"), str(f)],
                       capture_output=True, text=True)
    print(f"{f.name}: compliance checker exit {r.returncode}")
EOF

log "report"
"$py" -m bench.report "$out/repeats.csv" "$out/warmup.csv" "$out/ttt.csv" --out "$out/report"
