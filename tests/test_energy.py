"""Energy over the timed steps (bench.measure.energy): the integration on known series, the
RAPL counters through a fake powercap tree, a fake nvidia-smi driving a real run, and a real run
on this machine, which has no power source."""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import REPO, run_cli

from bench.measure import energy
from bench.measure.energy import (
    ANY_DEVICE_ENV,
    GATHER_WIDTH,
    RAPL_DIR_ENV,
    EnergyMeter,
    EnergyReading,
    choose_source,
    combine,
    counter_energy,
    energy_columns,
    gather_values,
    integrate_power,
    unwrap,
)
from bench.results.store import read_rows

TINY = ["--width", "0.125", "--warmup-steps", "1", "--batch-size", "8", "--no-progress"]


# ---- the maths ---------------------------------------------------------------------------------
def test_constant_power_integrates_to_power_times_the_window():
    t = np.arange(0.0, 10.0, 0.1)
    assert integrate_power(t, np.full_like(t, 250.0), 2.0, 5.0) == pytest.approx(750.0)
    # held at its first and last value beyond the samples
    assert integrate_power([1.0, 2.0], [100.0, 100.0], 0.0, 3.0) == pytest.approx(300.0)


def test_a_ramp_integrates_exactly_even_cut_between_samples():
    t = np.arange(0.0, 11.0, 1.0)
    p = 10.0 * t  # P(t) = 10 t: the energy from a to b is 5 (b^2 - a^2)
    assert integrate_power(t, p, 0.0, 10.0) == pytest.approx(500.0)
    assert integrate_power(t, p, 2.5, 7.25) == pytest.approx(5 * (7.25**2 - 2.5**2))


def test_the_window_clips_what_lies_outside_it():
    t = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    p = np.array([1000.0, 100.0, 100.0, 100.0, 1000.0])  # spikes outside [1, 3] must not count
    assert integrate_power(t, p, 1.0, 3.0) == pytest.approx(200.0)
    assert integrate_power(t, p, 3.0, 1.0) == 0.0 and integrate_power([], [], 0.0, 1.0) == 0.0
    assert energy.inside(t, 1.0, 3.0) == 3


def test_a_counter_that_wraps_is_unwrapped_and_cut_at_the_window():
    max_range = 1000.0
    raw = [900.0, 980.0, 60.0, 140.0, 220.0]  # +80 each step, wrapping once between the 2nd and 3rd
    cumulative = unwrap(raw, max_range)
    assert cumulative.tolist() == [0.0, 80.0, 160.0, 240.0, 320.0]
    t = [0.0, 1.0, 2.0, 3.0, 4.0]
    assert counter_energy(t, cumulative, 0.5, 3.5) == pytest.approx(240.0)


# ---- across ranks --------------------------------------------------------------------------------
def _reading(joules, window=2.0, samples=20, source="nvidia-smi"):
    return EnergyReading(source, joules, window, samples)


def test_ranks_on_one_host_count_a_device_once_and_hosts_add_up():
    a0 = gather_values(_reading({0: 200.0, 1: 100.0}), host=1.0)
    a1 = gather_values(_reading({0: 202.0, 1: 98.0}, samples=15), host=1.0)  # the same two GPUs, seen again
    b0 = gather_values(_reading({0: 400.0}), host=2.0)
    job = combine(np.array([a0, a1, b0]))
    assert job.source == "nvidia-smi" and job.samples == 15
    assert job.joules == pytest.approx(201.0 + 99.0 + 400.0)
    assert job.watts == pytest.approx((201.0 + 99.0 + 400.0) / 2.0)
    cols = energy_columns(job, steps=10, global_batch=64)
    assert cols["energy_per_step_j"] == pytest.approx(70.0)
    assert cols["images_per_joule"] == pytest.approx(640 / 700.0)
    assert cols["power_mean_w"] == pytest.approx(350.0) and cols["energy_samples"] == 15


def test_no_source_or_mixed_sources_or_too_few_samples_leave_the_numbers_empty():
    none = combine(np.array([gather_values(None, host=1.0)]))
    assert energy_columns(none, 10, 8) == {"energy_source": "none"}
    mixed = combine(np.array([gather_values(_reading({0: 1.0}), host=1.0),
                              gather_values(None, host=2.0)]))
    assert energy_columns(mixed, 10, 8) == {"energy_source": "none"}
    thin = combine(np.array([gather_values(_reading({0: 5.0}, samples=1), host=1.0)]))
    assert energy_columns(thin, 10, 8) == {"energy_source": "nvidia-smi", "energy_samples": 1}
    assert len(gather_values(None)) == GATHER_WIDTH


