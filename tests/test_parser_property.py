"""Property: any value for any numeric run option is either accepted within its schema bounds
or refused with one BenchInputError line naming the option; never another exception."""
from __future__ import annotations

import math

from hypothesis import given, settings
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
    assert o.hi is None or value <= o.hi
