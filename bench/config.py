"""Command line -> RunConfig. Parsing and validation import no TensorFlow, so --help is instant."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import BenchInputError

STRATEGIES = ("single", "mirrored", "multiworker", "horovod")
DATASETS = ("synthetic", "cifar100", "digits")
PRECISIONS = ("fp32", "mixed_bf16", "mixed_fp16")
OPTIMIZERS = ("adam", "sgd")
DEFAULT_OUTPUT = "results/runs.csv"
# Natural class count per data set (synthetic follows CIFAR-100, the course's recipe).
NATURAL_CLASSES = {"synthetic": 100, "cifar100": 100, "digits": 10}


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one benchmark run. Recorded in full in the result row."""
    model: str
    batch_size: int | None = None          # per replica; None -> 128 on GPU, 32 on CPU
    data: str = "synthetic"
    data_dir: str | None = None
    num_classes: int | None = None         # None -> the data set's own
    image_size: int = 32
    steps: int = 50
    warmup_steps: int = 10
    epochs: int = 0                        # > 0 switches to accuracy mode
    target_accuracy: float | None = None
    width: float = 1.0
    precision: str = "fp32"
    xla: bool | None = None                # None -> on with a GPU, off on CPU (as Keras' "auto")
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    augment: bool = False
    normalize: bool = False
    seed: int = 0
    strategy: str = "single"
    cpu_replicas: int = 1
    scale_lr: bool = False
    lr_warmup_epochs: float | None = None   # with scale_lr; None -> automatic
    threads: int = 0                       # 0 -> TensorFlow's default
    collective_timeout: float = 300.0      # seconds a collective may wait for a peer
    output: str = DEFAULT_OUTPUT
    summary: bool = False
    progress: bool = True
    source: str = "cli"
    run_id: str | None = None              # set by sweeps to find the child's row

    @property
    def accuracy_mode(self) -> bool:
        return self.epochs > 0

    def resolved(self, *, has_gpu: bool) -> "RunConfig":
        """Fill the defaults that depend on the hardware or the data set."""
        return dataclasses.replace(
            self,
            batch_size=self.batch_size or (128 if has_gpu else 32),
            num_classes=self.num_classes or NATURAL_CLASSES[self.data],
            xla=has_gpu if self.xla is None else self.xla,
        )


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports errors on one line with exit code 2 (no usage block)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise BenchInputError(message)


def _int_at_least(name: str, lo: int):
    """An argparse type: an integer >= lo, with an error naming the value."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer. Received: {name}={text!r}")
        if value < lo:
            raise argparse.ArgumentTypeError(f"{name} must be >= {lo}. Received: {name}={value}")
        return value
    return parse


def _positive_int(name: str):
    return _int_at_least(name, 1)


def _nonneg_int(name: str):
    return _int_at_least(name, 0)


def _float_in(name: str, lo: float, hi: float | None = None, lo_open: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number. Received: {name}={text!r}")
        bad = value != value or (value <= lo if lo_open else value < lo) or (hi is not None and value > hi)
        if bad:
            rng = f"{'>' if lo_open else '>='} {lo:g}" + (f" and <= {hi:g}" if hi is not None else "")
            raise argparse.ArgumentTypeError(f"{name} must be {rng}. Received: {name}={text}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The `bench/run.py` command line (a contract: tests, docs and sweeps rely on these names)."""
    p = OneLineParser(prog="bench/run.py", description="Train one CNN under one strategy and measure "
                "images/sec, step time and accuracy; append one row to a CSV.")
    p.add_argument("model", help="model name (see `python -m models` for the list)")
    g = p.add_argument_group("data and size")
    g.add_argument("--batch-size", type=_positive_int("batch_size"),
                   help="per-replica batch size (default: 128 with a GPU, 32 on CPU-only machines)")
    g.add_argument("--data", choices=DATASETS, default="synthetic")
    g.add_argument("--data-dir", help="cifar100: a cifar-100-python .tar.gz, its extracted folder, "
                   "or a folder holding either (default: Keras' cache, then download)")
    g.add_argument("--num-classes", type=_positive_int("num_classes"),
                   help="default: the data set's (100 for synthetic and cifar100, 10 for digits)")
    g.add_argument("--image-size", type=_positive_int("image_size"), default=32)
    g = p.add_argument_group("what to measure")
    g.add_argument("--steps", type=_positive_int("steps"), default=50, help="timed steps")
    g.add_argument("--warmup-steps", type=_nonneg_int("warmup_steps"), default=10,
                   help="untimed steps after the first (compile) step")
    g.add_argument("--epochs", type=_nonneg_int("epochs"), default=0,
                   help="accuracy mode: train this many epochs, evaluating on the test split after each")
    g.add_argument("--target-accuracy", type=_float_in("target_accuracy", 0.0, 1.0, lo_open=True),
                   help="accuracy mode: stop when test top-1 reaches this; records time to accuracy")
    g = p.add_argument_group("model and training")
    g.add_argument("--width", type=_float_in("width", 0.0, lo_open=True), default=1.0,
                   help="channel width multiplier")
    g.add_argument("--precision", choices=PRECISIONS, default="fp32")
    g.add_argument("--xla", action=argparse.BooleanOptionalAction, default=None,
                   help="compile the step with XLA (default: on with a GPU, off on CPU)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    g.add_argument("--lr", type=_float_in("lr", 0.0, lo_open=True), default=None,
                   help="learning rate (default: 1e-3 for adam, 0.1 for sgd)")
    g.add_argument("--momentum", type=_float_in("momentum", 0.0, 1.0), default=0.9)
    g.add_argument("--weight-decay", type=_float_in("weight_decay", 0.0), default=0.0)
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=False,
                   help="pad-4 random crop and horizontal flip (cifar100, digits)")
    g.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=False,
                   help="per-channel mean/std normalisation after /255")
    g.add_argument("--seed", type=_nonneg_int("seed"), default=0)
    g = p.add_argument_group("where it runs")
    g.add_argument("--strategy", choices=STRATEGIES, default=None,
                   help="default: horovod under horovodrun, else single")
    g.add_argument("--cpu-replicas", type=_positive_int("cpu_replicas"), default=1,
                   help="mirrored on a CPU-only machine: split the CPU into N logical devices")
    g.add_argument("--scale-lr", action=argparse.BooleanOptionalAction, default=False,
                   help="multiply the learning rate by the number of replicas, with warmup")
    g.add_argument("--lr-warmup-epochs", type=_float_in("lr_warmup_epochs", 0.0), default=None,
                   help="with --scale-lr: linear warmup length (default 5 epochs, or 10%% of steps)")
    g.add_argument("--threads", type=_nonneg_int("threads"), default=0,
                   help="intra-op threads (0: TensorFlow's default)")
    g.add_argument("--collective-timeout", type=_float_in("collective_timeout", 0.0, lo_open=True),
                   default=300.0, help="seconds a collective waits for a peer before the run fails "
                   "(MultiWorkerMirroredStrategy timeout; Horovod stall shutdown)")
    g = p.add_argument_group("output")
    g.add_argument("--output", default=DEFAULT_OUTPUT, help="CSV to append the result row to")
    g.add_argument("--summary", action="store_true", help="print the model's layer table and exit")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="progress bars on stderr")
    # set by bench/sweep.py and the pytest suite, not by people
    g.add_argument("--run-id", help=argparse.SUPPRESS)
    g.add_argument("--source", choices=("cli", "sweep", "pytest"), default="cli", help=argparse.SUPPRESS)
    return p


