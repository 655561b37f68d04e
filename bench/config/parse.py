"""Command lines to a `RunConfig`: the argparse parser generated from the schema and the rules between fields (`RunConfig.to_argv` is the inverse). Checks that need a framework or the hardware (is the backend installed?) belong to the run layer: bench.runner.validate."""
from __future__ import annotations

import argparse
import dataclasses
import errno
import math
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import models
from bench.config.schema import (
    DEFAULT_STEPS,
    GROUPS,
    JAX_SWITCHES,
    MIN_LATENCY_STEPS,
    WEIGHTS_SUFFIX,
    Opt,
    RunConfig,
    schema,
)
from bench.data.sets import DATA_SETS
from bench.errors import BenchInputError, one_line
from launch import check_config, default_strategy
from launch.base import OPTION_ALIASES


# ---- parsing one value ----------------------------------------------------------------------
def _bounds_text(o: Opt) -> str:
    parts = []
    if o.lo is not None:
        parts.append(f"{'>' if o.lo_open else '>='} {o.lo:g}")
    if o.hi is not None:
        parts.append(f"{'<' if o.hi_open else '<='} {o.hi:g}")
    return " and ".join(parts)


def parse_value(name: str, o: Opt, text: str) -> Any:
    """One option's text -> its typed value; BenchInputError naming the value if it is bad."""
    if o.auto and text == "auto":
        return None
    if o.kind in ("int", "float"):
        try:
            value = int(text) if o.kind == "int" else float(text)
        except (TypeError, ValueError):
            article = "an integer" if o.kind == "int" else "a number"
            article += " or auto" if o.auto else ""
            raise BenchInputError(f"{name} must be {article}. Received: {name}={text!r}") from None
        if o.kind == "float" and not math.isfinite(value):
            raise BenchInputError(f"{name} must be a finite number. Received: {name}={text}")
        if (o.lo is not None and (value <= o.lo if o.lo_open else value < o.lo)) or (o.hi is not None and (value >= o.hi if o.hi_open else value > o.hi)):
            raise BenchInputError(f"{name} must be {_bounds_text(o)}. Received: {name}={text}")
        return value
    allowed = o.allowed()
    if allowed is not None and text not in allowed:
        raise BenchInputError(f"invalid {name} {text!r}; valid: {', '.join(allowed)}")
    return text


