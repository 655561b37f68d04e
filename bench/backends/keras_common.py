"""What both backends share, written in backend-neutral Keras: the precision policy, the training loss, the learning-rate schedule and the optimizer."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.config.schema import RunConfig


def apply_precision_policy(precision: str) -> None:
    """Set Keras' global dtype policy before the model is built."""
    import keras

    keras.mixed_precision.set_global_policy(
        {"fp32": "float32", "mixed_bf16": "mixed_bfloat16", "mixed_fp16": "mixed_float16"}[precision])


def training_loss(outputs, labels, weights: tuple[float, ...]):
    """(per-example loss, the main head's float32 logits): sparse categorical cross-entropy from
    logits of each output, weighted (auxiliary heads, e.g. 0.3 each), in Keras ops for either backend."""
    import keras
    from keras import ops

    outs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    logits = [ops.cast(o, "float32") for o in outs]
    per_example = sum(w * keras.losses.sparse_categorical_crossentropy(labels, l, from_logits=True)
                      for w, l in zip(weights, logits))
    return per_example, logits[0]


def make_learning_rate(cfg: "RunConfig", num_replicas: int, steps_per_epoch: int | None):
    """cfg.lr, or with --scale-lr: lr x replicas, reached by a linear warmup (Goyal et al.)."""
    import keras

    if not cfg.scale_lr or num_replicas == 1:
        return cfg.lr
    target = cfg.lr * num_replicas
    if cfg.lr_warmup_epochs is not None and steps_per_epoch:
        warmup = max(1, int(cfg.lr_warmup_epochs * steps_per_epoch))
    elif steps_per_epoch:
        warmup = 5 * steps_per_epoch
    else:  # throughput mode: warm up over the first 10% of the run
        warmup = max(1, ((cfg.fixed_warmup or 0) + cfg.steps) // 10)

    class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            from keras import (
                ops,  # backend-neutral: the schedule runs inside either backend's step
            )
            frac = ops.minimum(1.0, ops.cast(step + 1, "float32") / warmup)
            return cfg.lr + (target - cfg.lr) * frac

        def get_config(self):
            return {"base": cfg.lr, "target": target, "warmup_steps": warmup}

    return LinearWarmup()


def make_optimizer(cfg: "RunConfig", sgd: type, num_replicas: int = 1, steps_per_epoch: int | None = None):
    """Adam (default 1e-3) or SGD with momentum (`sgd`: the backend's class, Backend.sgd()); weight
    decay via Keras' decoupled decay."""
    import keras

    lr = make_learning_rate(cfg, num_replicas, steps_per_epoch)
    wd = cfg.weight_decay or None
    if cfg.optimizer == "adam":
        opt = keras.optimizers.Adam(learning_rate=lr, weight_decay=wd)
    else:
        opt = sgd(learning_rate=lr, momentum=cfg.momentum, weight_decay=wd)
    if cfg.precision == "mixed_fp16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt
