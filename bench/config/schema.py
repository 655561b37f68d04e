"""The option schema: every run option's flag, help, type, bounds, key role and CSV type, in one table (`RunConfig`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bench.data.sets import DATA_SETS
from launch import DEFAULT_STRATEGY, strategy_names
from launch.base import BACKENDS, MAX_TIMEOUT_S
from models.common import FORMS  # the zoo imports no Keras until a model is built

DEFAULT_BACKEND = BACKENDS[0]
PRECISIONS = ("fp32", "mixed_bf16", "mixed_fp16")
OPTIMIZERS = ("adam", "sgd")
MODEL_MODES = ("train", "inference")  # the modes that build a model (each backend's memory terms are per one)
# input: the input pipeline alone, as the chosen backend feeds training from it (no model, no device compute)
MODES = (*MODEL_MODES, "input")
ALL_REDUCE = ("auto", "ring", "nccl", "hierarchical", "one-device")
HVD_COMPRESSION = ("none", "fp16")
# p99 of fewer batches is only the slowest one: inference runs time at least this many
MIN_LATENCY_STEPS = 100
DEFAULT_STEPS = {"train": 50, "inference": MIN_LATENCY_STEPS, "input": MIN_LATENCY_STEPS}
MAX_STEPS_FACTOR = 10  # --target-ci's default cap: 10 x --steps timed steps
# the automatic warmup's bounds (bench.measure.steady). At least 2 steps after the compile step: the
# first ones still grow the allocator and fill caches on every backend, and MSER-5's 5-step batches
# cannot see a transient that short. At most 50: a transient longer than that is drift, not warmup,
# and truncating it would hide it (the row then says mser5-max)
MIN_WARMUP, MAX_WARMUP = 2, 50
# the warmup where a fixed one is needed and --warmup-steps gives none: --epochs (the epoch fixes
# the steps) and --profile-steps (numbered within the timed steps, so their start must be known)
FIXED_WARMUP = 10
SOURCES = ("cli", "sweep", "pytest", "tf_cnn_benchmarks")  # the last: the peer's rows (bench/lab/peer.py)
# what a run does when its memory estimate exceeds the memory available: refuse on one line,
# exit 2, no row (a person at the command line); or keep a row with status oom_predicted (a sweep)
ON_PREDICTED_OOM = ("refuse", "row")
DEFAULT_OUTPUT = "results/runs.csv"
# the optimizers' default learning rates: in accuracy mode (--epochs) the course's recipe; in a
# throughput run a setting that stays finite for 60 steps on every registered model at 32 and
# 224 px (tests/test_models.py). At 224 px SGD at 0.1 diverged within 10 steps on vgg16, vgg19
# and alexnet, and at 0.01 within 60 on every VGG with BatchNorm
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.1}
THROUGHPUT_LR = {"adam": 1e-3, "sgd": 1e-3}
GROUPS = ("data and size", "what to measure", "model and training", "where it runs", "output")  # --help order
WEIGHTS_SUFFIX = ".weights.h5"  # the only name Keras 3 reads and writes as weights alone
MAX_SEED = 2**32 - 1  # numpy's legacy seeding, which Keras' set_random_seed uses, takes no more
MAX_REPEATS = 1000  # more fresh processes than anyone means: a typo, refused before any starts
# corrupt images a streaming run skips before it fails: a few bad files in a large set (ImageNet's
# train split holds CMYK JPEGs and a PNG named .JPEG that some decoders refuse) must not end a run
MAX_BAD_IMAGES = 100
# The JAX training step's switches (docs/backends.md): each field's values, "plain" first (the step
# as Keras and XLA lower it, the only value on TensorFlow). `auto` (the default) takes the value of
# SWITCH_DEFAULTS for the device kind the run resolves for.
JAX_SWITCHES: dict[str, tuple[str, ...]] = {
    "jax_maxpool": ("plain", "shifted"),          # models.maxpool: the gradient without select_and_scatter
    "jax_batchnorm": ("plain", "onepass"),        # models.batchnorm: one reduction in the backward
    "xla_autotune": ("plain", "0", "1", "2", "3", "4"),  # --xla_gpu_autotune_level (XLA's default: 4)
    "xla_command_buffer": ("plain", "off"),       # --xla_gpu_enable_command_buffer= (off: none)
}
# what --mode input leaves out: every option that shapes the model, its training or its
# communication (a run with no model cannot honour them, so one given is refused, not ignored)
MODEL_OPTIONS = ("width", "form", "precision", "xla", "optimizer", "lr", "momentum", "weight_decay", "init_weights",
                 "save_weights", "epochs", "target_accuracy", "gradient_sync", "scale_lr", "lr_warmup_epochs",
                 "summary", "profile_steps", "mllog", "all_reduce", "all_reduce_pack_mb", "hvd_compression",
                 "hvd_fusion_mb", "hvd_cycle_ms", "hvd_hierarchical", "hvd_autotune", "hvd_timeline", *JAX_SWITCHES)
# a switch is on by default only where it was measured faster there. CPU: bench/lab/jax_switches.py,
# docs/measurements/2026-12-03-cpu-jax-switches.md: the shifted max-pool 1.07-1.29x plain (95% CIs
# above 1) on resnet18 and vgg13; onepass BatchNorm not faster; the XLA options are GPU options. GPU:
# not yet measured (no GPU was lent since these switches exist), so every GPU default stays on the
# plain path until gpu_check's switch table says otherwise
SWITCH_DEFAULTS: dict[str, dict[str, str]] = {
    "cpu": {"jax_maxpool": "shifted", "jax_batchnorm": "plain", "xla_autotune": "plain", "xla_command_buffer": "plain"},
    "gpu": {"jax_maxpool": "plain", "jax_batchnorm": "plain", "xla_autotune": "plain", "xla_command_buffer": "plain"},
}


def _strategy_names() -> tuple[str, ...]:
    return tuple(strategy_names())


@dataclass(frozen=True)
class Opt:
    """How one RunConfig field appears on the command line, in the CSV and in the configuration key."""
    kind: str                               # int | float | bool | str: the parser and the CSV type
    help: str = ""
    group: str = "model and training"
    lo: float | None = None                 # bounds for numbers (inclusive unless lo_open)
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    auto: bool = False                      # the word `auto` on the command line stands for None
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None
    key: bool = False                       # identifies a configuration (sweep resume, report, --compare)
    column: bool = False                    # recorded in the CSV's configuration columns
    cli: bool = True                        # a bench/run.py option
    hidden: bool = False                    # set by sweeps and the pytest suite, not by people
    action: str = "value"                   # value | toggle (--x/--no-x) | flag (store_true)
    cli_default: Any = "<unset>"          # a parser default unlike the dataclass default (None: resolved later)
    positional: bool = False

    def allowed(self) -> tuple[str, ...] | None:
        return self.choices() if callable(self.choices) else self.choices


def opt(default: Any, kind: str, **meta: Any) -> Any:
    return field(default=default, metadata={"opt": Opt(kind, **meta)})


def _key(kind: str, **meta: Any) -> dict:  # a configuration column that identifies a run
    return {"kind": kind, "key": True, "column": True, **meta}


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one benchmark run. Recorded in full in the result row."""
    model: str | None = opt(None, **_key("str", positional=True, group="",
                                         help="model name (see `python -m models` for the list); none with "
                                         "--mode input"))
    strategy: str = opt(DEFAULT_STRATEGY, **_key("str", choices=_strategy_names, group="where it runs", cli_default=None,
                                         help="default: the strategy whose launcher started this process, else single"))
    backend: str = opt(DEFAULT_BACKEND, **_key("str", choices=BACKENDS, group="where it runs",
                                            help=f"the Keras backend (default {DEFAULT_BACKEND})"))
    data: str = opt(next(iter(DATA_SETS)), **_key("str", choices=tuple(DATA_SETS), group="data and size",
                                                  help="; ".join(f"{d.name}: {d.about}" for d in DATA_SETS.values())))
    batch_size: int | None = opt(None, **_key("int", lo=1, hi=2**20, group="data and size",
                                              help="per-replica batch size (default: 128 with a GPU, 32 on CPU-only machines)"))
    data_dir: str | None = opt(None, "str", group="data and size",
                               help="; ".join(f"{d.name}: {d.dir_help}" for d in DATA_SETS.values() if d.takes_dir))
    data_workers: int | None = opt(None, **_key("int", lo=0, hi=256, auto=True, group="data and size", help="input pipeline parallelism: tf.data's map/interleave threads on TensorFlow, decoding worker processes on JAX (auto: TensorFlow's AUTOTUNE; on JAX the CPU count)"))
    # recorded, not part of the key: which labels a TFRecord set trains on, not how fast it goes
    label_offset: int = opt(0, "int", column=True, lo=0, hi=1000, group="data and size",
                            help="tfrecord: subtract this from every stored label (1: ImageNet's 1..1000 as "
                            "0..999, as the TF models garden reads them; 0: 1001 classes with 0 for "
                            "background, as tf_cnn_benchmarks does)")
    max_bad_images: int = opt(MAX_BAD_IMAGES, "int", column=True, lo=0, hi=10**9, group="data and size",
                              help="imagefolder, tfrecord: corrupt images met during the run are skipped and "
                              "counted (the row's bad_images); one more than this fails the run, naming the file")
    num_classes: int | None = opt(None, **_key("int", lo=1, hi=100_000, group="data and size",
                                               help="default: the data set's (" + ", ".join(
                                                   f"{d.classes_about or d.classes} for {d.name}"
                                                   for d in DATA_SETS.values()) + ")"))
    image_size: int = opt(32, **_key("int", lo=1, hi=4096, group="data and size"))
    mode: str = opt("train", **_key("str", choices=MODES, group="what to measure",
                                    help="train: forward, backward and update; inference: the forward pass only "
                                    "(BatchNorm in inference mode), with per-batch latency percentiles; input: the "
                                    "input pipeline alone, no model (its ceiling in images/sec, per-batch latency "
                                    "percentiles)"))
    steps: int | None = opt(None, **_key("int", lo=1, hi=10**9, group="what to measure",
                                         help=f"timed steps (default {DEFAULT_STEPS['train']}; with --mode inference "
                                         f"or input {DEFAULT_STEPS['inference']}, the fewest they take)"))
    # recorded, not part of the key: how the run found its steady state, not what it measured, so a
    # row of the found warmup and one of a fixed count (every row before schema 9) compare
    warmup_steps: int | None = opt(None, "int", column=True, lo=0, hi=10**9, auto=True, group="what to measure",
                                   help="untimed steps after the first (compile) step; auto (the "
                                   f"default): found by MSER-5 among the timed steps, {MIN_WARMUP} to "
                                   f"{MAX_WARMUP} (with --epochs or --profile-steps: {FIXED_WARMUP})")
    target_ci: float | None = opt(None, "float", column=True, lo=0.0, hi=1.0, lo_open=True, hi_open=True,
                                  group="what to measure",
                                  help="time more steps than --steps until the 95%% CI half-width of the median "
                                  "step time is within this share of it (e.g. 0.02), up to --max-steps")
    max_steps: int | None = opt(None, "int", column=True, lo=1, hi=10**9, group="what to measure",
                                help=f"with --target-ci: the most timed steps (default {MAX_STEPS_FACTOR} x --steps)")
    # recorded, not part of the key: how finely energy was sampled, not what ran
    energy_interval_ms: float = opt(100.0, "float", column=True, lo=10.0, hi=10_000.0, group="what to measure",
                                    help="sample the power source (NVML, nvidia-smi, RAPL) every this many ms "
                                    "during the timed steps (docs/measuring.md)")
    profile_steps: str | None = opt(None, **_key("str", group="what to measure",
                                                 help="A-B: capture a profiler trace of timed steps A to B (from 1; "
                                                 "TensorFlow's or JAX's profiler, readable in TensorBoard) into "
                                                 "traces/RUN_ID/ beside --output; those steps are left out of the "
                                                 "statistics"))
    gradient_sync: bool = opt(True, **_key("bool", action="toggle", group="what to measure",
                                           help="--no-gradient-sync: a diagnostic run (tf_cnn_benchmarks' "
                                           "'independent'): every replica steps on its own gradients and nothing "
                                           "else changes; with a synced run of the same configuration it gives "
                                           "the exposed communication. Never a training result"))
    epochs: int = opt(0, **_key("int", lo=0, hi=10**6, group="what to measure",
                                help="accuracy mode: train this many epochs, evaluating on the test split after each"))
    target_accuracy: float | None = opt(None, **_key("float", lo=0.0, hi=1.0, lo_open=True, group="what to measure",
                                                     help="accuracy mode: stop when test top-1 reaches this; records time to accuracy"))
    width: float = opt(1.0, **_key("float", lo=0.0, hi=16.0, lo_open=True, help="channel width multiplier"))
    form: str = opt("auto", **_key("str", choices=FORMS,
                                   help="the model's CIFAR form (cifar) or the paper's (imagenet): its stem or "
                                   "head; auto: cifar below 64 px"))
    precision: str = opt("fp32", **_key("str", choices=PRECISIONS))
    xla: bool | None = opt(None, **_key("bool", action="toggle",
                                        help="compile the step with XLA (default: on with a GPU, off on CPU)"))
    optimizer: str = opt("adam", **_key("str", choices=OPTIMIZERS))
    lr: float | None = opt(None, **_key("float", lo=0.0, hi=1e6, lo_open=True,
                                        help="learning rate (default: 1e-3 for adam; for sgd 1e-3 in a throughput "
                                        "run, 0.1 with --epochs)"))
    momentum: float = opt(0.9, **_key("float", lo=0.0, hi=1.0))
    weight_decay: float = opt(0.0, **_key("float", lo=0.0, hi=1.0))
    augment: bool = opt(False, **_key("bool", action="toggle",
                                      help="pad-4 random crop and horizontal flip (real data sets: "
                                      + ", ".join(d.name for d in DATA_SETS.values() if d.real) + ")"))
    normalize: bool = opt(False, **_key("bool", action="toggle",
                                        help="per-channel mean/std normalisation after /255"))
    seed: int = opt(0, **_key("int", lo=0, hi=MAX_SEED))
    init_weights: str | None = opt(None, "str", column=True,
                                   help="start from this Keras .weights.h5 file instead of the seeded initialisation "
                                   "(works across backends; the row records its sha256)")
    save_weights: str | None = opt(None, "str", help="write the weights to this .weights.h5 file at the end")
    scale_lr: bool = opt(False, **_key("bool", action="toggle", group="where it runs",
                                       help="multiply the learning rate by the number of replicas, with warmup"))
    lr_warmup_epochs: float | None = opt(None, **_key("float", lo=0.0, hi=1e6, group="where it runs",
                                                      help="with --scale-lr: linear warmup length (default 5 epochs, "
                                                      "or 10%% of steps)"))
    # the JAX step's switches (JAX_SWITCHES, SWITCH_DEFAULTS): key columns, since they change what is measured
    jax_maxpool: str | None = opt(None, **_key("str", choices=JAX_SWITCHES["jax_maxpool"], auto=True,
                                               help="JAX: the max-pool's gradient: plain (autodiff, XLA's "
                                               "select_and_scatter) or shifted (shifted comparisons, the same "
                                               "gradient, ties included); auto (the default): the device's default"))
    jax_batchnorm: str | None = opt(None, **_key("str", choices=JAX_SWITCHES["jax_batchnorm"], auto=True,
                                                 help="JAX: BatchNorm's training gradient: plain (autodiff of Keras' "
                                                 "ops) or onepass (a custom VJP with one reduction); auto: the "
                                                 "device's default"))
    xla_autotune: str | None = opt(None, **_key("str", choices=JAX_SWITCHES["xla_autotune"], auto=True,
                                                help="JAX on a GPU: XLA's autotuning level (--xla_gpu_autotune_level; "
                                                "plain: XLA's own); auto: the device's default"))
    xla_command_buffer: str | None = opt(None, **_key("str", choices=JAX_SWITCHES["xla_command_buffer"], auto=True,
                                                      help="JAX on a GPU: off turns XLA's CUDA-graph command buffers "
                                                      "off (plain: XLA's own); auto: the device's default"))
    # environment, not configuration: recorded, but two runs differing only here measure the same thing
    threads: int = opt(0, "int", column=True, lo=0, hi=4096, group="where it runs",
                       help="intra-op threads (0: TensorFlow's default)")
    cpu_replicas: int = opt(1, **_key("int", lo=1, hi=1024, group="where it runs",
                                      help="on a CPU-only machine, split the CPU into N logical devices for a "
                                      "strategy that mirrors over local devices"))
    # communication knobs: each strategy says which it takes (launch.base.STRATEGY_OPTIONS)
    all_reduce: str = opt("auto", **_key("str", choices=ALL_REDUCE, group="where it runs",
                                         help="tf.distribute's all-reduce: cross-device ops (nccl, hierarchical, "
                                         "one-device) or collective communication (ring, nccl)"))
    hvd_compression: str = opt("none", **_key("str", choices=HVD_COMPRESSION, group="where it runs",
                                              help="hvd: compress gradients for the all-reduce (fp16)"))
    hvd_fusion_mb: float | None = opt(None, **_key("float", lo=0.0, hi=4096.0, group="where it runs",
                                                   help="hvd: tensor fusion buffer in MiB (0 disables fusion; "
                                                   "default: hvd's own)"))
    hvd_cycle_ms: float | None = opt(None, **_key("float", lo=0.0, hi=10_000.0, lo_open=True, group="where it runs",
                                                  help="hvd: cycle time in ms between fusion rounds "
                                                  "(default: hvd's own)"))
    hvd_hierarchical: bool = opt(False, **_key("bool", action="flag", group="where it runs",
                                               help="hvd: hierarchical all-reduce (within hosts, then across them); "
                                               "needs hvd built with MPI or NCCL"))
    hvd_autotune: bool = opt(False, **_key("bool", action="flag", group="where it runs",
                                           help="hvd: let hvd's autotuner search fusion and cycle settings "
                                           "during the run; its log is kept beside --output and the best "
                                           "settings it found go into the row"))
    hvd_timeline: bool = opt(False, **_key("bool", action="flag", group="what to measure",
                                           help="hvd: the chief writes hvd's timeline of the timed steps into "
                                           "traces/RUN_ID/ beside --output; the row gets each step's negotiation, "
                                           "all-reduce and queue time from it"))
    all_reduce_pack_mb: float | None = opt(None, **_key("float", lo=0.0, hi=4096.0, lo_open=True,
                                                        group="where it runs",
                                                        help="tf.distribute collectives: pack gradients into all-reduces of this "
                                                        "many MiB (CommunicationOptions.bytes_per_pack; default: "
                                                        "the strategy's own)"))
    collective_timeout: float = opt(300.0, "float", column=True, lo=0.0, hi=MAX_TIMEOUT_S, lo_open=True,
                                    group="where it runs",
                                    help="seconds a collective waits for a peer before the run fails "
                                    "(the strategy's collective timeout or stall shutdown)")
    output: str = opt(DEFAULT_OUTPUT, "str", group="output", help="CSV to append the result row to")
    mllog: str | None = opt(None, "str", group="output",
                            help="accuracy mode: append this run's MLPerf training log (MLLOG lines, through "
                            "mlperf-logging) to this file")
    force: bool = opt(False, "bool", action="flag", group="where it runs",
                      help="run even where the memory estimate exceeds the memory available")
    summary: bool = opt(False, "bool", action="flag", group="output", help="print the model's layer table and exit")
    progress: bool = opt(True, "bool", action="toggle", group="output", help="progress bars on stderr")
    source: str = opt("cli", "str", choices=SOURCES, hidden=True, group="output")
    run_id: str | None = opt(None, "str", hidden=True, group="output")  # set by sweeps to find the child's row
    on_predicted_oom: str = opt("refuse", "str", choices=ON_PREDICTED_OOM, hidden=True, group="output")  # sweeps: row
    # set by `sweep --find-max-batch` on its probes: what "fits" meant for this row
    # --repeats N: N fresh processes of one configuration (bench/run.py starts them; a sweep
    # interleaves them across its configurations). Each repeat's row records N, its index (from 0)
    # and its group (one id for the N repeats of one invocation and configuration); none of the
    # three is part of the configuration's key: repeats of one configuration share its key
    repeats: int = opt(1, "int", column=True, lo=1, hi=MAX_REPEATS, group="what to measure",
                       help="run the configuration N times, each in a fresh process (its own row), and "
                       "print the spread between the runs; the report then gives the median of the runs' "
                       "medians with a between-run 95%% CI")
    repeat_index: int | None = opt(None, "int", lo=0, hi=MAX_REPEATS - 1, hidden=True, group="output")
    repeat_group: str | None = opt(None, "str", hidden=True, group="output")
    find_max_batch: bool = opt(False, "bool", action="flag", hidden=True, column=True, group="output")
    memory_cap_gb: float | None = opt(None, "float", lo=0.0, hi=1e6, lo_open=True, hidden=True, column=True,
                                      group="output")

    def __post_init__(self) -> None:
        if self.lr is None:  # the optimizer's own default, for accuracy or for throughput
            object.__setattr__(self, "lr", _implied_lr(self))

    @property
    def accuracy_mode(self) -> bool:
        return self.epochs > 0

    def model_options_given(self) -> list[str]:
        """The options of MODEL_OPTIONS that differ from their defaults (what --mode input refuses)."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return [name for name in MODEL_OPTIONS
                if getattr(self, name) != (_implied_lr(self) if name == "lr" else defaults[name])]

    @property
    def trace_dir(self) -> str | None:
        """Where this run's traces and logs go (--profile-steps, --hvd-timeline,
        --hvd-autotune): traces/RUN_ID/ beside the output CSV; None when none is asked for."""
        if self.profile_steps is None and not self.hvd_timeline and not self.hvd_autotune:
            return None
        return str(Path(self.output).parent / "traces" / str(self.run_id))

    @property
    def fixed_warmup(self) -> int | None:
        """The untimed warmup steps, or None where the run finds its warmup (MSER-5): --warmup-steps,
        else FIXED_WARMUP where the steps are fixed in advance (--epochs) or numbered (--profile-steps)."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return FIXED_WARMUP if self.accuracy_mode or self.profile_steps is not None else None

    @property
    def profile_range(self) -> tuple[int, int] | None:
        """--profile-steps as (first, last) timed step, counted from 1."""
        if self.profile_steps is None:
            return None
        first, last = self.profile_steps.split("-")
        return int(first), int(last)

    @property
    def is_resolved(self) -> bool:
        """Whether the defaults that `resolved` fills are filled (what a run is built from)."""
        compiles = self.mode != "input"  # an input run compiles no step: its xla stays unset
        xla_ok = (self.xla is not None) if compiles else self.xla is None
        jax_ok = self.backend != "jax" or ((self.xla is True or not compiles) and self.threads == 0)
        capped = self.target_ci is None or self.max_steps is not None
        switches = tuple(getattr(self, name) for name in JAX_SWITCHES) if compiles else ()
        return None not in (self.batch_size, self.steps, self.num_classes, *switches) and xla_ok and jax_ok and capped

    def resolved(self, *, has_gpu: bool) -> "RunConfig":
        """Fill the defaults that depend on the hardware, the data set or the backend. On JAX,
        XLA is always on, and --threads does not apply (XLA:CPU sizes its own pool): 0. A run
        resolves its configuration once, before anything is built (bench.runner.validate.prepare);
        --mode input compiles no step, so its xla stays unset;
        resolving a resolved configuration changes nothing."""
        jax = self.backend == "jax"
        steps = self.steps or DEFAULT_STEPS[self.mode]
        return dataclasses.replace(
            self,
            batch_size=self.batch_size or (128 if has_gpu else 32),
            steps=steps,
            max_steps=self.max_steps or (MAX_STEPS_FACTOR * steps if self.target_ci is not None else None),
            num_classes=self.num_classes or DATA_SETS[self.data].default_classes(self.data_dir, self.label_offset),
            xla=None if self.mode == "input" else True if jax else (has_gpu if self.xla is None else self.xla),
            threads=0 if jax else self.threads,
            **self.resolved_switches(has_gpu=has_gpu),
        )

    def resolved_switches(self, *, has_gpu: bool) -> dict[str, str]:
        """The JAX step's switches with `auto` resolved: the device kind's SWITCH_DEFAULTS on JAX,
        plain on TensorFlow (which has no other value); an input run has no step: as given."""
        if self.mode == "input":
            return {name: getattr(self, name) for name in JAX_SWITCHES}
        defaults = SWITCH_DEFAULTS["gpu" if has_gpu else "cpu"]
        return {name: getattr(self, name) or (defaults[name] if self.backend == "jax" else "plain")
                for name in JAX_SWITCHES}

    def to_argv(self) -> list[str]:
        """The bench/run.py command line of this configuration, the inverse of
        bench.config.parse.parse_args: every option whose value differs from what the parser
        would fill in without it (the strategy always: its default depends on the launcher)."""
        argv: list[str] = []
        for f in dataclasses.fields(self):
            o: Opt = f.metadata["opt"]
            value = getattr(self, f.name)
            if not o.cli:
                continue
            if o.positional:
                argv += [] if value is None else [str(value)]  # --mode input names no model
                continue
            default = _implied_lr(self) if f.name == "lr" else f.default if o.cli_default == "<unset>" else o.cli_default
            if value is None or (value == default and type(value) is type(default) and f.name != "strategy"):
                continue
            flag = "--" + f.name.replace("_", "-")
            if o.action == "toggle":
                argv.append(flag if value else "--no-" + f.name.replace("_", "-"))
            elif o.action == "flag":
                argv += [flag] if value else []
            else:
                text = repr(value) if o.kind == "float" else str(value)
                # a value that starts with "-" would read as an option: join it to its flag
                argv += [f"{flag}={text}"] if text.startswith("-") else [flag, text]
        return argv


def _implied_lr(cfg: RunConfig) -> float:
    """The learning rate a configuration gets without --lr (see RunConfig.__post_init__)."""
    return (DEFAULT_LR if cfg.epochs > 0 else THROUGHPUT_LR)[cfg.optimizer]


def schema() -> dict[str, Opt]:
    """Every RunConfig field's metadata, in declaration order."""
    return {f.name: f.metadata["opt"] for f in dataclasses.fields(RunConfig)}


CONFIG_COLUMNS = [name for name, o in schema().items() if o.column]
KEY_FIELDS = [name for name, o in schema().items() if o.key]