def split_command(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """A launcher's own options, and the command after its first `--` (empty without one)."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    split = argv.index("--")
    return argv[:split], argv[split + 1:]


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports errors on one line with exit code 2 (no usage block) and takes no
    abbreviations (`--out` must not silently mean `--output`)."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D401 - argparse API
        raise BenchInputError(message)


def _argparse_type(name: str, o: Opt) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return parse_value(name, o, text)
        except BenchInputError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    parse.__name__ = name  # argparse names the type in some messages
    return parse


def build_parser(*, options_only: bool = False) -> argparse.ArgumentParser:
    """The `bench/run.py` command line, one option per RunConfig field (a contract: tests, docs
    and sweeps rely on these names). `options_only`: no model, and no defaults, so that the
    namespace holds only the options given (`read_options`)."""

    p = OneLineParser(prog="bench/run.py", description="Train one CNN under one strategy and measure "
                      "images/sec, step time and accuracy; append one row to a CSV.")
    groups: dict[str, Any] = {"": p, **{g: p.add_argument_group(g) for g in GROUPS}}
    defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    for name, o in schema().items():
        if not o.cli:
            continue
        g = groups[o.group]
        help_text = argparse.SUPPRESS if o.hidden else (o.help or None)
        default = defaults[name] if o.cli_default == "<unset>" else o.cli_default
        if options_only:
            default = argparse.SUPPRESS
        if o.positional:
            if not options_only:  # optional here: --mode input names none, and validate says when one is needed
                g.add_argument(name, nargs="?", default=None, help=help_text)
            continue
        flag = "--" + name.replace("_", "-")
        if o.action == "toggle":
            g.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif o.action == "flag":
            g.add_argument(flag, *OPTION_ALIASES.get(name, ()), dest=name, action="store_true", help=help_text,
                           **({"default": default} if options_only else {}))
        else:
            allowed = o.allowed()
            g.add_argument(flag, dest=name, type=_argparse_type(name, o), default=default, help=help_text,
                           metavar=("{" + ",".join(allowed) + "}") if allowed else None)
    return p


def validate(cfg: RunConfig) -> None:
    """Rules between fields (the schema's, the model registry's and the strategy's). Raises
    BenchInputError naming the values."""

    if cfg.mode == "input":
        _check_input_mode(cfg)
    elif cfg.model is None:
        raise BenchInputError(f"a model is needed (bench/run.py MODEL ...; only --mode input runs without one); "
                              f"valid models: {', '.join(models.list_models())}")
    elif cfg.model not in models.list_models():
        raise BenchInputError(f"unknown model {cfg.model!r}; valid models: {', '.join(models.list_models())}")
    check_config(cfg)
    if cfg.target_accuracy is not None and not cfg.epochs:
        raise BenchInputError(f"--target-accuracy needs --epochs. Received: target_accuracy={cfg.target_accuracy}")
    data_set = DATA_SETS[cfg.data]
    if cfg.data_dir is not None and not data_set.takes_dir:
        takes = " or ".join(d.name for d in DATA_SETS.values() if d.takes_dir)
        raise BenchInputError(f"--data-dir needs --data {takes}. Received: data={cfg.data}, data_dir={cfg.data_dir}")
    if cfg.data_dir is not None and not Path(cfg.data_dir).exists():
        raise BenchInputError(f"data path does not exist: data_dir={cfg.data_dir}")
    if cfg.label_offset and cfg.data != "tfrecord":  # only TFRecords store their labels
        raise BenchInputError(f"--label-offset applies to --data tfrecord. Received: data={cfg.data}, "
                              f"label_offset={cfg.label_offset}")
    if not data_set.real and cfg.epochs:
        real = " or ".join(d.name for d in DATA_SETS.values() if d.real)
        raise BenchInputError(f"accuracy mode (--epochs) needs a real data set (--data {real}). "
                              f"Received: data={cfg.data}")
    if cfg.mllog is not None and not cfg.accuracy_mode:
        raise BenchInputError(f"--mllog writes MLPerf's time-to-train log, which needs accuracy mode (--epochs N). "
                              f"Received: mllog={cfg.mllog}, epochs={cfg.epochs}")
    out = Path(cfg.output)
    if out.exists() and out.is_dir():
        raise BenchInputError(f"--output is a directory: output={cfg.output}")
    if cfg.backend == "jax" and cfg.xla is False:
        raise BenchInputError("XLA is always on under --backend jax (jax.jit compiles every step). Received: --no-xla")
    for name in JAX_SWITCHES:
        value = getattr(cfg, name)
        if cfg.backend != "jax" and value not in (None, "plain"):
            raise BenchInputError(f"--{name.replace('_', '-')} {value} is a switch of the JAX step; --backend "
                                  f"{cfg.backend} takes only plain or auto. Received: {name}={value}")
    if cfg.init_weights is not None:
        _check_init_weights(cfg.init_weights)
    if cfg.save_weights is not None:
        _check_save_weights(cfg.save_weights)
    if cfg.mode in ("inference", "input"):
        if cfg.accuracy_mode:
            raise BenchInputError(f"--epochs trains to an accuracy; --mode inference only runs the forward pass. "
                                  f"Received: mode=inference, epochs={cfg.epochs}")
        if cfg.steps is not None and cfg.steps < MIN_LATENCY_STEPS:
            raise BenchInputError(f"--mode {cfg.mode} needs --steps >= {MIN_LATENCY_STEPS}, so that its p99 latency "
                                  f"is not just the slowest batch. Received: steps={cfg.steps}")
    if cfg.profile_steps is not None:
        _check_profile_steps(cfg)
    _check_target_ci(cfg)
    if cfg.lr_warmup_epochs is not None and not cfg.scale_lr:
        raise BenchInputError(f"--lr-warmup-epochs needs --scale-lr. Received: lr_warmup_epochs={cfg.lr_warmup_epochs}")


def _check_input_mode(cfg: RunConfig) -> None:
    """--mode input times the data pipeline alone: no model named, no option that needs one, and a
    data set that has a pipeline."""
    if cfg.model is not None:
        raise BenchInputError(f"--mode input times the input pipeline alone and builds no model: leave the model "
                              f"out. Received: model={cfg.model}")
    given = cfg.model_options_given()
    if given:
        name = given[0]
        raise BenchInputError(f"--{name.replace('_', '-')} needs a model, which --mode input does not build. "
                              f"Received: mode=input, {name}={getattr(cfg, name)}")
    if not DATA_SETS[cfg.data].real:
        real = " or ".join(d.name for d in DATA_SETS.values() if d.real)
        raise BenchInputError(f"--mode input times a data pipeline, and {cfg.data} has none (one batch made once "
                              f"and reused): use --data {real}. Received: mode=input, data={cfg.data}")


def probe_write(folder: Path) -> None:
    """OSError unless this process can write into `folder`, or create it: tried for real, in the
    nearest folder that exists (root passes every permission check, but not a read-only mount),
    and undone. Nothing is left behind."""
    folder = Path(folder)
    ancestor = folder
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{os.strerror(errno.ENOTDIR)}: {ancestor}")
    if ancestor == folder:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".cnnbench-", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    else:
        os.rmdir(tempfile.mkdtemp(dir=ancestor, prefix=".cnnbench-", suffix=".probe"))


def _check_init_weights(path: str) -> None:
    """--init-weights before anything starts: an existing regular file with Keras' weights suffix."""
    if not Path(path).is_file():
        raise BenchInputError(f"no such weights file: init_weights={path}")
    if not path.endswith(WEIGHTS_SUFFIX):
        raise BenchInputError(f"init_weights={path} is not a Keras {WEIGHTS_SUFFIX} file: its name must end in "
                              f"{WEIGHTS_SUFFIX}")


def _check_save_weights(path: str) -> None:
    """--save-weights before anything trains: a name ending in .weights.h5, in an existing folder
    this process can write to, and not a folder or other non-file itself. Writes nothing that stays."""
    p = Path(path)
    if p.is_dir():
        raise BenchInputError(f"--save-weights is a directory: save_weights={path}")
    if p.exists() and not p.is_file():
        raise BenchInputError(f"--save-weights is not a regular file: save_weights={path}")
    if not path.endswith(WEIGHTS_SUFFIX) or p.name == WEIGHTS_SUFFIX:
        raise BenchInputError(f"--save-weights must name a {WEIGHTS_SUFFIX} file (Keras writes weights only under that "
                              f"suffix). Received: save_weights={path}")
    if not p.parent.is_dir():
        what = "does not exist" if not p.parent.exists() else "is not a folder"
        raise BenchInputError(f"the folder of --save-weights {what}: save_weights={path}")
    try:
        probe_write(p.parent)
        if p.exists():
            with open(p, "ab"):  # opened for writing, nothing written
                pass
    except OSError as e:
        raise BenchInputError(f"cannot write --save-weights into {p.parent}: {e.strerror or one_line(e)}. "
                              f"Received: save_weights={path}") from None


def _check_target_ci(cfg: RunConfig) -> None:
    """--max-steps caps --target-ci's timed steps, from --steps (the fewest) up."""
    if cfg.max_steps is not None and cfg.target_ci is None:
        raise BenchInputError(f"--max-steps caps the steps --target-ci times: give --target-ci too. "
                              f"Received: max_steps={cfg.max_steps}")
    steps = cfg.steps or DEFAULT_STEPS[cfg.mode]
    if cfg.max_steps is not None and cfg.max_steps < steps:
        raise BenchInputError(f"--max-steps must be at least --steps (the fewest timed steps). "
                              f"Received: max_steps={cfg.max_steps}, steps={steps}")
    if cfg.target_ci is not None and cfg.accuracy_mode:
        raise BenchInputError(f"--target-ci times a throughput run; --epochs fixes its steps. "
                              f"Received: target_ci={cfg.target_ci}, epochs={cfg.epochs}")


def _check_profile_steps(cfg: RunConfig) -> None:
    """A-B within the timed steps, leaving at least one step to measure."""
    steps = cfg.steps or DEFAULT_STEPS[cfg.mode]
    m = re.fullmatch(r"(\d+)-(\d+)", cfg.profile_steps.strip())
    if m is None:
        raise BenchInputError(f"--profile-steps takes A-B, timed steps counted from 1. "
                              f"Received: profile_steps={cfg.profile_steps!r}")
    first, last = int(m.group(1)), int(m.group(2))
    if not 1 <= first <= last <= steps or last - first + 1 >= steps:
        raise BenchInputError(f"--profile-steps must lie within the {steps} timed steps and leave some unprofiled "
                              f"(1 <= A <= B <= {steps}, B - A + 1 < {steps}). Received: profile_steps={cfg.profile_steps}")
    if cfg.accuracy_mode:
        raise BenchInputError(f"--profile-steps profiles a throughput run, not --epochs. "
                              f"Received: profile_steps={cfg.profile_steps}, epochs={cfg.epochs}")


def read_argv(argv: Sequence[str]) -> RunConfig:
    """A command line's RunConfig, each value checked on its own (type, bounds, choices) but
    not the rules between fields (`validate`)."""
    args = build_parser().parse_args(list(argv))
    values = {name: getattr(args, name) for name, o in schema().items() if o.cli}
    if values["strategy"] is None:
        values["strategy"] = default_strategy()
    return RunConfig(**values)


def read_options(argv: Sequence[str]) -> dict[str, Any]:
    """The RunConfig fields a list of bench/run.py options sets (no model), each value checked
    on its own: a sweep's run options, read once for all its configurations."""
    return vars(build_parser(options_only=True).parse_args(list(argv)))


def parse_args(argv: Sequence[str] | None = None) -> RunConfig:
    """Parse and validate a command line. Raises BenchInputError naming the bad value."""
    cfg = read_argv(sys.argv[1:] if argv is None else argv)
    validate(cfg)
    return cfg
