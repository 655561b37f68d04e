"""Train a fixed global batch for a few steps under one strategy; each rank saves its weights.

Used by tests/test_distribution.py under the real launchers (horovodrun, launch.local_cluster).
Each rank seeds its own weights differently, so only broadcast_initial_state (or the strategy's
own initial sync) can make them start equal.

    PYTHONPATH=. python tests/dist/one_step.py --strategy S --out DIR [--cpu-replicas N] [--model M] [--steps K]
        [--hvd-compression fp16] [--no-gradient-sync] [--also M2:K2 ...]

--also trains more models after the first under the same strategy, in the same processes (one
launch, not one per model), each from its rank's seed again, saving into DIR/M2/.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--strategy", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--cpu-replicas", type=int, default=1)
    p.add_argument("--model", default="vgg11")
    p.add_argument("--width", type=float, default=0.125)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--global-batch", type=int, default=8)
    p.add_argument("--optimizer", default="sgd")
    p.add_argument("--hvd-compression", default="none")
    p.add_argument("--no-gradient-sync", action="store_true")
    p.add_argument("--also", action="append", default=[], metavar="MODEL:STEPS")
    args = p.parse_args()

    from bench.backends import load, make_distribution
    from bench.config.schema import RunConfig

    load("tensorflow")  # the framework imported as a run imports it (what it imports for nothing, hidden)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    cfg = RunConfig(model=args.model, strategy=args.strategy, cpu_replicas=args.cpu_replicas,
                    optimizer=args.optimizer, lr=0.05, momentum=0.9, collective_timeout=60,
                    hvd_compression=args.hvd_compression, gradient_sync=not args.no_gradient_sync)
    dist = make_distribution(cfg)
    per_replica = args.global_batch // dist.num_replicas
    runs = [(args.model, args.steps, Path(args.out))]
    runs += [(m, int(k), Path(args.out) / m) for m, k in (a.split(":") for a in args.also)]
    for name, steps, out_dir in runs:
        train(name, steps, out_dir, args, cfg, dist, per_replica)
    dist.shutdown()
    return 0


def train(name, steps, out_dir, args, cfg, dist, per_replica) -> None:
    import keras
    import numpy as np
    import tensorflow as tf

    import models
    from bench.backends import load
    from bench.backends.keras_common import make_optimizer
    from bench.backends.tensorflow.trainer import TensorFlowTrainer

    keras.utils.set_random_seed(1234 + 17 * dist.rank)  # deliberately different on every rank
    with dist.scope():
        model = models.build_model(name, num_classes=10, width=args.width)
        opt = make_optimizer(cfg, load(cfg.backend).sgd(), dist.num_replicas)
        opt.build(model.trainable_variables)
    dist.broadcast_initial_state(model, opt)
    initial = {v.path: np.array(v.numpy() if hasattr(v, "numpy") else v) for v in model.trainable_weights}
    trainer = TensorFlowTrainer(model, opt, dist, global_batch=args.global_batch, xla=False, gradient_sync=cfg.gradient_sync)

    rng = np.random.default_rng(99)
    x = rng.standard_normal((args.global_batch, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, args.global_batch).astype(np.int32)

    def dataset_fn(num_shards, index, batch):
        return tf.data.Dataset.from_tensor_slices((x, y)).shard(num_shards, index).batch(batch).repeat()

    batches = iter(dist.distribute(dataset_fn, per_replica))
    losses = [float(trainer.step(next(batches))[0]) for _ in range(steps)]

    replicas = getattr(dist, "replica_values", lambda v: [np.asarray(v)])
    out = {"losses": np.asarray(losses), "num_replicas": dist.num_replicas, "size": dist.size}
    for v in model.weights:
        for r, value in enumerate(replicas(v)):
            out[f"r{r}/{'T' if v.trainable else 'N'}/{v.path}"] = value
    for path, value in initial.items():
        out[f"r0/I/{path}"] = value
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / f"rank{dist.rank}.npz", **out)


if __name__ == "__main__":
    sys.exit(main())
