"""Harness overhead benchmark: the harness's step against plain Keras `model.fit`, and the real
CIFAR-100 input pipeline against synthetic data, alternated round by round in one process.

    python -m bench.lab.overhead [--backend tensorflow|jax] [--models vgg13,resnet18] [--batch-sizes 32,128]
                             [--width 1.0] [--steps 10] [--rounds 3] [--xla/--no-xla] [--data-dir PATH]

Each round times `--steps` steps of every contender on the same model, batch, precision and XLA
setting, after an untimed warmup. The ratios use the median over rounds of images/sec, where
a contender's images/sec for a round is steps x batch / wall time of those steps.
- harness/fit: the harness session (bench.runner.session.open_session + build, what bench/run.py times)
  on its fixed synthetic batch, against model.fit on the same batch repeated (a tf.data dataset
  on TensorFlow, a generator on JAX), on the chosen backend.
- cifar/synthetic: the harness on the real cifar100 pipeline (tf.data on TensorFlow, the host
  numpy pipeline with device prefetch on JAX) against the harness on the fixed synthetic batch. Without --data-dir, a
  cifar-100-python archive of random pixels (10,000 train images) is written to a temp dir.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import models
from bench.backends import select
from bench.backends.keras_common import make_optimizer
from bench.config.schema import RunConfig
from bench.data.sets.cifar100 import CIFAR_ARCHIVE, cifar100_archive, cifar100_split_pickle
from bench.data.source import synthetic_arrays
from bench.measure.stats import ci95_halfwidth
from bench.measure.timing import run_steps
from bench.runner.session import open_session
from bench.runner.validate import prepare
from launch.base import BACKENDS

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _write_random_cifar(folder: Path, n_train: int = 10000, n_test: int = 1000) -> Path:
    rng = np.random.default_rng(0)
    path = folder / CIFAR_ARCHIVE
    path.write_bytes(cifar100_archive({
        split: cifar100_split_pickle(rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 100, n))
        for split, n in (("train", n_train), ("test", n_test))}))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=BACKENDS, default="tensorflow")
    p.add_argument("--models", default="vgg13,resnet18")
    p.add_argument("--batch-sizes", default="32,128")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--xla", action=argparse.BooleanOptionalAction, default=None,
                   help="TensorFlow only (default off on CPU); JAX always compiles with XLA")
    p.add_argument("--data-dir")
    args = p.parse_args(argv)

    select(args.backend)

    import keras

    tmp = tempfile.TemporaryDirectory()
    data_dir = args.data_dir or str(_write_random_cifar(Path(tmp.name)))
    jax = args.backend == "jax"
    xla = True if jax else bool(args.xla)
    print(f"# overhead on {args.backend}: width {args.width:g}, {args.steps} steps x {args.rounds} rounds, "
          f"xla={xla}, {keras.backend.backend()} via Keras {keras.__version__}, {os.cpu_count()} CPUs")
    print("| model | batch | harness img/s | model.fit img/s | harness/fit [95% CI] | cifar img/s | "
          "synthetic img/s | cifar/synthetic [95% CI] |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    worst = {"fit": (np.inf, 0, 0), "data": (np.inf, 0, 0)}
    for name in args.models.split(","):
        for batch in map(int, args.batch_sizes.split(",")):
            base = RunConfig(model=name, batch_size=batch, width=args.width, xla=None if jax else xla,
                             backend=args.backend, progress=False)
            # the harness, exactly as bench/run.py builds it: on its fixed synthetic batch, and on
            # the real cifar100 pipeline (tf.data on TensorFlow, the host pipeline on JAX)
            harness = open_session(prepare(base)).build()
            cifar = open_session(prepare(dataclasses.replace(base, data="cifar100", data_dir=data_dir))).build()
            # model.fit on the same fixed batch, the same model (same seed), optimizer and compilation
            fixed = synthetic_arrays(batch, base.image_size, 100, base.seed * 1000)
            keras.utils.set_random_seed(0)
            m_f = models.build_model(name, num_classes=100, width=args.width)
            m_f.compile(optimizer=make_optimizer(harness.cfg, harness.backend.sgd()), jit_compile=xla,
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            if jax:
                ds = repeat(fixed)
            else:
                import tensorflow as tf
                ds = tf.data.Dataset.from_tensors(fixed).repeat()
            clock = epoch_clock()

            def run_f():
                m_f.fit(ds, epochs=1, steps_per_epoch=args.steps, verbose=0, shuffle=False, callbacks=[clock])
                return clock.seconds

            def steps_of(s):
                return lambda: run_steps(s.step.run, warmup=0, timed=args.steps, global_batch=batch,
                                         first_is_compile=False, device_sync=s.step.device_sync)

            def timed(fn):
                t0 = time.perf_counter()
                seconds = fn()
                if not isinstance(seconds, float):
                    seconds = time.perf_counter() - t0
                return batch * args.steps / seconds

            # untimed warmup of every contender (tracing, compilation, pipeline fill)
            for s in (harness, cifar):
                run_steps(s.step.run, warmup=args.warmup_steps, timed=0, global_batch=batch, device_sync=s.step.device_sync)
            m_f.fit(ds, epochs=1, steps_per_epoch=args.warmup_steps + 1, verbose=0, shuffle=False)
            res = {"h": [], "f": [], "c": []}
            for r in range(args.rounds):
                order = [("h", steps_of(harness)), ("f", run_f), ("c", steps_of(cifar))]
                if r % 2:
                    order.reverse()  # alternate the order so drift hits every contender alike
                for key, fn in order:
                    res[key].append(timed(fn))
            h, f, c = (float(np.median(res[k])) for k in "hfc")
            # paired per-round ratios: each round's contenders ran back to back, so drift cancels
            hf = paired_ratio(res["h"], res["f"])
            ch = paired_ratio(res["c"], res["h"])
            worst["fit"], worst["data"] = min(worst["fit"], hf), min(worst["data"], ch)
            print(f"| {name} | {batch} | {h:.1f} | {f:.1f} | {fmt(hf)} | {c:.1f} | {h:.1f} | {fmt(ch)} |",
                  flush=True)
            del harness, cifar, m_f
            keras.backend.clear_session()
    print(f"\nworst harness/fit ratio {fmt(worst['fit'])} (target >= 1.0); "
          f"worst cifar/synthetic ratio {fmt(worst['data'])} (target >= 0.95)")
    return 0


def repeat(batch):
    """A generator that yields the same batch for ever (fit's input on JAX)."""
    while True:
        yield batch


def epoch_clock():
    """A Keras callback timing fit's epoch loop only (its logs are fetched at epoch end, which
    waits for the last step), not fit's setup: `.seconds` after each epoch."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            float(logs["loss"])
            self.seconds = time.perf_counter() - self.t0
    return EpochClock()


def alternated_rounds(sessions: dict, *, rounds: int, steps: int, warmup: int, batch: int) -> dict[str, list[float]]:
    """Images/sec of each built session per round: an untimed warmup (tracing, compilation) each,
    then `rounds` rounds of `steps` timed steps each, the order reversed every other round so
    that drift hits every contender alike."""
    for s in sessions.values():
        run_steps(s.step.run, warmup=warmup, timed=0, global_batch=batch, device_sync=s.step.device_sync)
    res: dict[str, list[float]] = {k: [] for k in sessions}
    for r in range(rounds):
        for k in (list(sessions) if r % 2 == 0 else list(sessions)[::-1]):
            t = run_steps(sessions[k].step.run, warmup=0, timed=steps, global_batch=batch, first_is_compile=False,
                          device_sync=sessions[k].step.device_sync)
            res[k].append(t.images / sum(t.step_times))
    return res


def paired_ratio(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Median of the per-round ratios a/b, with the 95% CI of their mean."""
    r = np.asarray(a) / np.asarray(b)
    half = ci95_halfwidth(r)
    return float(np.median(r)), float(r.mean() - half), float(r.mean() + half)


def fmt(ratio: tuple[float, float, float]) -> str:
    return f"{ratio[0]:.3f} [{ratio[1]:.3f}, {ratio[2]:.3f}]"


if __name__ == "__main__":
    sys.exit(main())