def _measure(source, settle: float, during) -> EnergyMeter:
    """A meter over `during()`, its source sampling for `settle` seconds before the window opens."""
    meter = EnergyMeter(source).open()
    try:
        time.sleep(settle)
        meter.start()
        during()
        meter.stop()
    finally:
        meter.close()
    return meter


# ---- the RAPL counters -----------------------------------------------------------------------------
def _rapl_tree(root: Path, packages: dict[int, float], max_range: float = 262143328850.0) -> None:
    for index, uj in packages.items():
        zone = root / f"intel-rapl:{index}"
        zone.mkdir(parents=True, exist_ok=True)
        (zone / "energy_uj").write_text(f"{int(uj)}\n")
        (zone / "max_energy_range_uj").write_text(f"{int(max_range)}\n")
        sub = root / f"intel-rapl:{index}:0"  # a subzone (cores): inside the package's count, not added again
        sub.mkdir(exist_ok=True)
        (sub / "energy_uj").write_text("0\n")
        (sub / "max_energy_range_uj").write_text(f"{int(max_range)}\n")


def test_rapl_counters_are_read_through_the_window_across_a_wrap(tmp_path):
    max_range = 1_000_000.0  # 1 J: the counter wraps within the run
    _rapl_tree(tmp_path, {0: 900_000.0, 1: 0.0}, max_range)
    source = choose_source(False, 0.01, rapl_dir=str(tmp_path))
    assert source is not None and source.name == "rapl" and source.channels == [0, 1]
    def during() -> None:
        time.sleep(0.05)  # polls inside the window before any change, and after the last one
        # package 0 gains 0.3 J and wraps (900000 -> 200000 uJ), package 1 gains 2 J in steps of 0.5 J
        (tmp_path / "intel-rapl:0" / "energy_uj").write_text("200000\n")
        for uj in (500_000, 1_000_000 - 1, 1_499_999, 1_999_999):
            time.sleep(0.05)
            (tmp_path / "intel-rapl:1" / "energy_uj").write_text(f"{uj % int(max_range)}\n")
        time.sleep(0.05)
    meter = _measure(source, 0.05, during)
    r = meter.reading
    assert r.source == "rapl" and r.samples >= 2
    # every change landed between two polls inside the window: no edge to interpolate across
    assert r.joules[0] == pytest.approx(0.3, abs=1e-6)
    assert r.joules[1] == pytest.approx(1.999999, abs=1e-6)


def test_an_unreadable_or_absent_rapl_tree_is_no_source(tmp_path):
    assert choose_source(False, 0.1, rapl_dir=str(tmp_path)) is None
    (tmp_path / "intel-rapl:0").mkdir()
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("not a number\n")
    assert choose_source(False, 0.1, rapl_dir=str(tmp_path)) is None


# ---- a fake nvidia-smi -------------------------------------------------------------------------------
FAKE_SMI = """#!{python}
# a fake nvidia-smi: `-L` lists no GPU (the run stays a CPU run); the power query prints two GPUs,
# index 0 at 100 W and index 1 at 50 W, once, or every N ms with -lms N
import sys, time
args = sys.argv[1:]
if "--query-gpu=index,power.draw" in args:
    ms = int(args[args.index("-lms") + 1]) if "-lms" in args else None
    while True:
        print("0, 100.00\\n1, 50.00", flush=True)
        if ms is None:
            break
        time.sleep(ms / 1000)
elif "--query-gpu=index,uuid" in args:
    print("0, GPU-aaaa\\n1, GPU-bbbb")
"""


