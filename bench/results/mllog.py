"""MLPerf's training log (`--mllog PATH`): the MLLOG lines of one accuracy-mode run, formatted by
MLPerf's own `mlperf_logging.mllog`, kept in memory as the run goes and appended to PATH in one
piece at its end, so the file holds whole runs only. What is written, the rules that cannot apply
to cnnbench's runs and how to run MLPerf's compliance checker: docs/measuring.md, "MLPerf log".

The run's moments are recorded when they happen (each line's `time_ms` is the wall clock then);
only the writing waits for the end."""
from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any, Mapping

from bench.config.parse import probe_write
from bench.errors import BenchInputError
from bench.results.store import OutputRefused, output_target, read_text, replace_locked

PREFIX = ":::MLLOG "  # every line of an MLLOG file starts with it (MLPerf's LOG_TEMPLATE)
RULESET = "4.0.0"  # the last MLPerf Training ruleset with the image-classification benchmark
# What cnnbench puts in the submission keys (docs/measuring.md says why): MLPerf's one
# image-classification benchmark; the open division (not ImageNet, not its reference model);
# the status for research and development systems; this project as the organisation
SUBMISSION = {"submission_benchmark": "resnet", "submission_org": "cnnbench", "submission_division": "open",
              "submission_status": "research"}
log = logging.getLogger(__name__)
MAX_MLLOG_BYTES = 256 * 2**20  # far beyond any run's log (a few KiB per epoch); more is not ours


class RunLog:
    """One run's MLLOG lines, in memory (every rank records them; the chief's are written).
    Disabled (no --mllog) it records nothing, so the runner calls it the same way either way."""

    def __init__(self, enabled: bool, root_dir: str | None = None):
        self.enabled = enabled
        self.lines: list[str] = []
        self.run_started = False
        self.epoch_num = 0  # the last epoch an event named: where run_stop says the run ended
        self._mllog = None
        if enabled:
            from mlperf_logging.mllog import mllog  # deferred: the package is needed only with --mllog

            run_log = self

            class _Keep(logging.Handler):
                def emit(self, record: logging.LogRecord) -> None:
                    # the package's own complaints (an unencodable value) are not MLLOG lines: the
                    # file keeps only those, and the complaint goes to the run's log
                    for line in record.getMessage().splitlines():
                        if line.startswith(PREFIX):
                            run_log.lines.append(line)
                        elif line.strip():
                            log.warning("mlperf_logging: %s", line)

            logger = logging.Logger("cnnbench.mllog")  # unregistered: nothing propagates to the console
            logger.setLevel(logging.INFO)
            logger.addHandler(_Keep())
            # each line's metadata names the runner's call site (`_log`'s stack_offset), not this module's
            self._mllog = mllog.MLLogger(logger=logger, root_dir=root_dir)

    def _log(self, kind: str, key: str, value: Any, metadata: dict[str, Any]) -> None:
        """Every line goes through here, called from one method of this class that the runner
        called: stack offset 3 makes the line's metadata name the runner's call site."""
        self.epoch_num = metadata.get("epoch_num", self.epoch_num)
        if self._mllog is not None:
            getattr(self._mllog, kind)(key, value, metadata=metadata or None, stack_offset=3)

    def event(self, key: str, value: Any = None, **metadata: Any) -> None:
        self._log("event", key, value, metadata)

    def start(self, key: str, value: Any = None, **metadata: Any) -> None:
        self._log("start", key, value, metadata)

    def end(self, key: str, value: Any = None, **metadata: Any) -> None:
        self._log("end", key, value, metadata)

    def init_start(self) -> None:
        """The first lines: MLPerf asks for cache_clear before init. cnnbench clears no cache (that
        needs root, and the data set is read into memory during init anyway): its value says so."""
        self._log("event", "cache_clear", False, {})
        self._log("start", "init_start", None, {})

    def run_start(self, keys: Mapping[str, Any]) -> None:
        """The configuration's keys (`run_keys`), the end of init and the start of the timed run."""
        for key, value in keys.items():
            self._log("event", key, value, {})
        self._log("end", "init_stop", None, {})
        self._log("start", "run_start", None, {})
        self.run_started = True

    def run_stop(self, success: bool) -> None:
        if self.run_started:
            self._log("end", "run_stop", None, {"status": "success" if success else "aborted",
                                                "epoch_num": self.epoch_num})


