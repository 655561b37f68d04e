"""The scaling model: a replica's compute step, the all-reduce of its gradients over the links
between devices, and how much of that all-reduce the backward pass can hide.

All-reduce of S bytes over n devices, each link a bandwidth B (bytes/s) and a per-message
latency α (the cost model of Thakur, Rabenseifner and Gropp, 2005, that Horovod and NCCL follow):

    ring            2(n-1)/n · S/B + 2(n-1)·α             n devices in one ring; across nodes the
                                                          link between nodes is the narrowest hop
    hierarchical    reduce-scatter within each node of g devices, (g-1)/g · S/B_intra + (g-1)·α_intra,
                    a ring all-reduce across the M nodes, 2(M-1)/M · S/B + 2(M-1)·α (the g shards of
                    S/g share the node's link, so S crosses it), then an all-gather within the node,
                    again (g-1)/g · S/B_intra + (g-1)·α_intra

A step is compute C plus the part of the all-reduce the backward pass (a fraction f of C) does not
hide: with no overlap C + T, with full overlap C + max(0, T - f·C). Every prediction is that band,
widened by what the inputs themselves are known to: the compute row's 95% CI, the link fit's
bounds (the same fit of the times' CI edges), and, for a message size the collective rows
measured around, the measured times themselves where the straight α-β line departs from them
(a strategy's all-reduce is not quite linear in size: TCP windows, chunking, copies). The
midpoint is the band's middle.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Sequence

import numpy as np

from bench.errors import BenchInputError

ALGORITHMS = ("ring", "hierarchical")
# the backward pass computes about twice the forward's FLOPs (activations' and weights' gradients):
# 2/3 of a training step, where no inference row measures the forward pass
BACKWARD_FRACTION = 2.0 / 3.0
MIN_FIT_SIZES = 3
BOUNDS = ("low", "mid", "high")  # a low link bound is the fast one: a step's low edge


@dataclasses.dataclass(frozen=True)
class Link:
    """A link as the all-reduce sees it: bandwidth in bytes/s and per-message latency in s, each
    with the bounds it is known to (a link given by hand has none), and where it came from."""
    bandwidth: float
    latency: float
    basis: str
    bandwidth_bounds: tuple[float, float] | None = None  # (slow, fast)
    latency_bounds: tuple[float, float] | None = None    # (fast, slow)
    gbps: float | None = None   # the link's rate in Gbit/s where known (given, or the shaped link measured)
    fit_rms: float | None = None  # a fitted link: the RMS relative residual of the fit
    # a fitted link: the ranks it was measured with, and its sizes with their times' CI edges
    measured: tuple[int, tuple[tuple[float, float, float], ...]] | None = None

    def measured_time(self, size: float) -> tuple[float, float] | None:
        """The all-reduce time of `size` bytes at the measured rank count, (CI low, CI high),
        interpolated log-log between the measured sizes around it; None outside them."""
        if self.measured is None:
            return None
        points = self.measured[1]
        for (s0, lo0, hi0), (s1, lo1, hi1) in zip(points, points[1:]):
            if s0 <= size <= s1:
                w = math.log(size / s0) / math.log(s1 / s0) if s1 > s0 else 0.0
                return (math.exp((1 - w) * math.log(lo0) + w * math.log(lo1)),
                        math.exp((1 - w) * math.log(hi0) + w * math.log(hi1)))
        return None

    def at(self, bound: str) -> tuple[float, float]:
        """(bandwidth, latency) at `bound`: low is the fast end (a step's low edge), high the slow."""
        if bound == "mid":
            return self.bandwidth, self.latency
        bw = self.bandwidth_bounds or (self.bandwidth, self.bandwidth)
        lat = self.latency_bounds or (self.latency, self.latency)
        return (bw[1], lat[0]) if bound == "low" else (bw[0], lat[1])

    @classmethod
    def given(cls, gbps: float, latency_us: float) -> "Link":
        return cls(gbps * 1e9 / 8, latency_us * 1e-6, f"{gbps:g} Gbit/s, {latency_us:g} us per message (given)",
                   gbps=gbps)


def _wls(sizes: Sequence[float], times: Sequence[float]) -> tuple[float, float]:
    """t = a + b·S by least squares on relative residuals (each size weighs alike: times span
    microseconds to seconds)."""
    s, t = np.asarray(sizes, float), np.asarray(times, float)
    a, b = np.linalg.lstsq(np.vstack([1 / t, s / t]).T, np.ones_like(t), rcond=None)[0]
    return float(a), float(b)


def fit_link(sizes: Sequence[float], times: Sequence[float], ranks: int, basis: str, *,
             lows: Sequence[float] | None = None, highs: Sequence[float] | None = None,
             gbps: float | None = None) -> Link:
    """The link (B, α) under a ring all-reduce of `ranks` ranks whose median times by message size
    are `times`: t = 2(n-1)α + 2(n-1)/n · S/B, fitted on relative residuals; the bounds from the
    same fit of the times' 95% CI edges. BenchInputError if the rows cannot make a fit."""
    pairs = sorted(zip(sizes, times, lows or times, highs or times))
    if len({p[0] for p in pairs}) < MIN_FIT_SIZES:
        raise BenchInputError(f"fitting a link's latency and bandwidth takes collective rows of at least "
                              f"{MIN_FIT_SIZES} message sizes; {basis} has {len({p[0] for p in pairs})}")
    if ranks < 2:
        raise BenchInputError(f"collective rows of {ranks} rank(s) describe no link ({basis})")
    if not all(math.isfinite(x) and x > 0 for p in pairs for x in p):
        raise BenchInputError(f"collective rows with a non-finite or non-positive size or time cannot be fitted ({basis})")
    s = [p[0] for p in pairs]
    steps, share = 2 * (ranks - 1), 2 * (ranks - 1) / ranks

    def link(times_: Sequence[float]) -> tuple[float, float]:
        a, b = _wls(s, times_)
        if b <= 0:
            raise BenchInputError(f"the collective rows' times do not grow with message size, so they give no "
                                  f"bandwidth ({basis})")
        return share / b, max(a, 0.0) / steps

    bw, lat = link([p[1] for p in pairs])
    bw_fast, lat_fast = link([p[2] for p in pairs])
    bw_slow, lat_slow = link([p[3] for p in pairs])
    fitted = [steps * lat + share * x / bw for x in s]
    rms = float(np.sqrt(np.mean([((f - p[1]) / p[1]) ** 2 for f, p in zip(fitted, pairs)])))
    text = (f"{basis}: fit over {len(s)} sizes ({int(s[0]):,} to {int(s[-1]):,} bytes): {bw / 1e9:.4g} GB/s, "
            f"{lat * 1e6:.4g} us per message, RMS error {100 * rms:.1f}%")
    return Link(bw, lat, text, (min(bw_slow, bw), max(bw_fast, bw)), (min(lat_fast, lat), max(lat_slow, lat)),
                gbps=gbps, fit_rms=rms, measured=(ranks, tuple((p[0], p[2], p[3]) for p in pairs)))


def _ring(size: float, n: int, link: Link, bound: str) -> float:
    if n <= 1:
        return 0.0
    bw, lat = link.at(bound)
    t = 2 * (n - 1) / n * size / bw + 2 * (n - 1) * lat
    measured = link.measured_time(size) if bound != "mid" else None
    if measured is None:
        return t
    # the measured time at the measured rank count m, carried to n ranks: its latency part (the fit's
    # α at this edge) by the steps' count, the rest by the bandwidth term's factor
    m = link.measured[0]
    at_m = measured[0] if bound == "low" else measured[1]
    carried = max(0.0, at_m - 2 * (m - 1) * lat) * ((n - 1) / n) / ((m - 1) / m) + 2 * (n - 1) * lat
    return min(t, carried) if bound == "low" else max(t, carried)


def _half(size: float, n: int, link: Link, bound: str) -> float:
    """A reduce-scatter or an all-gather: half a ring all-reduce."""
    if n <= 1:
        return 0.0
    bw, lat = link.at(bound)
    return (n - 1) / n * size / bw + (n - 1) * lat


@dataclasses.dataclass(frozen=True)
class Fabric:
    """The devices' links: `gpus_per_node` devices per node on `intra`, nodes joined by `inter`."""
    gpus_per_node: int
    inter: Link | None
    intra: Link | None

    def nodes(self, devices: int) -> int:
        return max(1, devices // self.gpus_per_node)

    def allreduce_s(self, size: float, devices: int, algorithm: str, bound: str = "mid") -> float:
        """Seconds to all-reduce `size` bytes over `devices` devices (filled node by node)."""
        g = self.gpus_per_node
        if devices <= 1:
            return 0.0
        if devices <= g:  # one node
            return _ring(size, devices, self._link("intra"), bound)
        if devices % g:
            raise BenchInputError(f"{devices} devices do not fill nodes of --gpus-per-node {g}")
        nodes = devices // g
        if algorithm == "ring":
            return _ring(size, devices, self._link("inter"), bound)
        intra = self._link("intra") if g > 1 else None
        local = 2 * _half(size, g, intra, bound) if intra is not None else 0.0
        return local + _ring(size, nodes, self._link("inter"), bound)

    def _link(self, which: str) -> Link:
        link = self.inter if which == "inter" else self.intra
        if link is None:  # validate() refuses such a prediction before this is reached
            raise BenchInputError(f"no link {'between nodes' if which == 'inter' else 'within a node'} was given")
        return link


@dataclasses.dataclass(frozen=True)
class Compute:
    """A replica's measured compute step (median, with its 95% CI) and the share of it that is the
    backward pass, each with where it came from."""
    step_s: float
    low_s: float
    high_s: float
    backward_fraction: float
    basis: str


@dataclasses.dataclass(frozen=True)
class Point:
    """One predicted configuration: N devices on M nodes."""
    devices: int
    nodes: int
    algorithm: str
    compute_s: float   # the middle of the compute row's CI: the band's middle at one device
    allreduce_s: float
    step_low_s: float
    step_s: float      # the band's midpoint
    step_high_s: float
    per_replica_batch: int

    @property
    def images_per_sec(self) -> float:
        return self.devices * self.per_replica_batch / self.step_s

    @property
    def efficiency(self) -> float:
        return self.compute_s / self.step_s

    @property
    def efficiency_low(self) -> float:
        return self.compute_s / self.step_high_s

    @property
    def efficiency_high(self) -> float:
        return min(1.0, self.compute_s / self.step_low_s) if self.step_low_s > 0 else 1.0

    @property
    def comm_share(self) -> float:
        return max(0.0, self.step_s - self.compute_s) / self.step_s


def predict_point(compute: Compute, fabric: Fabric, gradient_bytes: float, devices: int, algorithm: str,
                  per_replica_batch: int) -> Point:
    """The step band at `devices` devices: no overlap at the high edge, full overlap of the
    all-reduce with the backward pass at the low one, each edge with its inputs' own bounds; the
    midpoint is the band's middle. Efficiency is against the same band's middle at one device
    (the compute row's CI's middle), so one device is 1 exactly."""
    ar = {b: fabric.allreduce_s(gradient_bytes, devices, algorithm, b) for b in BOUNDS}
    low = compute.low_s + max(0.0, ar["low"] - compute.backward_fraction * compute.low_s)
    high = compute.high_s + ar["high"]
    return Point(devices, fabric.nodes(devices), algorithm, (compute.low_s + compute.high_s) / 2, ar["mid"], low,
                 (low + high) / 2, high, per_replica_batch)


def device_counts(max_devices: int | None, devices: Iterable[int] = (), nodes: Iterable[int] = (),
                  gpus_per_node: int = 1) -> list[int]:
    """The device counts to predict: powers of two up to `max_devices` (those above one node a whole
    number of nodes), the `devices` given, and `nodes` x `gpus_per_node`; BenchInputError for a
    count below 1 or one that does not fill whole nodes."""
    out: set[int] = set()
    for n in devices:
        if n < 1:
            raise BenchInputError(f"a device count must be at least 1. Received: devices={n}")
        if n > gpus_per_node and n % gpus_per_node:
            raise BenchInputError(f"{n} devices do not fill whole nodes of --gpus-per-node {gpus_per_node}. "
                                  f"Received: devices={n}")
        out.add(n)
    for m in nodes:
        if m < 1:
            raise BenchInputError(f"a node count must be at least 1. Received: nodes={m}")
        out.add(m * gpus_per_node)
    if max_devices is not None:
        n = 1
        while n <= max_devices:
            if n <= gpus_per_node or n % gpus_per_node == 0:
                out.add(n)
            n *= 2
    return sorted(out)


def largest_efficient(points: Sequence[Point], threshold: float = 0.9, edge: str = "mid") -> int | None:
    """The largest device count up to which every predicted efficiency (at `edge`: mid, or low for
    the band's pessimistic edge) stays at or above `threshold`; None if even the first is below."""
    best = None
    for p in sorted(points, key=lambda p: p.devices):
        eff = p.efficiency if edge == "mid" else p.efficiency_low
        if eff < threshold:
            break
        best = p.devices
    return best
