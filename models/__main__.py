"""`python -m models`: list the zoo, show one model's layer table, or print the model table.

    python -m models                 # the markdown table of every model (as in docs/models.md)
    python -m models resnet18 [--image-size 224 --num-classes 1000 --width 1.0]
    python -m models --update-readme docs/models.md   # rewrite the table between its markers
"""
from __future__ import annotations

import argparse
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.backends import UNUSED_AT_IMPORT, hidden, quiet_import  # noqa: E402 - the CLI's own tools, framework-free
from bench.config.parse import OneLineParser, parse_value  # noqa: E402
from bench.config.schema import schema
from bench.errors import BenchInputError, input_error, one_line  # noqa: E402
from models import describe, list_models  # noqa: E402

BEGIN, END = "<!-- model-table:begin -->", "<!-- model-table:end -->"


def markdown_table(describe=describe) -> str:
    """Params and GFLOPs/image of every registered model at 32x32/100 and 224x224/1000 (`describe`:
    models.describe, or a cached one)."""
    lines = ["| model | params (32×32, 100 cl.) | GFLOPs/img (32×32) | params (224×224, 1000 cl.) | GFLOPs/img (224×224) |",
             "|---|---:|---:|---:|---:|"]
    for name in list_models():
        small = describe(name)
        large = describe(name, num_classes=1000, input_shape=(224, 224, 3))
        lines.append(f"| {name} | {small.params / 1e6:.2f} M | {small.gflops:.3f} | "
                     f"{large.params / 1e6:.2f} M | {large.gflops:.2f} |")
    return "\n".join(lines)


TABLE_BLOCK = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)


def readme_text(path: str) -> str:
    """The text of `path`, which must be UTF-8 and hold the markers: BenchInputError if not
    (framework-free, so a bad path is refused before Keras starts)."""
    try:
        text = open(path, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as e:
        raise BenchInputError(f"cannot read update_readme={path}: {getattr(e, 'strerror', None) or one_line(e)}") \
            from None
    if not TABLE_BLOCK.search(text):
        raise BenchInputError(f"{path} has no {BEGIN} ... {END} block. Received: update_readme={path}")
    return text


def update_readme(path: str) -> bool:
    """Rewrite the table between the markers in `path`; True if the file changed. BenchInputError
    if it cannot be read as UTF-8 text or lacks the markers."""
    text = readme_text(path)
    new = TABLE_BLOCK.sub(lambda _: f"{BEGIN}\n{markdown_table()}\n{END}", text)
    if new != text:
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
        except OSError as e:
            raise BenchInputError(f"cannot write update_readme={path}: {e.strerror or one_line(e)}") from None
    return new != text


def main(argv: list[str] | None = None) -> int:
    """Bad input (an unknown model, a value out of bounds, a README without the markers): one
    line, exit 2, before Keras starts where it can be found before."""
    p = OneLineParser(prog="python -m models", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?")
    p.add_argument("--image-size", default="32")
    p.add_argument("--num-classes", default="100")
    p.add_argument("--width", default="1.0")
    p.add_argument("--update-readme", metavar="PATH")
    opts = schema()  # the bounds bench/run.py takes
    try:
        args = p.parse_args(argv)
        image_size, num_classes, width = (parse_value(name, opts[name], getattr(args, name))
                                          for name in ("image_size", "num_classes", "width"))
        if args.model is not None and args.model not in list_models():
            raise BenchInputError(f"unknown model {args.model!r}; valid models: {', '.join(list_models())}")
        if args.update_readme:
            readme_text(args.update_readme)  # a file it cannot rewrite is refused before Keras starts
        with hidden(UNUSED_AT_IMPORT):  # what Keras imports for features a table never uses
            quiet_import("keras")  # its framework's start-up lines held back
        if args.update_readme:
            print("updated" if update_readme(args.update_readme) else "unchanged")
        elif args.model:
            try:
                d = describe(args.model, num_classes=num_classes, width=width,
                             input_shape=(image_size, image_size, 3))
            except ValueError as e:  # the input vanishes inside the model
                raise BenchInputError(f"{one_line(e)}. Received: image_size={image_size}") from None
            print(d.table())
        else:
            print(markdown_table())
    except BenchInputError as e:
        return input_error(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