def run_keys(*, platform: str, global_batch: int, train_samples: int, eval_samples: int, seed: int,
             optimizer: str, base_lr: float, warmup_epochs: float, weight_decay: float,
             hyper: Mapping[str, float], run_id: str | None) -> dict[str, Any]:
    """The keys MLPerf's image-classification rules ask of a run that apply to cnnbench's, in
    their order. `base_lr` is the learning rate after any warmup; `hyper` the optimizer's own
    settings (momentum; Adam's betas and epsilon) as the optimizer holds them."""
    keys: dict[str, Any] = {**SUBMISSION, "submission_platform": platform, "cnnbench_run_id": run_id,
                            "seed": seed, "global_batch_size": global_batch, "gradient_accumulation_steps": 1,
                            "train_samples": train_samples, "eval_samples": eval_samples,
                            "opt_name": optimizer, "opt_base_learning_rate": base_lr,
                            "opt_learning_rate_warmup_epochs": warmup_epochs}
    if optimizer == "sgd":  # the names MLPerf's ResNet reference gives its SGD's settings
        keys.update(sgd_opt_base_learning_rate=base_lr, sgd_opt_momentum=hyper["momentum"],
                    sgd_opt_weight_decay=weight_decay)
    else:
        keys.update(opt_adam_beta_1=hyper["beta_1"], opt_adam_beta_2=hyper["beta_2"],
                    opt_adam_epsilon=hyper["epsilon"], opt_weight_decay=weight_decay)
    return keys


def split_runs(text: str) -> list[str]:
    """An MLLOG file's text as one text per run, in order: MLPerf's checker takes one run per file,
    and a file cnnbench appended several runs to starts each with its `cache_clear` line."""
    runs: list[list[str]] = []
    for line in text.splitlines(keepends=True):
        if not runs or line.startswith(PREFIX) and json.loads(line[len(PREFIX):])["key"] == "cache_clear":
            runs.append([])
        runs[-1].append(line)
    return ["".join(run) for run in runs]


def _read_log(path: Path) -> str:
    """An existing MLLOG file's text ('' if there is none). OutputRefused unless it is a regular
    UTF-8 file of a sane size whose every line starts with PREFIX (or an empty one)."""
    text = read_text(path, "an MLLOG file", MAX_MLLOG_BYTES)
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.startswith(PREFIX):
            raise OutputRefused(f"{path} exists and is not an MLLOG file (line {n} does not start with "
                                f"{PREFIX.strip()!r})")
    return text


def check_mllog(path: str) -> None:
    """BenchInputError now, before anything trains, unless `path` is a new file in a folder this
    process can write to, or an existing MLLOG file (which the run's lines are appended to)."""
    if importlib.util.find_spec("mlperf_logging") is None:
        raise BenchInputError(f"--mllog needs the mlperf-logging package (bash scripts/setup.sh installs it with "
                              f"the test tools; or pip install mlperf-logging). Received: mllog={path}")
    p = output_target(path)
    try:
        _read_log(p)
        probe_write(p.parent)
    except OutputRefused as e:
        raise BenchInputError(f"refusing mllog={path}: {e}") from None
    except OSError as e:
        raise BenchInputError(f"cannot write the MLLOG file mllog={path}: {e.strerror or e}") from None


def append_log(path: str, lines: list[str] | tuple[str, ...]) -> None:
    """Append a run's lines in one piece: the file afterwards holds its old lines and these, or,
    if anything fails (a full disk, a kill), is as it was (bench.results.store.replace_locked, as
    the results CSV is written). OutputRefused if the file has become one that is not an MLLOG file."""
    p = output_target(path)

    def new_text() -> bytes:
        old = _read_log(p)
        if old and not old.endswith("\n"):  # another writer's last line: ours start on lines of their own
            old += "\n"
        return (old + "".join(line + "\n" for line in lines)).encode("utf-8")

    replace_locked(p, new_text)
