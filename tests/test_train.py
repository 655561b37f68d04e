"""Training-step pieces: learning-rate scaling, precision policies, XLA."""
import pytest

from bench.backends.keras_common import make_learning_rate
from bench.config.parse import parse_args
from bench.config.schema import RunConfig


def test_lr_is_unscaled_by_default():
    assert make_learning_rate(RunConfig(model="vgg11", lr=0.1), num_replicas=8, steps_per_epoch=10) == 0.1


def test_scale_lr_warms_up_linearly_to_lr_times_replicas():
    cfg = RunConfig(model="vgg11", lr=0.1, scale_lr=True, lr_warmup_epochs=2)
    sched = make_learning_rate(cfg, num_replicas=4, steps_per_epoch=10)  # warmup: 20 steps
    assert float(sched(0)) == pytest.approx(0.1 + 0.3 * 1 / 20)
    assert float(sched(9)) == pytest.approx(0.1 + 0.3 * 10 / 20)
    assert float(sched(19)) == pytest.approx(0.4)
    assert float(sched(500)) == pytest.approx(0.4)


def test_scale_lr_in_throughput_mode_warms_up_over_a_tenth_of_the_run():
    cfg = RunConfig(model="vgg11", lr=0.1, scale_lr=True, steps=90, warmup_steps=10)
    sched = make_learning_rate(cfg, num_replicas=2, steps_per_epoch=None)
    assert float(sched(4)) == pytest.approx(0.1 + 0.1 * 5 / 10)
    assert float(sched(10)) == pytest.approx(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("flags,expect", [
    (["--precision", "mixed_bf16"], {"precision": "mixed_bf16", "compute": "bfloat16"}),
    (["--precision", "mixed_fp16"], {"precision": "mixed_fp16", "compute": "float16"}),
    (["--xla"], {"xla": True, "compute": "float32"}),
    (["--optimizer", "sgd", "--weight-decay", "5e-4"], {"optimizer": "sgd", "lr": 1e-3, "weight_decay": 5e-4,
                                                        "compute": "float32"}),
])
def test_precision_xla_and_optimizer_variants_train(tmp_path, flags, expect):
    import keras

    from bench.measure.timing import run_steps
    from bench.runner.session import open_session
    from bench.runner.validate import prepare

    cfg = parse_args(["resnet18", "--width", "0.125", "--steps", "3", "--warmup-steps", "1", "--batch-size", "8",
                      "--no-progress", "--output", str(tmp_path / "r.csv"), *flags])
    try:
        session = open_session(prepare(cfg)).build()
        compute = {l.dtype_policy.compute_dtype for l in session.model.layers if l.weights}
        timing = run_steps(session.step.run, warmup=0, timed=8, global_batch=8)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    for k, v in expect.items():
        if k != "compute":
            assert getattr(session.cfg, k) == v, k
    assert expect["compute"] in compute  # the policy reached the layers
    assert type(session.optimizer).__name__ == ("LossScaleOptimizer" if "mixed_fp16" in flags else
                                                 "MomentumSGD" if "sgd" in flags else "Adam")  # bench.train's fused SGD
    # the variant trains: the loss on the fixed synthetic batch falls from its first value
    assert min(timing.losses[-3:]) < timing.losses[0], timing.losses
