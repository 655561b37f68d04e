"""cnnbench against tf_cnn_benchmarks, the classic peer, side by side on this machine.

    scripts/compare_tf_cnn.sh PEER_DIR [--models resnet50,vgg16] [--pairs 3] [--append results/peer.csv]
    python -m bench.lab.peer --peer-dir DIR --peer-python PY [same options]

For each model the two run in alternating pairs (cnnbench first in odd pairs, the peer first in
even ones, so drift hits both alike), each as its own process with matched settings: the same
architecture at 224 px (ResNet-50 v1.5, VGG16), batch 8, momentum SGD at the same learning
rate, fp32 NHWC, synthetic data, 20 timed steps after 5 warmup steps, no XLA.

The figure compared is each side's own mean images/sec: the peer's "total images/sec" line and
cnnbench's `images_per_sec` (global batch / mean step time), the same quantity. The ratio
cnnbench/peer is the median over pairs. With --append, both sides become rows in the cnnbench
schema (the peer's with source=tf_cnn_benchmarks); the peer's per-step times, for the median and
its CI, are the intervals between its per-step log lines (--display_every=1).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import REPO
from bench.config.parse import OneLineParser, parse_value
from bench.config.schema import Opt, RunConfig
from bench.errors import BenchInputError, ExitCode, Status, input_error, one_line
from bench.measure.stats import step_stats, throughput
from bench.results.row import Outcome, Topology, build_row
from bench.results.store import append_row, check_output, read_rows

SOURCE = "tf_cnn_benchmarks"


@dataclass(frozen=True)
class Match:
    """One shared model: its name here and in the peer, and the settings both run with."""
    ours: str
    peer: str
    lr: float = 1e-3  # cnnbench's throughput default for SGD: finite on both sides (the peer would not say)


MATCHES = {"resnet50": Match("resnet50", "resnet50_v1.5"), "vgg16": Match("vgg16", "vgg16")}
BATCH, IMAGE, STEPS, WARMUP, MOMENTUM, CLASSES = 8, 224, 20, 5, 0.9, 1000
# the peer's per-step line: "<step>\timages/sec: <mean> +/- <u> (jitter = <j>)\t<loss>"
STEP_LINE = re.compile(r"^(\d+)\timages/sec: ")
TOTAL_LINE = re.compile(r"^total images/sec: ([\d.]+)")


@dataclass
class PeerRun:
    images_per_sec: float
    step_times: list[float]  # seconds between consecutive per-step lines, the timed steps only
    wall_s: float


def find_script(peer_dir: Path) -> Path:
    """tf_cnn_benchmarks.py in a checkout of tensorflow/benchmarks or in its script folder."""
    for p in (peer_dir / "tf_cnn_benchmarks.py", peer_dir / "scripts" / "tf_cnn_benchmarks" / "tf_cnn_benchmarks.py"):
        if p.is_file():
            return p
    raise FileNotFoundError(f"no tf_cnn_benchmarks.py in {peer_dir} or {peer_dir}/scripts/tf_cnn_benchmarks")


def peer_command(python: str, script: Path, match: Match) -> list[str]:
    return [python, str(script), f"--model={match.peer}", f"--batch_size={BATCH}", f"--num_batches={STEPS}",
            f"--num_warmup_batches={WARMUP}", "--device=cpu", "--data_format=NHWC", "--local_parameter_device=cpu",
            "--variable_update=parameter_server", "--optimizer=momentum", f"--momentum={MOMENTUM}",
            f"--init_learning_rate={match.lr}", "--weight_decay=0", "--display_every=1"]


def parse_peer(lines: list[tuple[float, str]]) -> PeerRun:
    """The peer's total images/sec, and its timed steps' durations from the arrival times of its
    per-step lines (step 1's line follows the warmup; the interval before it is not a step's)."""
    total = next((float(m.group(1)) for _, line in lines if (m := TOTAL_LINE.match(line))), None)
    stamps = [t for t, line in lines if STEP_LINE.match(line)]
    if total is None or len(stamps) < 2:
        raise RuntimeError("the peer printed no 'total images/sec' or too few step lines")
    return PeerRun(total, [b - a for a, b in zip(stamps, stamps[1:])], lines[-1][0] - lines[0][0])


def run_peer(python: str, script: Path, match: Match) -> PeerRun:
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(peer_command(python, script, match), cwd=script.parent, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = [(time.perf_counter(), line.rstrip("\n")) for line in proc.stdout]
    if proc.wait() != 0:
        tail = "\n".join(line for _, line in lines[-15:])
        raise RuntimeError(f"tf_cnn_benchmarks exited {proc.returncode}:\n{tail}")
    return parse_peer(lines)


def matched_config(match: Match) -> RunConfig:
    """Our side of a match: the settings both run with, resolved as for a CPU-only run."""
    return RunConfig(model=match.ours, image_size=IMAGE, form="imagenet", batch_size=BATCH, num_classes=CLASSES,
                     steps=STEPS, warmup_steps=WARMUP, optimizer="sgd", momentum=MOMENTUM, lr=match.lr,
                     xla=False).resolved(has_gpu=False)


def ours_args(match: Match, output: str) -> list[str]:
    return dataclasses.replace(matched_config(match), output=output, progress=False).to_argv()


def run_ours(match: Match, output: str) -> dict:
    before = len(read_rows(output)) if Path(output).exists() else 0
    r = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), *ours_args(match, output)], cwd=REPO,
                       capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    rows = read_rows(output) if Path(output).exists() else None
    if r.returncode != 0 or rows is None or len(rows) <= before:
        raise RuntimeError(f"cnnbench exited {r.returncode}: {(r.stdout + r.stderr)[-1500:]}")
    return rows.iloc[-1].to_dict()


def peer_row(match: Match, run: PeerRun, peer_version: str) -> dict:
    """The peer's run as a row in the cnnbench schema (source tf_cnn_benchmarks): its own mean
    images/sec, and the median statistics from its per-step line intervals."""
    cfg = dataclasses.replace(matched_config(match), source=SOURCE)
    row = build_row(cfg, Outcome(Status.OK), topology=Topology(1, 1, BATCH, BATCH), wall_s=run.wall_s)
    stats = step_stats(run.step_times)
    row.update(stats.as_dict(), **throughput(stats, global_batch=BATCH, replicas=1, flops_per_image=0.0))
    row.update(images_per_sec=run.images_per_sec, tflops=None, tf_version=peer_version,
               keras_version=None, horovod_version=None, jax_version=None, jaxlib_version=None)
    return row


def trace_ops(path: str | Path) -> dict[str, float]:
    """Milliseconds per op type in one step of the peer's --trace_file (TensorFlow's Chrome-trace
    timeline of one warmup step), summed over the executor's threads."""
    events = json.loads(Path(path).read_text())["traceEvents"]
    out: dict[str, float] = {}
    for e in events:
        if e.get("ph") == "X" and "dur" in e:
            op = (e.get("args") or {}).get("op") or e.get("name", "?")
            out[op] = out.get(op, 0.0) + e["dur"] / 1e3
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _median(xs: list[float]) -> float:
    return float(np.median(xs))


