"""Train a fixed global batch for a few SGD steps through the harness's own session, on one
backend and one strategy; save the losses and the final weights.

Used by tests/test_backends.py: TensorFlow against JAX from the same weights file, and JAX's
mirrored mesh against a single device.

    PYTHONPATH=. python tests/dist/backend_steps.py --backend B --strategy S --model M --init-weights W --out F.npz
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--backend", required=True)
    p.add_argument("--strategy", default="single")
    p.add_argument("--cpu-replicas", type=int, default=1)
    p.add_argument("--model", default="vgg11")
    p.add_argument("--init-weights", required=True)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--global-batch", type=int, default=8)
    p.add_argument("--out", required=True)
    p.add_argument("--keras-batchnorm", action="store_true",
                   help="on TensorFlow, Keras' own BatchNorm ops instead of the fused kernel (models.batchnorm)")
    for name in ("jax_maxpool", "jax_batchnorm"):  # the JAX step's switches (bench.config.schema.JAX_SWITCHES)
        p.add_argument("--" + name.replace("_", "-"), default="plain")
    args = p.parse_args()

    from bench.backends import select
    select(args.backend)
    import numpy as np

    from bench.config.schema import RunConfig
    from bench.runner.session import open_session
    from bench.runner.validate import prepare

    per_replica = args.global_batch // args.cpu_replicas  # one device per replica, in one process
    cfg = RunConfig(model=args.model, backend=args.backend, strategy=args.strategy, cpu_replicas=args.cpu_replicas,
                    batch_size=per_replica, width=0.125, num_classes=10, optimizer="sgd", lr=0.05, momentum=0.9,
                    threads=1, init_weights=args.init_weights, progress=False, jax_maxpool=args.jax_maxpool,
                    jax_batchnorm=args.jax_batchnorm)
    from models.batchnorm import fused
    with fused(not args.keras_batchnorm):
        s = open_session(prepare(cfg)).build()
    assert s.dist.num_replicas == args.cpu_replicas
    rng = np.random.default_rng(99)
    x = rng.standard_normal((args.global_batch, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, args.global_batch).astype(np.int32)
    if args.backend == "jax":
        batch = s.dist.shard((x, y))  # one process: its part is the whole global batch
    else:
        import tensorflow as tf

        def dataset_fn(num_shards, index, b):
            return tf.data.Dataset.from_tensor_slices((x, y)).shard(num_shards, index).batch(b).repeat()
        batch = s.dist.distribute_fixed(dataset_fn, per_replica)
    initial = [np.asarray(w) for w in s.model.get_weights()]
    losses = [float(s.step.trainer.step(batch)[0]) for _ in range(args.steps)]
    s.step.trainer.write_back()
    np.savez(args.out, losses=np.asarray(losses), replicas=s.dist.num_replicas,
             **{f"w{i}": np.asarray(w) for i, w in enumerate(s.model.get_weights())},
             **{f"i{i}": w for i, w in enumerate(initial)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
