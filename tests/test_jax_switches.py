"""The JAX step's switches (bench.config.schema.JAX_SWITCHES): the shifted max-pool gradient
equals autodiff's exactly, ties included, for every pool the zoo uses; the layers equal Keras'
own on its JAX backend (tests/dist/jax_switch_layers.py, a process of its own); `auto` resolves
through the one table of defaults; TensorFlow refuses a JAX-only value; the XLA options parse
on this CPU's jaxlib. The whole-model step (resnet18, switches on against off) is in
tests/test_backends.py."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO, run_cli

from bench.config.schema import JAX_SWITCHES, SWITCH_DEFAULTS, RunConfig
from bench.errors import ExitCode

jax = pytest.importorskip("jax")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
# (pool, stride, padding) of every max-pool in models/
ZOO_POOLS = [(2, 1, "same"), (3, 2, "same"), (2, 2, "same"), (3, 1, "same"), (3, 2, "valid"), (2, 2, "valid")]
INPUTS = {"random": lambda rng, s: rng.normal(size=s), "integer": lambda rng, s: rng.integers(0, 3, size=s),
          "constant": lambda rng, s: np.full(s, -1.25)}


def _keras_max_pool(x, pool, stride, padding):
    """What Keras' JAX max-pool is (keras.src.backend.jax.nn.max_pool): reduce_window of max."""
    from jax import lax

    return lax.reduce_window(x, -np.inf, lax.max, (1, pool, pool, 1), (1, stride, stride, 1), padding.upper())


@pytest.mark.parametrize("pool,stride,padding", ZOO_POOLS)
@pytest.mark.parametrize("kind", list(INPUTS))
@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (1, 7, 5, 2)])
def test_shifted_max_pool_gradient_is_autodiffs_ties_included(pool, stride, padding, kind, shape):
    import jax.numpy as jnp

    from models.maxpool import max_pool_shifted

    rng = np.random.default_rng(pool * 10 + stride)
    x = jnp.asarray(INPUTS[kind](rng, shape), jnp.float32)
    want_y = _keras_max_pool(x, pool, stride, padding)
    # integer cotangents: every sum of them is exact, so the gradients compare exactly
    g = jnp.asarray(rng.integers(-4, 5, size=want_y.shape), jnp.float32)
    y = max_pool_shifted(x, (pool, pool), (stride, stride), padding)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(want_y))
    want = jax.jit(jax.grad(lambda x: jnp.sum(_keras_max_pool(x, pool, stride, padding) * g)))(x)
    got = jax.jit(jax.grad(lambda x: jnp.sum(max_pool_shifted(x, (pool, pool), (stride, stride), padding) * g)))(x)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_tie_rule_first_maximum_in_row_major_order_takes_the_gradient():
    """The rule both paths follow, on a constant 4x4 map: each 2x2/2 window's gradient goes to its
    top-left element."""
    import jax.numpy as jnp

    from models.maxpool import max_pool_shifted

    x = jnp.ones((1, 4, 4, 1))
    g = jnp.arange(1.0, 5.0).reshape(1, 2, 2, 1)
    for pool in (_keras_max_pool, lambda x, p, s, pad: max_pool_shifted(x, (p, p), (s, s), pad)):
        dx = np.asarray(jax.grad(lambda x: jnp.sum(pool(x, 2, 2, "valid") * g))(x))[0, :, :, 0]
        np.testing.assert_array_equal(dx, [[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]])


def test_shifted_gradient_in_half_precision():
    import jax.numpy as jnp

    from models.maxpool import max_pool_shifted

    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.integers(0, 4, size=(2, 8, 8, 4)), jnp.bfloat16)
    g = jnp.asarray(rng.integers(-2, 3, size=(2, 8, 8, 4)), jnp.bfloat16)
    want = jax.grad(lambda x: jnp.sum(_keras_max_pool(x, 2, 1, "same") * g).astype(jnp.float32))(x)
    got = jax.grad(lambda x: jnp.sum(max_pool_shifted(x, (2, 2), (1, 1), "same") * g).astype(jnp.float32))(x)
    assert got.dtype == want.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


def test_layers_equal_keras_own_on_its_jax_backend():
    """Max-pool layers (every zoo pool, random/integer/constant inputs) and BatchNorm in training
    (output, gradients, moving statistics; float32 and bfloat16) against Keras' layers."""
    r = subprocess.run([sys.executable, str(REPO / "tests" / "dist" / "jax_switch_layers.py")], cwd=REPO,
                       env={**ENV, "KERAS_BACKEND": "jax"}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), (r.stdout + r.stderr)[-3000:]


def test_auto_resolves_through_the_device_kinds_defaults():
    for has_gpu, kind in ((False, "cpu"), (True, "gpu")):
        cfg = RunConfig(model="resnet18", backend="jax").resolved(has_gpu=has_gpu)
        assert {name: getattr(cfg, name) for name in JAX_SWITCHES} == SWITCH_DEFAULTS[kind]
        assert cfg.is_resolved
    explicit = RunConfig(model="resnet18", backend="jax", jax_maxpool="shifted").resolved(has_gpu=False)
    assert explicit.jax_maxpool == "shifted"
    tf_cfg = RunConfig(model="resnet18", backend="tensorflow").resolved(has_gpu=True)
    assert all(getattr(tf_cfg, name) == "plain" for name in JAX_SWITCHES)
    assert set(SWITCH_DEFAULTS) == {"cpu", "gpu"}
    for defaults in SWITCH_DEFAULTS.values():
        assert set(defaults) == set(JAX_SWITCHES) and all(defaults[n] in JAX_SWITCHES[n] for n in JAX_SWITCHES)


def test_gpu_defaults_stay_plain_until_measured():
    """No GPU has measured a switch yet: every GPU default is the plain path."""
    assert set(SWITCH_DEFAULTS["gpu"].values()) == {"plain"}


@pytest.mark.parametrize("flag,value", [("--jax-maxpool", "shifted"), ("--jax-batchnorm", "onepass"),
                                        ("--xla-autotune", "0"), ("--xla-command-buffer", "off")])
def test_tensorflow_refuses_a_jax_switch_on_one_line(tmp_path, flag, value):
    out = tmp_path / "runs.csv"
    r = run_cli("vgg11", "--backend", "tensorflow", flag, value, "--output", str(out))
    assert r.returncode == ExitCode.INPUT, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and value in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_a_bad_switch_value_is_refused_on_one_line(tmp_path):
    out = tmp_path / "runs.csv"
    r = run_cli("resnet18", "--backend", "jax", "--jax-maxpool", "fast", "--output", str(out))
    assert r.returncode == ExitCode.INPUT and "'fast'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_xla_options_parse_on_this_jaxlib():
    """The XLA flags of --xla-autotune and --xla-command-buffer are GPU options; the CPU jaxlib
    parses them (an unknown flag in XLA_FLAGS would abort the process) and runs unchanged."""
    from bench.backends.jax.backend import XLA_SWITCH_FLAGS

    flags = " ".join(f for values in XLA_SWITCH_FLAGS.values() for f in list(values.values())[-1:])
    r = subprocess.run([sys.executable, "-c", "import jax, jax.numpy as jnp; print(float(jnp.ones(3).sum()))"],
                       env={**ENV, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "3.0", r.stderr[-2000:]


def test_gpu_check_refuses_a_bad_switch_setting_on_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench.lab.gpu_check", "--switch-settings", "jax_maxpool=fast",
                        "--output", str(tmp_path / "gpu.csv")], cwd=REPO, env=ENV, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == ExitCode.INPUT and "'jax_maxpool=fast'" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "gpu.csv").exists()