def _compare(names: list[str], pairs: int, script: Path, peer_python: str, append: str | None,
             peer_version: str) -> list[tuple[str, str, float, list[float]]]:
    """Each model's pairs, alternating which side goes first; (model, peer model, median ratio, ratios)."""
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        ours_csv = str(Path(tmp) / "ours.csv")
        for name in names:
            match, ratios = MATCHES[name], []
            for pair in range(pairs):
                order = ("ours", "peer") if pair % 2 == 0 else ("peer", "ours")
                got = {}
                for side in order:
                    got[side] = run_ours(match, ours_csv) if side == "ours" else run_peer(peer_python, script, match)
                ours_ips, peer_ips = float(got["ours"]["images_per_sec"]), got["peer"].images_per_sec
                ratios.append(ours_ips / peer_ips)
                print(f"{name} pair {pair + 1} ({' then '.join(order)}): cnnbench {ours_ips:.2f}, "
                      f"tf_cnn_benchmarks {peer_ips:.2f} images/sec, ratio {ratios[-1]:.3f}", flush=True)
                if append:
                    append_row(append, {**got["ours"], "source": "cli"})
                    append_row(append, peer_row(match, got["peer"], peer_version))
            summary.append((name, match.peer, _median(ratios), ratios))
    return summary


def main(argv: list[str] | None = None) -> int:
    """Bad input: one line, exit 2, before anything runs (--check: only that)."""
    p = OneLineParser(prog="scripts/compare_tf_cnn.sh", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer-dir", help="a checkout of tensorflow/benchmarks, or its scripts/tf_cnn_benchmarks")
    p.add_argument("--peer-python", default="python", help="the peer's side venv's python")
    p.add_argument("--models", default="resnet50,vgg16")
    p.add_argument("--pairs", default="3")
    p.add_argument("--append", help="a results CSV to append both sides' rows to")
    p.add_argument("--peer-trace", metavar="JSON", help="only print the top ops of a --trace_file the peer wrote")
    p.add_argument("--check", action="store_true",
                   help="only check the arguments (scripts/compare_tf_cnn.sh does, before it builds the peer's venv)")
    try:
        args = p.parse_args(argv)
        if args.peer_trace:
            try:
                ops = trace_ops(args.peer_trace)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise BenchInputError(f"cannot read the peer's trace: {type(e).__name__}: {one_line(e)}. "
                                      f"Received: peer_trace={args.peer_trace}") from None
            if not ops:
                raise BenchInputError(f"the peer's trace holds no op events. Received: peer_trace={args.peer_trace}")
            if args.check:
                return ExitCode.OK
            total = sum(ops.values())
            print("| op | ms | share |\n|---|---:|---:|")
            for op, ms in list(ops.items())[:15]:
                print(f"| {op} | {ms:.1f} | {ms / total:.1%} |")
            print(f"| all ops | {total:.1f} | 100% |")
            return ExitCode.OK
        names = [m.strip() for m in args.models.split(",") if m.strip()]
        bad = [m for m in names if m not in MATCHES]
        if bad or not names:
            raise BenchInputError(f"--models takes {', '.join(MATCHES)}. Received: models={args.models}")
        pairs = parse_value("pairs", Opt("int", lo=1, hi=1000), args.pairs)
        if not args.peer_dir:
            raise BenchInputError("give --peer-dir, a checkout of tensorflow/benchmarks")
        try:
            script = find_script(Path(args.peer_dir))
        except FileNotFoundError as e:
            raise BenchInputError(str(e)) from None
        if args.append:
            check_output(args.append)
        if args.check:
            return ExitCode.OK
        if shutil.which(args.peer_python) is None:
            raise BenchInputError(f"no such python for the peer: peer_python={args.peer_python}")
    except BenchInputError as e:
        return input_error(e)
    peer_version = subprocess.run([args.peer_python, "-c", "import tensorflow as tf; print(tf.__version__)"],
                                  capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
                                  ).stdout.strip().splitlines()[-1:] or ["?"]
    print(f"# cnnbench vs tf_cnn_benchmarks ({script}), TF {peer_version[0]} with tf-keras on the peer's side; "
          f"{BATCH} images x {STEPS} timed steps after {WARMUP}, {IMAGE} px, momentum SGD, fp32 NHWC, synthetic, "
          f"{os.cpu_count()} CPUs", flush=True)
    try:
        summary = _compare(names, pairs, script, args.peer_python, args.append, peer_version[0])
    except (RuntimeError, OSError) as e:  # a side that failed, or a row that could not be written
        print(f"error: {one_line(e)}"[:2000], file=sys.stderr)
        return ExitCode.FAILED
    print("\n| model | peer model | cnnbench / peer, images/sec (median) | pairs |\n|---|---|---:|---|")
    for name, peer, med, ratios in summary:
        print(f"| {name} | {peer} | {med:.3f} | {', '.join(f'{r:.3f}' for r in ratios)} |")
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
