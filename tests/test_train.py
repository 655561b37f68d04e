"""Training-step pieces: learning-rate scaling, precision policies, XLA."""
import pytest

from bench.config import RunConfig, parse_args
from bench.train import make_learning_rate


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


@pytest.mark.parametrize("flags", [["--precision", "mixed_bf16"], ["--precision", "mixed_fp16"], ["--xla"],
                                   ["--optimizer", "sgd", "--weight-decay", "5e-4"]])
def test_precision_xla_and_optimizer_variants_train(tmp_path, flags):
    import keras

    from bench.runner import execute

    cfg = parse_args(["resnet18", "--width", "0.125", "--steps", "3", "--warmup-steps", "1", "--batch-size", "8",
                      "--no-progress", "--output", str(tmp_path / "r.csv"), *flags])
    try:
        row = execute(cfg).row
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert row["status"] == "ok", row["error"]
    assert row["final_loss"] == row["final_loss"]  # finite, not NaN
