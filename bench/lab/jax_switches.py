"""The JAX step's model switches side by side (bench.config.schema.JAX_SWITCHES): the harness's
training step on the same model, batch and settings, built once per switch setting (plain, the
shifted max-pool gradient, the one-reduction BatchNorm backward, both), alternated round by round
in one process (bench.lab.overhead.alternated_rounds).

    python -m bench.lab.jax_switches [--models resnet18,vgg13] [--batch-size 64] [--width 0.5]
                                     [--steps 10] [--rounds 6] [--precision fp32]
                                     [--contenders maxpool,batchnorm,both]

A contender's images/sec for a round is steps x batch / the wall time of those steps; each ratio
to plain is the median of the per-round ratios, with the 95% CI of their mean. What it measures
sets a device kind's SWITCH_DEFAULTS: a switch is on by default only where its ratio's CI lies
above 1. The XLA options (--xla-autotune, --xla-command-buffer) act on GPUs only and are read once
per process: bench/lab/gpu_check.py measures them, each run in a process of its own.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import numpy as np

from bench.backends import select
from bench.config.schema import RunConfig
from bench.lab.overhead import alternated_rounds, fmt, paired_ratio
from bench.runner.session import open_session
from bench.runner.validate import prepare

# each contender: the model switches it sets (the rest plain)
CONTENDERS = {"plain": {}, "maxpool": {"jax_maxpool": "shifted"}, "batchnorm": {"jax_batchnorm": "onepass"},
              "both": {"jax_maxpool": "shifted", "jax_batchnorm": "onepass"}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet18,vgg13")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--contenders", default=",".join(CONTENDERS), help="which of " + ", ".join(CONTENDERS))
    args = p.parse_args(argv)
    chosen = {c: CONTENDERS[c] for c in ["plain", *args.contenders.split(",")] if c in CONTENDERS}
    if set(args.contenders.split(",")) - set(CONTENDERS):
        p.exit(2, f"jax_switches: --contenders takes {', '.join(CONTENDERS)}. Received: {args.contenders!r}\n")

    select("jax")
    import jax
    import keras

    print(f"# the JAX step's model switches on {jax.devices()[0].device_kind}: batch {args.batch_size}, width "
          f"{args.width:g}, {args.precision}, {args.steps} steps x {args.rounds} rounds, JAX {jax.__version__}, "
          f"{os.cpu_count()} CPUs")
    print("| model | " + " | ".join(f"{c} img/s" for c in chosen) + " | "
          + " | ".join(f"{c}/plain [95% CI]" for c in list(chosen)[1:]) + " |")
    print("|---|" + "---:|" * (2 * len(chosen) - 1))
    for name in args.models.split(","):
        base = RunConfig(model=name, backend="jax", batch_size=args.batch_size, width=args.width,
                         precision=args.precision, progress=False)
        sessions = {c: open_session(prepare(dataclasses.replace(base, **{"jax_maxpool": "plain", "jax_batchnorm": "plain",
                                                                          **switches}))).build()
                    for c, switches in chosen.items()}
        res = alternated_rounds(sessions, rounds=args.rounds, steps=args.steps, warmup=args.warmup_steps,
                                batch=args.batch_size)
        speeds = " | ".join(f"{float(np.median(res[c])):.1f}" for c in chosen)
        ratios = " | ".join(fmt(paired_ratio(res[c], res["plain"])) for c in list(chosen)[1:])
        print(f"| {name} | {speeds} | {ratios} |", flush=True)
        del sessions
        keras.backend.clear_session()
    return 0


if __name__ == "__main__":
    sys.exit(main())
