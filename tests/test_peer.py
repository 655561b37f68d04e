"""The tf_cnn_benchmarks comparison's own logic (bench/lab/peer.py), without the peer: parsing its
output, its row in the cnnbench schema, and bad input. The comparison itself needs a checkout of
the peer and runs by hand (scripts/compare_tf_cnn.sh); its figures are in the README."""
from __future__ import annotations

import pytest

from bench.config.parse import parse_args
from bench.lab import peer
from bench.results.load import load_results
from bench.results.store import append_row

LINES = ["Running warm up", "Done warm up", "Step\tImg/sec\ttotal_loss",
         "1\timages/sec: 5.0 +/- 0.0 (jitter = 0.0)\t7.361", "2\timages/sec: 5.1 +/- 0.1 (jitter = 0.0)\t7.5",
         "3\timages/sec: 5.0 +/- 0.1 (jitter = 0.1)\t7.6", "4\timages/sec: 4.9 +/- 0.1 (jitter = 0.1)\t7.6",
         "-" * 64, "total images/sec: 4.95", "-" * 64]


def test_the_peers_figure_and_step_times_are_read_from_its_output():
    stamps = [0.0, 0.1, 0.2, 10.0, 11.6, 13.2, 14.8, 14.81, 14.82, 14.83]
    run = peer.parse_peer(list(zip(stamps, LINES)))
    assert run.images_per_sec == 4.95
    assert run.step_times == pytest.approx([1.6, 1.6, 1.6])  # between step lines: not the warmup before step 1
    with pytest.raises(RuntimeError, match="total images/sec"):
        peer.parse_peer(list(zip(stamps, LINES[:7])))


def test_the_peers_row_is_a_cnnbench_row_a_report_reads(tmp_path):
    run = peer.PeerRun(4.95, [1.6, 1.7, 1.5, 1.6, 1.65, 1.6], 30.0)
    row = peer.peer_row(peer.MATCHES["resnet50"], run, "2.21.0")
    assert row["source"] == "tf_cnn_benchmarks" and row["status"] == "ok" and row["images_per_sec"] == 4.95
    assert row["images_per_sec_median"] == pytest.approx(8 / 1.6) and row["timed_steps"] == 6
    assert (row["model"], row["image_size"], row["batch_size"], row["optimizer"], row["lr"]) == \
        ("resnet50", 224, 8, "sgd", peer.MATCHES["resnet50"].lr)
    append_row(tmp_path / "r.csv", row)
    df = load_results([tmp_path / "r.csv"])
    assert df["source"].tolist() == ["tf_cnn_benchmarks"] and df["form"].tolist() == ["imagenet"]


def test_the_commands_match_settings_on_both_sides():
    m = peer.MATCHES["vgg16"]
    cmd = peer.peer_command("py", peer.Path("/x/tf_cnn_benchmarks.py"), m)
    ours = peer.ours_args(m, "o.csv")
    assert "--batch_size=8" in cmd and "--num_batches=20" in cmd and "--num_warmup_batches=5" in cmd
    assert f"--init_learning_rate={m.lr}" in cmd and "--optimizer=momentum" in cmd and "--data_format=NHWC" in cmd
    cfg = parse_args(ours)  # our command line is RunConfig.to_argv(): read it back as bench/run.py would
    assert (cfg.batch_size, cfg.steps, cfg.warmup_steps, cfg.lr, cfg.image_size, cfg.optimizer, cfg.momentum,
            cfg.xla, cfg.output) == (8, 20, 5, m.lr, 224, "sgd", peer.MOMENTUM, False, "o.csv")


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert peer.main(["--peer-dir", str(tmp_path), "--peer-python", "python"]) == 2
    assert "no tf_cnn_benchmarks.py" in capsys.readouterr().err
    (tmp_path / "tf_cnn_benchmarks.py").write_text("")
    assert peer.main(["--peer-dir", str(tmp_path), "--peer-python", "python", "--models", "mobilenet"]) == 2
    assert "models=mobilenet" in capsys.readouterr().err


def test_the_peers_trace_is_summed_per_op_type(tmp_path):
    import json
    trace = {"traceEvents": [{"ph": "M", "name": "process_name"},
                             {"ph": "X", "name": "Conv2D", "dur": 3000, "args": {"op": "Conv2D", "name": "a"}},
                             {"ph": "X", "name": "Conv2D", "dur": 1000, "args": {"op": "Conv2D", "name": "b"}},
                             {"ph": "X", "name": "FusedBatchNormV3", "dur": 500, "args": {"op": "FusedBatchNormV3"}}]}
    (tmp_path / "t.json").write_text(json.dumps(trace))
    assert peer.trace_ops(tmp_path / "t.json") == {"Conv2D": 4.0, "FusedBatchNormV3": 0.5}