@pytest.fixture
def fake_smi(tmp_path, monkeypatch):
    folder = tmp_path / "bin"
    folder.mkdir()
    exe = folder / "nvidia-smi"
    exe.write_text(FAKE_SMI.format(python=sys.executable))
    exe.chmod(0o755)
    env = {"PATH": f"{folder}{os.pathsep}{os.environ.get('PATH', '')}", ANY_DEVICE_ENV: "1",
           RAPL_DIR_ENV: str(tmp_path / "no-rapl")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return env


def test_nvidia_smi_is_chosen_for_the_gpus_this_process_sees(fake_smi, monkeypatch):
    if energy._nvml(0.1) is not None:
        pytest.skip("NVML answers on this machine: it would be chosen first")
    source = choose_source(False, 0.02)
    assert source.name == "nvidia-smi" and source.channels == [0, 1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb")
    assert choose_source(False, 0.02).channels == [1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-cccc")  # a shared board's power is not this run's
    assert choose_source(False, 0.02) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert choose_source(False, 0.02) is None
    monkeypatch.delenv(ANY_DEVICE_ENV)  # a CPU run does not read GPU boards
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert choose_source(False, 0.02) is None


def test_the_sampler_integrates_what_nvidia_smi_reported(fake_smi):
    meter = _measure(choose_source(False, 0.02), 0.2, lambda: time.sleep(0.3))
    r = meter.reading
    assert r.source == "nvidia-smi" and r.samples >= 5
    assert r.joules[0] == pytest.approx(100.0 * r.window_s, rel=1e-6)
    assert r.joules[1] == pytest.approx(50.0 * r.window_s, rel=1e-6)
    assert meter.source._proc.poll() is not None  # the child is gone


@pytest.mark.slow
def test_a_real_run_records_the_energy_the_fake_nvidia_smi_reported(tmp_path, fake_smi):
    out = tmp_path / "runs.csv"
    r = run_cli("resnet18", *TINY, "--steps", "12", "--energy-interval-ms", "10", "--output", str(out), env=fake_smi)
    assert r.returncode == 0, r.stderr[-2000:]
    row = read_rows(out).iloc[0]
    assert row["device_kind"] == "cpu"  # the power source says nothing about where the steps ran
    assert row["energy_source"] == "nvidia-smi" and row["energy_interval_ms"] == 10
    assert row["energy_samples"] >= 2
    assert row["power_mean_w"] == pytest.approx(150.0, rel=1e-6)
    # with a fixed warmup the window holds exactly the timed steps: 150 W over their time
    assert row["energy_per_step_j"] == pytest.approx(150.0 * row["step_time_mean_s"], rel=0.25)
    assert row["images_per_joule"] == pytest.approx(row["global_batch"] / row["energy_per_step_j"])
    assert "images/J: 150.0 W mean" in r.stdout and "(nvidia-smi, " in r.stdout


@pytest.mark.slow
def test_a_real_run_on_this_machine_names_no_source_and_no_numbers(tmp_path):
    if choose_source(False, 0.1) is not None:
        pytest.skip("this machine has a readable RAPL tree")
    out = tmp_path / "runs.csv"
    r = run_cli("resnet18", *TINY, "--steps", "4", "--output", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    row = read_rows(out).iloc[0]
    assert row["energy_source"] == "none"
    for col in ("power_mean_w", "energy_per_step_j", "images_per_joule", "energy_samples"):
        assert pd.isna(row[col])


def test_a_window_the_samples_do_not_reach_over_gives_no_reading(tmp_path):
    """A source whose samples start after the window opens (or stop before it closes) would need
    its edges extrapolated: the meter keeps no reading rather than an estimate."""
    _rapl_tree(tmp_path, {0: 0.0})
    source = choose_source(False, 0.01, rapl_dir=str(tmp_path))
    meter = EnergyMeter(source)
    meter.start()  # before the source's first sample
    meter.open()
    try:
        time.sleep(0.05)
        meter.stop()
    finally:
        meter.close()
    assert meter.reading is None
    assert gather_values(meter.reading, host=1.0)[0] == 0.0  # the row then says none


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_on_one_host_count_its_gpus_once(tmp_path, fake_smi):
    """Both ranks of a real two-process run see the same two (fake) GPUs: the row counts each once
    (150 W, not 300), through the gather every rank takes part in."""
    from launch import get_strategy

    out = tmp_path / "runs.csv"
    cmd = [*get_strategy("multiworker").launcher(2, timeout=240), sys.executable, "bench/run.py", "resnet18",
           "--backend", "jax", "--strategy", "multiworker", *TINY, "--steps", "12", "--energy-interval-ms", "10",
           "--output", str(out)]
    env = {**os.environ, **fake_smi, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    row = read_rows(out).iloc[0]
    assert row["workers"] == 2 and row["energy_source"] == "nvidia-smi"
    assert row["power_mean_w"] == pytest.approx(150.0, rel=1e-5)
