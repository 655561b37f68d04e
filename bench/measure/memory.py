"""How much memory a run will need, estimated from the model's layer walk before anything is
built (`estimate`, calibrated against the process's measured peak: docs/measurements), the
check of that estimate against what the machine has, and the reports' "fits" rule.

Units: per device on a GPU, per process on a CPU (a CPU process holds all its replicas)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from bench.config.key import _missing
from bench.data.sets import DATA_SETS
from bench.data.stream import pipeline_bytes
from bench.errors import PredictedOOM, Status

if TYPE_CHECKING:
    from bench.config.schema import RunConfig
    from models.describe import ModelDescription
from bench.measure.probes import GiB

VARIABLE_BYTES = 4  # Keras keeps variables in float32 under every dtype policy
COMPUTE_BYTES = {"fp32": 4, "mixed_bf16": 2, "mixed_fp16": 2}
INPUT_BYTES = 4     # the batch reaches the model as float32
# Optimizer slots per trainable weight: Adam's two moments; SGD's momentum buffer (none without momentum)
SLOTS = {"adam": 2, "sgd": 1}
# Inference keeps no activations for a backward pass: at the widest point the input and output
# of a layer, and a residual shortcut, are alive at once.
INFERENCE_LIVE_OUTPUTS = 3
@dataclass(frozen=True)
class HostTerms:
    """How a CPU process's peak resident memory (what the kernel's OOM killer weighs) follows
    from the layer walk, per backend and mode. Fixed, once per process: `base` (the interpreter,
    the framework's import and runtime, the data pipeline) and `per_layer` (the traced and
    compiled step grows with the layers). Per image: `act` times the layer outputs a training
    step keeps, `widest` times the widest layer output (the backward pass's gradient buffers,
    the layout copies oneDNN makes of a layer's input and output, the widest live tensors of a
    forward pass), `patches` times the largest convolution's patch matrix (XLA:CPU lowers a
    convolution to a matrix product over its input's kh x kw patches), `input` times the
    float32 image (the host copies of the batch: numpy's, the framework's, the device's).
    `weights` times the float32 weights, once per process, beyond the replicas' state: Keras'
    own variables beside JAX's arrays, and the update's temporaries (fitted to one weight-heavy
    point, alexnet at full width, per backend and mode). Fitted to the process peaks in docs/measurements/
    2026-12-02-cpu-memory-calibration.md and raised until every point's peak is within them; `act` for
    training raised again (and JAX's per_layer) for googlenet, whose steps hold more per image than
    their layer outputs: every calibrated point at most 0.93 of its estimate (0.92 since JAX was
    calibrated on every model, below). `lrn` times the
    outputs of local response normalisation layers, per image, in training: TensorFlow's LRN
    gradient holds many working copies of its input (vgg11_lrn and alexnet_lrn at batch 2048
    peaked at 1.35 and 1.14 of the estimate without it; 12 and 4 copies would just cover them;
    JAX is given the same). JAX's terms were raised once more when every registered model was
    calibrated on JAX (the smallest raise, by linear program, that keeps every JAX point within
    0.92): a compiled training step holds up to 5.5 MiB per layer (densenet201), so `per_layer`
    went 5.30 -> 6.30 MiB, and inference holds more per image than three layer outputs
    (googlenet at batch 64), so `widest` went 3.25 -> 13.40 and `per_layer` 0.60 -> 0.65 MiB."""
    base: int
    per_layer: int
    act: float
    widest: float
    patches: float
    input: float
    weights: float
    lrn: float = 0.0


MiB = 2**20


@dataclass(frozen=True)
class MemoryTerms:
    """One backend's memory terms in one mode, declared by the backend itself (its MEMORY table,
    bench.backends.base.Backend) and calibrated on its runs: `host`, a CPU process's peak
    (HostTerms), and `gpu_runtime_bytes`, what the framework allocates on a GPU for itself once
    steps run (compiled programs, kernels, scratch), per device: the allowance measured on the
    CPU before the process's own was counted (issue 21), not calibrated on a GPU."""
    host: HostTerms
    gpu_runtime_bytes: int


# Real data on a CPU, not calibrated (the calibration ran on synthetic data): the data set's
# arrays in RAM and the framework's copy of them (DataSet.resident_bytes: CIFAR-100's 60,000 32x32
# images; the digits are a few hundred kB), and per image, batches in flight (tf.data's prefetch,
# the host prefetch queue) beyond the synthetic batch's copies.
DATA_SET_COPIES = 2
REAL_DATA_BATCHES_IN_FLIGHT = 2


@dataclass(frozen=True)
class Estimate:
    """A process's (on a GPU: a device's) peak memory, from parameters, optimizer state and activations."""
    state_bytes: int              # one replica's weights, gradients and optimizer slots
    per_image_bytes: int          # what each image adds: activations, gradient buffers, copies of its input
    per_replica_batch: int
    replicas: int                 # replicas that share this memory (one per device on a GPU)
    runtime_bytes: int = 0        # fixed, once per process or device: the framework's own (and on a CPU the process's)

    @property
    def total_bytes(self) -> int:
        return self.runtime_bytes + self.replicas * (self.state_bytes + self.per_replica_batch * self.per_image_bytes)


def estimate(desc: "ModelDescription", cfg: "RunConfig", terms: MemoryTerms, replicas: int = 1, *,
             on_gpu: bool = False) -> Estimate:
    """The estimate for `cfg` (resolved) from the layer walk of describe(), with `terms`, cfg's
    backend's for cfg's mode (its MEMORY table). Training keeps every
    layer's output for the backward pass and holds gradients and optimizer slots; inference
    holds the weights and the few largest activations alive at once. On a CPU it is the whole
    process's peak (terms.host): start-up, the compiled step, the input's host copies included;
    on a GPU one device's."""
    weights = desc.params * VARIABLE_BYTES
    act = COMPUTE_BYTES[cfg.precision]
    outputs = [_numel(layer.output_shape) for layer in desc.layers]
    image = _numel(desc.input_shape) * INPUT_BYTES
    widest = max(outputs, default=0) * act
    patches = max((_conv_patches(layer) for layer in desc.layers), default=0) * act
    kept = sum(outputs) * act if cfg.mode == "train" else 0
    lrn = sum(_numel(layer.output_shape) for layer in desc.layers if layer.kind == "LocalResponseNorm") * act
    if cfg.mode == "inference":
        state = weights + (desc.params * act if act != VARIABLE_BYTES else 0)  # the cast copy under mixed policies
    else:
        trainable = desc.trainable_params
        slots = SLOTS[cfg.optimizer] if cfg.optimizer != "sgd" or cfg.momentum else 0
        state = weights + trainable * VARIABLE_BYTES * (1 + slots) + (desc.params * act if act != VARIABLE_BYTES else 0)
    if on_gpu:
        per_image = image + (kept if cfg.mode == "train" else INFERENCE_LIVE_OUTPUTS * widest)
        runtime = terms.gpu_runtime_bytes
    else:
        t = terms.host
        in_flight = REAL_DATA_BATCHES_IN_FLIGHT if cfg.data != "synthetic" else 0
        per_image = (t.act * kept + t.lrn * lrn + t.widest * widest + t.patches * patches
                     + (t.input + in_flight) * image)
        data_set = DATA_SETS[cfg.data]
        runtime = (t.base + t.per_layer * len(desc.layers) + t.weights * weights
                   + DATA_SET_COPIES * data_set.resident_bytes)
        if data_set.streaming:  # no arrays resident: the pipeline's buffers and workers instead
            runtime += pipeline_bytes(cfg.backend, int(cfg.batch_size), cfg.image_size, cfg.data_workers, cfg.data)
    est = Estimate(int(state), int(per_image), int(cfg.batch_size), int(replicas), int(runtime))
    if not (math.isfinite(est.total_bytes) and est.total_bytes > 0):
        raise AssertionError(f"memory estimate is not a positive finite number: {est}")  # a bug, never input
    return est


def _conv_patches(layer: Any) -> int:
    """A convolution's patch matrix per image (output pixels x kh x kw x input channels), from
    its multiply-adds over its output channels; 0 for other layers."""
    if layer.kind != "Conv2D" or not layer.output_shape:
        return 0
    return int(layer.flops) // (2 * int(layer.output_shape[-1]))


def _numel(shape: tuple) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def check(est: Estimate, available: int | None, *, processes: int = 1, where: str = "available RAM",
          floor: int = 0, held: int = 0) -> None:
    """PredictedOOM, one line with the numbers, if `processes` such footprints do not fit in
    `available` plus what this process already `held` (a CPU process's estimate counts its
    whole life, and the RAM it holds by now is no longer available) less the memory guard's
    `floor` (a run that reaches the floor is stopped anyway)."""
    if available is None:
        return
    need = est.total_bytes * processes
    if need > available + held - floor:
        share = f" ({processes} processes on this host)" if processes > 1 else ""
        plus = f" plus the {held / GiB:.2f} GiB this process holds" if held else ""
        less = f" less the memory guard's floor {floor / GiB:.2f} GiB" if floor else ""
        raise PredictedOOM(f"estimated memory {need / GiB:.2f} GiB{share} exceeds {where} {available / GiB:.2f} GiB"
                           f"{plus}{less} (batch {est.per_replica_batch} x {est.replicas} replica(s); --force runs it anyway)")


# ---- whether a probe fits ---------------------------------------------------------------------------
NO_FIT_STATUSES = (Status.OOM, Status.OOM_PREDICTED)


def fits(row: Mapping[str, Any], cap_gb: float | None) -> bool | None:
    """Whether a run fits: ok, and with its measured peak within the memory cap if there is
    one. None: it failed for another reason (which says nothing about memory)."""
    status = row.get("status")
    if status in NO_FIT_STATUSES:
        return False
    if status != Status.OK:
        return None
    cap = cap_gb
    peak = row.get("peak_mem_bytes")
    if cap is None or _missing(cap):
        return True
    if peak is None or _missing(peak):
        return None
    return float(peak) <= float(cap) * GiB
