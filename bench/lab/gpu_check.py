"""The prepared GPU check: the JAX path of the harness beside Keras `model.fit` on the same
backend, for resnet18, resnet34 and vgg13 at mixed_bf16 and batch 256, 512 and 2048; then
inference (forward only) at batch 1 to 512, with latency percentiles and peak memory; then a
profiler trace of the first model's training step, summed by op (bench/measure/traces.py).

    bash scripts/gpu_check.sh --peak-tflops 989      # on a GPU machine with JAX and no TensorFlow

For every model and batch it runs the harness exactly as `bench/run.py --backend jax` does
(its row goes to --output, in the usual schema) and `model.fit(jit_compile=True)` on the same
model, batch and precision, then prints one table: images/sec of each, their ratio, the
harness's TFLOP/s (3x the forward FLOPs per image), its share of the bf16 peak passed in, and
its peak device memory beside the estimate made before the run. A second table gives the
inference rows: images/sec, p50 and p99 latency per batch, peak memory and the estimate.
The device kind heads the table: a run on a CPU says so, and gives no GPU figure. A time
budget stops it cleanly, naming what it skipped.

Then the switch sweep (`switch_sweep`): the JAX step's switches (bench.config.schema.JAX_SWITCHES)
for --switch-models at --switch-batch-sizes, the plain path and each --switch-settings entry,
every configuration a fresh `bench/run.py` process (XLA reads its flags once per process), within
--switch-budget-s; a table of images/sec per setting with its ratio to plain, then the trace of
the fastest configuration, summed by op.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import sys
import time
from pathlib import Path

import models
from bench.backends import load, select
from bench.backends.keras_common import apply_precision_policy, make_optimizer
from bench.config.schema import JAX_SWITCHES, MIN_LATENCY_STEPS, RunConfig
from bench.data.source import synthetic_arrays
from bench.errors import ExitCode, Status
from bench.lab.overhead import epoch_clock, repeat
from bench.measure.probes import gib
from bench.measure.traces import summarize
from bench.results.store import append_row, check_output
from bench.runner.execute import execute
from bench.runner.validate import prepare
from bench.sweep.children import run_job
from bench.sweep.grid import Job, command_line
from launch import Launch

# each switch on alone, then the model switches together (the plain path always comes first)
SWITCH_SETTINGS = ("jax_maxpool=shifted;jax_batchnorm=onepass;xla_autotune=0;xla_command_buffer=off;"
                   "jax_maxpool=shifted,jax_batchnorm=onepass")
CHILD_TIMEOUT_S = 900


def fit_images_per_sec(name: str, batch: int, width: float, precision: str, steps: int, warmup: int) -> float:
    """Keras `fit` (jit_compile, the same optimizer and loss) on one fixed batch: images/sec of
    its epoch loop, after an untimed warmup epoch that compiles."""
    import keras

    cfg = RunConfig(model=name, batch_size=batch, precision=precision, backend="jax", width=width)
    apply_precision_policy(precision)
    keras.utils.set_random_seed(0)
    model = models.build_model(name, num_classes=100, width=width)
    model.compile(optimizer=make_optimizer(cfg, load(cfg.backend).sgd()), jit_compile=True,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    clock, data = epoch_clock(), repeat(synthetic_arrays(batch, 32, 100, 0))
    model.fit(data, epochs=1, steps_per_epoch=warmup + 1, verbose=0, shuffle=False)
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False, callbacks=[clock])
    keras.mixed_precision.set_global_policy("float32")
    return steps * batch / clock.seconds


class _Peaks:
    """JAX's GPU peak counter cannot be reset, and every configuration here runs in one process:
    a row's peak is its own only where it rose above every earlier one, `fit`'s included;
    otherwise it is shown as a bound ("≤")."""

    def __init__(self) -> None:
        self.high = 0

    def observe(self) -> None:
        """Count what ran outside the harness (model.fit) as earlier too."""
        import jax

        self.high = max([self.high] + [int((d.memory_stats() or {}).get("peak_bytes_in_use", 0))
                                       for d in jax.local_devices()])

    def show(self, row: dict) -> str:
        peak = row["peak_mem_bytes"]
        if peak is None or row["mem_source"] != "jax_gpu_peak_since_start":
            return gib(peak, unit="")
        own, self.high = peak > self.high, max(self.high, peak)
        return gib(peak, unit='') if own else f"≤{gib(peak, unit='')}"


def _energy_cells(row: dict) -> str:
    """The harness row's mean power, joules per step, images per joule and their source (empty
    cells where it measured none: bench.measure.energy)."""
    nums = [row.get(c) for c in ("power_mean_w", "energy_per_step_j", "images_per_joule")]
    cells = ["" if v is None else f"{v:,.{d}f}" for v, d in zip(nums, (0, 3, 1))]
    return " | ".join([*cells, str(row.get("energy_source") or "")])


def _free() -> None:
    """Let the next configuration have the device's memory."""
    import keras

    keras.backend.clear_session()
    gc.collect()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.lab.gpu_check", description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet18,resnet34,vgg13")
    p.add_argument("--batch-sizes", default="256,512,2048")
    p.add_argument("--inference-batch-sizes", default="1,8,32,128,512", help="'' for none")
    p.add_argument("--precision", default="mixed_bf16")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=20, help="timed steps for each contender")
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's bf16 dense peak, TFLOP/s")
    p.add_argument("--budget-s", type=float, default=330.0, help="stop starting new configurations after this")
    p.add_argument("--trace-batch", type=int, default=512,
                   help="then trace timed steps 5-7 of the first model at this batch and list its top ops (0: no trace)")
    p.add_argument("--output", default="results/gpu_check.csv")
    add_switch_options(p)
    args = p.parse_args(argv)
    try:
        settings = switch_settings(args.switch_settings)
    except ValueError as e:
        p.exit(ExitCode.INPUT, f"gpu_check: {e}\n")

    select("jax")
    import jax

    check_output(args.output)
    device = jax.local_devices()[0]
    started = time.perf_counter()
    print(f"# cnnbench GPU check on {device.device_kind} ({device.platform}, {jax.local_device_count()} local "
          f"device(s)), JAX {jax.__version__}, {args.precision}, width {args.width:g}, {args.steps} timed steps")
    print("| model | batch | harness img/s | model.fit img/s | harness/fit | harness TFLOP/s | % of bf16 peak "
          "| peak GiB | estimate GiB | W | J/step | img/J | energy |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    skipped = []
    peaks = _Peaks()

    def run_row(name: str, batch: int, **mode) -> dict | None:
        if time.perf_counter() - started > args.budget_s:
            skipped.append(f"{name}/{batch}{'/' + mode['mode'] if mode else ''}")
            return None
        # an estimate over the device's memory becomes an oom_predicted row, not an exit
        cfg = RunConfig(model=name, batch_size=batch, precision=args.precision, backend="jax", width=args.width,
                        steps=max(args.steps, MIN_LATENCY_STEPS) if mode else args.steps,
                        warmup_steps=args.warmup_steps, output=args.output, progress=False, source="sweep",
                        on_predicted_oom="row", **mode)
        row = execute(prepare(cfg)).row
        append_row(args.output, row)
        return row

    for name in args.models.split(","):
        for batch in map(int, args.batch_sizes.split(",")):
            row = run_row(name, batch)
            if row is None:
                continue
            if row["status"] != Status.OK:
                print(f"| {name} | {batch} | {row['status']}: {str(row['error'])[:80]} | | | | |", flush=True)
                continue
            peak = peaks.show(row)  # before fit runs: its peak comes after this row's
            fit = fit_images_per_sec(name, batch, args.width, args.precision, args.steps, args.warmup_steps)
            peaks.observe()
            ips, tflops = row["images_per_sec_median"], 3.0 * row["gflops_per_image"] * row["images_per_sec_median"] / 1e3
            share = f"{100 * tflops / args.peak_tflops:.1f}%" if args.peak_tflops else "n/a"
            print(f"| {name} | {batch} | {ips:,.0f} | {fit:,.0f} | {ips / fit:.3f} | {tflops:.1f} | {share} "
                  f"| {peak} | {gib(row['mem_estimate_bytes'], unit='')} | {_energy_cells(row)} |", flush=True)
            _free()
    print(f"\n# inference (forward only), {args.precision}: latency per batch")
    print("| model | batch | img/s | p50 ms | p99 ms | peak GiB | estimate GiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        for batch in [int(b) for b in args.inference_batch_sizes.split(",") if b]:
            row = run_row(name, batch, mode="inference")
            if row is None:
                continue
            if row["status"] != Status.OK:
                print(f"| {name} | {batch} | {row['status']}: {str(row['error'])[:80]} | | | | |", flush=True)
                continue
            print(f"| {name} | {batch} | {row['images_per_sec_median']:,.0f} | {row['latency_p50_ms']:.2f} "
                  f"| {row['latency_p99_ms']:.2f} | {peaks.show(row)} | {gib(row['mem_estimate_bytes'], unit='')} |",
                  flush=True)
            _free()
    if args.trace_batch:
        name = args.models.split(",")[0]
        cfg = RunConfig(model=name, batch_size=args.trace_batch, precision=args.precision, backend="jax",
                        width=args.width, steps=max(args.steps, 8), warmup_steps=args.warmup_steps,
                        output=args.output, progress=False, source="sweep", on_predicted_oom="row",
                        profile_steps="5-7")
        row = execute(prepare(cfg)).row
        append_row(args.output, row)
        show_trace(row, f"a {name} step goes at batch {args.trace_batch}, {args.precision}", f"{name}/{args.trace_batch}")
    if skipped:
        print(f"\nbudget of {args.budget_s:g} s spent: skipped {', '.join(skipped)}")
    if args.switch_budget_s > 0:
        switch_sweep(args, settings)
    print(f"\nrows in {args.output}; {time.perf_counter() - started:.0f} s in all")
    return 0


def add_switch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--switch-models", default="resnet18,vgg13", help="the switch sweep's models")
    p.add_argument("--switch-batch-sizes", default="512,2048", help="the switch sweep's batch sizes")
    p.add_argument("--switch-settings", default=SWITCH_SETTINGS,
                   help="';'-separated settings beside plain, each ','-separated SWITCH=VALUE "
                   f"(switches: {', '.join(JAX_SWITCHES)}); the switches a setting leaves out are plain")
    p.add_argument("--switch-budget-s", type=float, default=300.0,
                   help="stop starting new switch configurations after this (0: no switch sweep)")


def switch_settings(text: str) -> dict[str, dict[str, str]]:
    """--switch-settings as {label: every switch's value}, plain first; ValueError naming a bad
    name or value."""
    plain = {name: "plain" for name in JAX_SWITCHES}
    settings = {"plain": plain}
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        setting = dict(plain)
        for pair in entry.split(","):
            name, _, value = pair.strip().partition("=")
            if value not in JAX_SWITCHES.get(name, ()):
                raise ValueError(f"--switch-settings: {pair.strip()!r} is not SWITCH=VALUE with a switch of "
                        f"{', '.join(JAX_SWITCHES)} and one of its values. Received: {text!r}")
            setting[name] = value
        settings[entry.replace(" ", "")] = setting
    return settings


def _child_row(cfg: RunConfig, output: str) -> dict:
    """One configuration in a `bench/run.py` process of its own (its row, or the failure's)."""
    child = dataclasses.replace(cfg, progress=False, on_predicted_oom="row")  # as a sweep's children
    launch = Launch(prefix=[], env={}, run_args=[], processes=1, threads=child.threads)
    job = Job(child, 1, launch, command_line(launch, child), replicas=1)
    return run_job(job, output, CHILD_TIMEOUT_S, Path(output).parent / "logs")


def switch_sweep(args: argparse.Namespace, settings: dict[str, dict[str, str]]) -> None:
    """Images/sec of each switch setting against plain per model and batch, each in a fresh process,
    within --switch-budget-s; then the trace of the fastest configuration."""
    started, skipped, best = time.perf_counter(), [], None
    print(f"\n# the JAX step's switches, {args.precision}: images/sec per setting, each its own process")
    print("| model | batch | setting | img/s | setting/plain | compile s | img/J | energy |")
    print("|---|---:|---|---:|---:|---:|---:|---|")
    for name in args.switch_models.split(","):
        for batch in map(int, args.switch_batch_sizes.split(",")):
            plain_ips = None
            for label, switches in settings.items():
                if time.perf_counter() - started > args.switch_budget_s:
                    skipped.append(f"{name}/{batch}/{label}")
                    continue
                cfg = RunConfig(model=name, batch_size=batch, precision=args.precision, backend="jax",
                                width=args.width, steps=args.steps, warmup_steps=args.warmup_steps,
                                output=args.output, source="sweep", **switches)
                row = _child_row(cfg, args.output)
                if row["status"] != Status.OK:
                    print(f"| {name} | {batch} | {label} | {row['status']}: {str(row['error'])[:80]} | | | | |",
                          flush=True)
                    continue
                ips = float(row["images_per_sec_median"])
                plain_ips = ips if label == "plain" else plain_ips
                ratio = f"{ips / plain_ips:.3f}" if plain_ips else "n/a"
                ipj = row.get("images_per_joule")  # a row read back from the CSV: NaN where none was measured
                ipj = "" if ipj is None or ipj != ipj else f"{ipj:,.1f}"
                print(f"| {name} | {batch} | {label} | {ips:,.0f} | {ratio} | {float(row['compile_s']):.1f} | {ipj} "
                      f"| {row.get('energy_source') or ''} |", flush=True)
                if best is None or ips > best[0]:
                    best = (ips, label, cfg)
    if skipped:
        print(f"\nswitch budget of {args.switch_budget_s:g} s spent: skipped {', '.join(skipped)}")
    if best is not None and args.trace_batch:
        ips, label, cfg = best
        row = _child_row(dataclasses.replace(cfg, steps=max(args.steps, 8), profile_steps="5-7"), args.output)
        show_trace(row, f"a step of the fastest configuration goes: {cfg.model} at batch {cfg.batch_size}, {label} "
                   f"({ips:,.0f} img/s), {args.precision}", f"{cfg.model}/{cfg.batch_size}/{label}")


def show_trace(row: dict, where: str, label: str) -> None:
    """A traced row's step time by op (bench/measure/traces.py), or why there is none."""
    if row["status"] == Status.OK:
        print(f"\n# where {where} (trace in {row['trace_dir']})\n")
        print(summarize(row["trace_dir"]).table(top=15))
    else:
        print(f"\ntrace of {label}: {row['status']}: {str(row['error'])[:120]}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
