"""Build-time switches of the zoo's layers: a layer reads its switch when it is made, so a model
built inside a block keeps the block's choice for its whole life (models.batchnorm, models.maxpool)."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator


@contextlib.contextmanager
def set_while(state: dict[str, Any], key: str, value: Any) -> Iterator[None]:
    """`state[key]` is `value` inside the block; the value before comes back after it."""
    before, state[key] = state[key], value
    try:
        yield
    finally:
        state[key] = before
