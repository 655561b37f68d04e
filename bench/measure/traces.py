"""Where a traced step's time goes: reads the `.xplane.pb` that `--profile-steps` leaves (JAX's
profiler; TensorFlow's writes the same format) and sums the time of each compiled op (XLA's HLO
ops) per step, by op and by kind of op.

    python -m bench.measure.traces results/traces/<run_id> [--top 15]

On a GPU it reads the first device's ops ("XLA Ops", or else the kernels on its streams, named
by their HLO op or, inside a CUDA graph, by their fusion): device time. On a CPU it reads XLA's
thread pool (JAX) or TensorFlow's executor threads, where an op's time is thread time: ops on
several threads overlap, so the shares are of busy time, not of the step's wall time. Reading
needs only jaxlib, so it also runs where TensorFlow is absent.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bench.config.parse import OneLineParser, parse_value
from bench.config.schema import Opt
from bench.errors import BenchInputError, ExitCode, input_error, one_line

# (kind, pattern on the op's name without its ".N" suffix); the first match wins.
KINDS: tuple[tuple[str, str], ...] = (
    ("collective", r"all-reduce|all-gather|reduce-scatter|collective|all-to-all|nccl"),
    ("convolution", r"conv(?!ert)|cudnn"),
    ("matmul", r"(^|[^a-z])dot|gemm|cublas|matmul"),
    ("pooling", r"reduce.window|select.and.scatter"),
    ("scatter/gather", r"scatter|gather"),
    ("copy/transpose", r"copy|transpose"),
    ("reduction", r"reduce"),
    ("YNNPACK fusion", r"ynn_fusion"),  # XLA:CPU hands these to YNNPACK; the name does not say what they hold
    ("other fusion", r"fusion"),
)
HOST_WAITS = ("ThunkExecutor::Execute", "SlinkyThreadPool::Await", "ThreadpoolListener")


def kind_of(op: str) -> str:
    """The kind of an HLO op from its name (see KINDS), where the trace gives no category."""
    base = re.sub(r"\.\d+$", "", op.lower())
    return next((kind for kind, pattern in KINDS if re.search(pattern, base)), "other")


@dataclass
class TraceSummary:
    source: str  # the plane read: "/device:GPU:0", or "/host:CPU"
    steps: int  # steps marked in the trace
    step_ms: float  # mean wall time of a marked step
    op_ns: dict[str, float] = field(default_factory=dict)  # HLO op -> time over all marked steps
    op_count: dict[str, int] = field(default_factory=dict)
    op_kind: dict[str, str] = field(default_factory=dict)  # the profiler's hlo_category where it gives one
    op_source: dict[str, str] = field(default_factory=dict)  # the JAX op it came from, where the trace says

    def kind(self, op: str) -> str:
        return self.op_kind.get(op) or kind_of(op)

    @property
    def busy_ns(self) -> float:
        return sum(self.op_ns.values())

    def by_kind(self) -> dict[str, float]:
        kinds: dict[str, float] = defaultdict(float)
        for op, ns in self.op_ns.items():
            kinds[self.kind(op)] += ns
        return dict(sorted(kinds.items(), key=lambda kv: -kv[1]))

    def table(self, top: int = 15) -> str:
        """Markdown: time per step by kind of op, then the `top` ops, each with its share of busy time."""
        per_step = max(self.steps, 1) * 1e6
        busy_ms = self.busy_ns / per_step
        idle = (f"; the device is idle {self.step_ms - busy_ms:.2f} ms per step ({1 - busy_ms / self.step_ms:.0%})"
                if self.source.startswith("/device:") and self.step_ms > busy_ms else "")
        lines = [f"trace of {self.steps} step(s) on {self.source}: {self.step_ms:.2f} ms per step (wall), "
                 f"{busy_ms:.2f} ms of op time per step{idle}",
                 "", "| kind of op | ms per step | share |", "|---|---:|---:|"]
        lines += [f"| {k} | {ns / per_step:.3f} | {ns / self.busy_ns:.1%} |" for k, ns in self.by_kind().items()]
        lines += ["", "| op | kind | from | events per step | ms per step | share |", "|---|---|---|---:|---:|---:|"]
        for op, ns in sorted(self.op_ns.items(), key=lambda kv: -kv[1])[:top]:
            lines.append(f"| `{op}` | {self.kind(op)} | {self.op_source.get(op, '')} "
                         f"| {self.op_count[op] / max(self.steps, 1):g} | {ns / per_step:.3f} | {ns / self.busy_ns:.1%} |")
        return "\n".join(lines)


def find_xplane(trace_dir: str | Path) -> Path:
    """The newest `.xplane.pb` under a trace folder (the profiler nests it by date)."""
    found = sorted(Path(trace_dir).rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no .xplane.pb under {trace_dir}")
    return found[-1]


def summarize(trace_dir: str | Path) -> TraceSummary:
    """Sum the HLO ops that ran inside the marked steps of the trace in `trace_dir`."""
    from jax.profiler import ProfileData

    data = ProfileData.from_file(str(find_xplane(trace_dir)))
    planes = list(data.planes)
    steps = [(ev.start_ns, ev.end_ns) for plane in planes if plane.name.startswith("/host")
             for line in plane.lines for ev in line.events if dict(ev.stats).get("step_num") is not None]
    devices = sorted((p for p in planes if p.name.startswith("/device:")), key=lambda p: p.name)
    if devices:  # the first device: replicas run the same program
        plane = devices[0]
        # one event per op where the profiler writes an "XLA Ops" line; else its kernels on the streams
        lines = [l for l in plane.lines if l.name == "XLA Ops"] or [l for l in plane.lines if l.name.startswith("Stream")]
    else:
        plane = next((p for p in planes if p.name == "/host:CPU"), None)
        if plane is None:
            raise ValueError(f"{find_xplane(trace_dir)} holds neither a device nor the host CPU")
        # XLA's thread pool (JAX), or TensorFlow's executor threads
        lines = [l for l in plane.lines if l.name.startswith(("tf_XLA", "tf_Compute"))]
    lo, hi = (min(s for s, _ in steps), max(e for _, e in steps)) if steps else (float("-inf"), float("inf"))
    summary = TraceSummary(plane.name, len(steps), (sum(e - s for s, e in steps) / len(steps) / 1e6) if steps else 0.0)
    op_ns: dict[str, float] = defaultdict(float)
    op_count: dict[str, int] = defaultdict(int)
    op_kind: dict[str, str] = {}
    op_source: dict[str, str] = {}
    for line in lines:
        for ev in line.events:
            stats = dict(ev.stats)
            op, source = _op(line.name, ev.name, stats)
            # device clocks are aligned with the host's in the trace, so the step window applies to both
            if op and lo <= ev.start_ns <= hi:
                op_ns[op] += ev.duration_ns
                op_count[op] += 1
                if stats.get("hlo_category"):
                    op_kind[op] = str(stats["hlo_category"])
                if source:
                    op_source.setdefault(op, source)
    summary.op_ns, summary.op_count, summary.op_kind, summary.op_source = dict(op_ns), dict(op_count), op_kind, op_source
    if not op_ns:
        raise ValueError(f"no op events inside the marked steps of {find_xplane(trace_dir)}")
    return summary


def _op(line: str, name: str, stats: dict) -> tuple[str | None, str]:
    """(the op an event belongs to, where it came from in the model), or (None, "") for an
    event that is no op (thread-pool bookkeeping, the executor's own spans)."""
    if line.startswith("tf_Compute"):  # TensorFlow: "scope/of/the/layer/Op:OpType"
        if ":" not in name.replace("::", ""):  # the executor's own spans (ExecutorState::Process) hold ops
            return None, ""
        scope, op_type = name.rsplit(":", 1)
        return f"{op_type} {scope.removeprefix('StatefulPartitionedCall/')}"[:120], ""
    op = stats.get("hlo_op") or (None if name.startswith(HOST_WAITS) else name)
    if op and op.startswith("command_buffer"):  # a CUDA graph of many ops: its kernels keep their fusions' names
        op = name[:80]
    source = str(stats.get("name", ""))
    return op, source if "/" in source else ""  # JAX's path to the op, e.g. jit(step)/jvp(conv1)/...


def main(argv: list[str] | None = None) -> int:
    """Bad input (no trace there, a file that is not one, a bad --top): one line, exit 2."""
    p = OneLineParser(prog="python -m bench.measure.traces", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trace_dir", help="a trace folder, e.g. results/traces/<run_id>")
    p.add_argument("--top", default="15", help="how many ops to list")
    try:
        args = p.parse_args(argv)
        top = parse_value("top", Opt("int", lo=1, hi=10**6), args.top)
        if not Path(args.trace_dir).is_dir():
            raise BenchInputError(f"no such trace folder: trace_dir={args.trace_dir}")
        try:
            table = summarize(args.trace_dir).table(top)
        except BenchInputError:
            raise
        except (OSError, ValueError, RuntimeError, StopIteration) as e:  # a file that is not a trace
            raise BenchInputError(f"cannot read a trace in trace_dir={args.trace_dir}: "
                                  f"{one_line(e) or type(e).__name__}") from None
    except BenchInputError as e:
        return input_error(e)
    print(table)
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())


# ---- Horovod's timeline and autotuner -----------------------------------------------------------
TIMELINE_FILE = "hvd_timeline.json"
AUTOTUNE_LOG = "hvd_autotune.csv"


@dataclass
class Timeline:
    """Horovod's timeline of the timed steps, the coordinator's view: wall time per step in which
    some tensor was being negotiated, all-reduced, or queued (waiting for its data or device),
    and how many times each tensor was all-reduced."""
    negotiate_ms: float
    allreduce_ms: float
    queue_ms: float
    allreduces: dict[str, int]  # tensor name -> ALLREDUCE spans


def _union_us(spans: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) spans: tensors fused together share their time."""
    total, end = 0.0, float("-inf")
    for s, e in sorted(spans):
        if e > end:
            total += e - max(s, end)
            end = e
    return total


def read_timeline(path: str | Path, steps: int) -> Timeline:
    """Parse Horovod's timeline (Chrome trace events, one pid per tensor, nested B/E spans; the
    file may lack its closing bracket) into wall time per step."""
    text = Path(path).read_text().strip().rstrip(",")
    events = json.loads(text if text.endswith("]") else text + "]")
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"
             and "name" in e.get("args", {})}
    stacks: dict[int, list[tuple[str, float]]] = defaultdict(list)
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    allreduces: dict[str, int] = defaultdict(int)
    for e in events:
        ph, pid = e.get("ph"), e.get("pid")
        if ph == "B":
            stacks[pid].append((e["name"], float(e["ts"])))
        elif ph == "E" and stacks[pid]:
            name, start = stacks[pid].pop()
            top = not stacks[pid]
            if top and name.startswith("NEGOTIATE"):
                spans["negotiate"].append((start, float(e["ts"])))
            elif top and name == "ALLREDUCE":
                spans["allreduce"].append((start, float(e["ts"])))
                allreduces[names.get(pid, str(pid))] += 1
            elif name == "QUEUE" or name.startswith("WAIT_FOR"):
                spans["queue"].append((start, float(e["ts"])))
    per_step = 1e3 * max(steps, 1)  # microseconds -> ms per step
    return Timeline(*(_union_us(spans[k]) / per_step for k in ("negotiate", "allreduce", "queue")),
                    allreduces=dict(allreduces))


def autotune_best(path: str | Path) -> str:
    """The best-scoring sample in Horovod's autotune log (a CSV, one scored sample per row, the
    score last), as "name=value; ..."; or why there is none."""
    if not Path(path).exists():
        return "no samples (the run ended before the autotuner scored one)"
    rows = [r for r in csv.reader(Path(path).read_text().splitlines()) if r]
    if len(rows) < 2:
        return "no samples (the run ended before the autotuner scored one)"
    header, samples = rows[0], rows[1:]
    best = max(samples, key=lambda r: float(r[-1]))
    return "; ".join(f"{h.strip()}={v.strip()}" for h, v in zip(header, best)) + f" (best of {len(samples)})"