def under_horovodrun() -> bool:
    """horovodrun (Gloo or MPI) sets these in every rank's environment."""
    if "HOROVOD_RANK" in os.environ:  # Gloo launcher
        return True
    # MPI launcher: an MPI rank whose environment horovodrun filled with HOROVOD_* settings
    return "OMPI_COMM_WORLD_RANK" in os.environ and any(k.startswith("HOROVOD_") for k in os.environ)


def parse_args(argv: Sequence[str] | None = None) -> RunConfig:
    """Parse and validate a command line. Raises BenchInputError naming the bad value."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    import models  # cheap: the registry imports no Keras

    if args.model not in models.list_models():
        raise BenchInputError(f"unknown model {args.model!r}; valid models: {', '.join(models.list_models())}")
    strategy = args.strategy or ("horovod" if under_horovodrun() else "single")
    if args.target_accuracy is not None and not args.epochs:
        raise BenchInputError(f"--target-accuracy needs --epochs. Received: target_accuracy={args.target_accuracy}")
    if args.cpu_replicas > 1 and strategy != "mirrored":
        raise BenchInputError(f"--cpu-replicas applies to --strategy mirrored. Received: strategy={strategy}")
    if args.data == "synthetic" and args.data_dir:
        raise BenchInputError(f"--data-dir needs --data cifar100. Received: data=synthetic, data_dir={args.data_dir}")
    if args.data_dir is not None and not Path(args.data_dir).exists():
        raise BenchInputError(f"data path does not exist: data_dir={args.data_dir}")
    if args.data == "synthetic" and args.epochs:
        raise BenchInputError("accuracy mode (--epochs) needs a real data set (--data digits or cifar100). "
                              "Received: data=synthetic")
    out = Path(args.output)
    if out.exists() and out.is_dir():
        raise BenchInputError(f"--output is a directory: output={args.output}")
    if args.lr_warmup_epochs is not None and not args.scale_lr:
        raise BenchInputError(f"--lr-warmup-epochs needs --scale-lr. Received: lr_warmup_epochs={args.lr_warmup_epochs}")
    lr = args.lr if args.lr is not None else (1e-3 if args.optimizer == "adam" else 0.1)
    return RunConfig(
        model=args.model, batch_size=args.batch_size, data=args.data, data_dir=args.data_dir,
        num_classes=args.num_classes, image_size=args.image_size, steps=args.steps,
        warmup_steps=args.warmup_steps, epochs=args.epochs, target_accuracy=args.target_accuracy,
        width=args.width, precision=args.precision, xla=args.xla, optimizer=args.optimizer, lr=lr,
        momentum=args.momentum, weight_decay=args.weight_decay, augment=args.augment,
        normalize=args.normalize, seed=args.seed, strategy=strategy, cpu_replicas=args.cpu_replicas,
        scale_lr=args.scale_lr, lr_warmup_epochs=args.lr_warmup_epochs,
        threads=args.threads, collective_timeout=args.collective_timeout, output=args.output, summary=args.summary, progress=args.progress,
        source=args.source, run_id=args.run_id)
