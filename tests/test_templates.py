"""Cluster templates parse, and the command line each runs is a valid bench/run.py invocation."""
import re
import shlex

import yaml
from helpers import REPO

from bench.config.parse import parse_args

TEMPLATES = REPO / "launch" / "templates"


def _bench_args(argv: list[str]) -> list[str]:
    """The arguments after bench/run.py in a launcher command line."""
    i = next(i for i, a in enumerate(argv) if a.endswith("bench/run.py"))
    return argv[i + 1:]


def _containers(doc: dict) -> list[dict]:
    specs = doc["spec"].get("mpiReplicaSpecs") or doc["spec"].get("tfReplicaSpecs")
    return [(role, spec, c) for role, spec in specs.items() for c in spec["template"]["spec"]["containers"]]


def _with_defaults(line: str, text: str) -> str:
    """A line of a batch script with each `$VAR` replaced by the default of its `VAR=${VAR:-default}` line."""
    defaults = dict(re.findall(r"^(\w+)=\$\{\1:-(.*)\}$", text, re.MULTILINE))
    return re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), line)


def test_slurm_script_runs_a_valid_multiworker_command_on_any_node():
    text = (TEMPLATES / "slurm.sbatch").read_text()
    directives = dict(l[len("#SBATCH --"):].split("=", 1) for l in text.splitlines() if l.startswith("#SBATCH --"))
    assert int(directives["nodes"]) * int(directives["ntasks-per-node"]) >= 2
    # the same script on CPU and GPU nodes: GPUs are asked for at submission, never written here
    assert not any(k.startswith("gpu") or k == "gres" for k in directives)
    assert not re.search(r"^[^#]*(CUDA_VISIBLE_DEVICES=|--gpus)", text, re.MULTILINE)
    joined = text.replace("\\\n", " ")
    line = next(l for l in joined.splitlines() if l.strip().startswith("srun"))
    argv = shlex.split(_with_defaults(line, text))
    assert "--kill-on-bad-exit=1" in argv  # a crashed rank ends the job, which then fails
    cfg = parse_args(_bench_args(argv))
    assert cfg.strategy == "multiworker" and cfg.model == "resnet50"
    assert cfg.output == "results/runs.csv" and "$OUTPUT" in line  # the CSV's path is the submitter's choice


def test_mpijob_runs_a_valid_horovod_command():
    doc = yaml.safe_load((TEMPLATES / "mpijob.yaml").read_text())
    assert doc["kind"] == "MPIJob"
    launcher = [c for role, _, c in _containers(doc) if role == "Launcher"][0]
    argv = launcher["command"] + launcher.get("args", [])
    assert argv[0] == "horovodrun"
    workers = doc["spec"]["mpiReplicaSpecs"]["Worker"]
    slots = doc["spec"]["slotsPerWorker"]
    assert int(argv[argv.index("-np") + 1]) == workers["replicas"] * slots
    gpus = workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert gpus == slots
    cfg = parse_args(_bench_args(argv))
    assert cfg.model == "resnet50" and cfg.batch_size == 128


def test_tfjob_runs_a_valid_multiworker_command():
    doc = yaml.safe_load((TEMPLATES / "tfjob.yaml").read_text())
    assert doc["kind"] == "TFJob"
    (role, spec, c), = _containers(doc)
    assert role == "Worker" and spec["replicas"] >= 2
    cfg = parse_args(_bench_args(c["command"] + c["args"]))
    assert cfg.strategy == "multiworker"
