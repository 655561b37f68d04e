"""Property: any value for any numeric run option is either accepted within its schema bounds
or refused with one BenchInputError line naming the option; never another exception."""
from __future__ import annotations

import math

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bench.config.parse import parse_args
from bench.config.schema import RunConfig, schema
from bench.errors import BenchInputError, one_line

NUMERIC = sorted(name for name, o in schema().items() if o.cli and o.kind in ("int", "float") and not o.hidden)

texts = st.one_of(
    st.integers(min_value=-10**30, max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "-nan", "inf", "-inf", "Infinity", "1e309", "-0", "0x10", "1_000", " 3 ", "", "1e-320",
                     "٣", "½", "3.0", "1e3", "NaN", "+5"]),
    st.text(max_size=12),
)


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(NUMERIC), text=texts)
def test_any_numeric_value_is_accepted_in_bounds_or_refused_on_one_line(name, text):
    if text.startswith("-") and not text[1:2].isdigit() and text not in ("-inf", "-nan"):
        text = " " + text  # argparse would read it as an option: that is another error
    extra = ["--strategy", "mirrored"] if name == "cpu_replicas" else []
    try:
        cfg = parse_args(["vgg11", *extra, "--" + name.replace("_", "-"), text])
    except BenchInputError as e:
        msg = one_line(e)
        assert msg and "\n" not in msg
        assert name in msg or name.replace("_", "-") in msg, msg
        return
    value, o = getattr(cfg, name), schema()[name]
    assert isinstance(cfg, RunConfig)
    assert isinstance(value, int if o.kind == "int" else float)
    assert math.isfinite(value)
    assert o.lo is None or (value > o.lo if o.lo_open else value >= o.lo)
    assert o.hi is None or (value < o.hi if o.hi_open else value <= o.hi)


# ---- to_argv: the schema's inverse of the parser ---------------------------------------------
def _field_values(name: str, o):
    """Every value the parser can produce for one RunConfig field."""
    if name == "model":
        import models
        return st.sampled_from(models.list_models())
    allowed = o.allowed()
    if allowed is not None:
        return st.sampled_from(allowed)
    if o.kind == "bool":
        return st.booleans() | st.none() if o.action == "toggle" and name == "xla" else st.booleans()
    if o.kind == "int":
        ints = st.integers(min_value=int(o.lo) + (1 if o.lo_open else 0), max_value=int(o.hi) - (1 if o.hi_open else 0))
        return ints | st.none() if o.auto else ints
    if o.kind == "float":
        return st.floats(min_value=o.lo, max_value=o.hi, exclude_min=o.lo_open, exclude_max=o.hi_open, allow_nan=False)
    # any text argparse can carry: no NUL, no lone surrogates, and not "--", which argparse drops
    # from an option's value in every spelling
    return st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                   max_size=12).filter(lambda t: t != "--")


def _configs():
    fields = {name: _field_values(name, o) for name, o in schema().items() if o.cli}
    # a field left at its default, or set: both must survive the round trip
    return st.fixed_dictionaries({}, optional=fields).map(lambda values: RunConfig(**{"model": "vgg11", **values}))


@settings(max_examples=300, deadline=None)
@given(cfg=_configs())
def test_to_argv_reads_back_as_the_same_configuration(cfg):
    """Every field, at any value the schema allows (the rules between fields aside), survives
    RunConfig.to_argv and the parser: the sweep's command lines are exactly its configurations."""
    from bench.config.parse import read_argv

    assert read_argv(cfg.to_argv()) == cfg


@settings(max_examples=100, deadline=None)
@given(cfg=_configs())
def test_a_valid_configuration_parses_back_from_its_argv_resolved_or_not(cfg):
    from bench.config.parse import validate

    try:
        validate(cfg)
    except BenchInputError:
        assume(False)  # the rules between fields refuse it: parse_args would too
    assert parse_args(cfg.to_argv()) == cfg
    resolved = cfg.resolved(has_gpu=False)
    assert parse_args(resolved.to_argv()) == resolved
