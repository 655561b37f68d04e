"""Fused BatchNorm against Keras' own, side by side on TensorFlow: the harness's training step on
the same model, batch and settings, built once with TensorFlow's fused kernel (what every
cnnbench model uses) and once with Keras 3's separate ops, alternated round by round in one
process.

    python -m bench.lab.bn_compare [--models resnet18,resnet34] [--batch-size 64] [--image-size 32]
                               [--width 1.0] [--steps 10] [--rounds 6] [--xla/--no-xla] [--form auto]

A contender's images/sec for a round is steps x batch / the wall time of those steps; the
ratio fused/keras is the median of the per-round ratios, with the 95% CI of their mean.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from bench.backends import select
from bench.config.schema import RunConfig
from bench.lab.overhead import alternated_rounds, fmt, paired_ratio
from bench.runner.session import open_session
from bench.runner.validate import prepare
from models.batchnorm import fused

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet18,resnet34")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--form", default="auto")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--xla", action=argparse.BooleanOptionalAction, default=False)
    args = p.parse_args(argv)

    select("tensorflow")
    import keras

    print(f"# fused BatchNorm vs Keras' on TensorFlow: batch {args.batch_size}, {args.image_size} px, "
          f"width {args.width:g}, {args.optimizer}, xla={args.xla}, {args.steps} steps x {args.rounds} rounds, "
          f"Keras {keras.__version__}, {os.cpu_count()} CPUs")
    print("| model | fused img/s | keras img/s | fused/keras [95% CI] |")
    print("|---|---:|---:|---:|")
    for name in args.models.split(","):
        cfg = RunConfig(model=name, batch_size=args.batch_size, image_size=args.image_size, form=args.form,
                        width=args.width, xla=args.xla, optimizer=args.optimizer, progress=False)
        sessions = {}
        for kind in ("fused", "keras"):
            with fused(kind == "fused"):
                sessions[kind] = open_session(prepare(cfg)).build()
        res = alternated_rounds(sessions, rounds=args.rounds, steps=args.steps, warmup=args.warmup_steps,
                                batch=args.batch_size)
        f, k = (float(np.median(res[c])) for c in ("fused", "keras"))
        print(f"| {name} | {f:.1f} | {k:.1f} | {fmt(paired_ratio(res['fused'], res['keras']))} |", flush=True)
        del sessions
        keras.backend.clear_session()
    return 0


if __name__ == "__main__":
    sys.exit(main())
