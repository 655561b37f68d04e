"""`python -m models`: list the zoo, show one model's layer table, or print the README table.

    python -m models                 # the markdown table of every model (as in the README)
    python -m models resnet18 [--image-size 224 --num-classes 1000 --width 1.0]
    python -m models --update-readme README.md
"""
from __future__ import annotations

import argparse
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BEGIN, END = "<!-- model-table:begin -->", "<!-- model-table:end -->"


def markdown_table(describe=None) -> str:
    """Params and GFLOPs/image of every registered model at 32x32/100 and 224x224/1000."""
    from models import list_models

    if describe is None:
        from models import describe
    lines = ["| model | params (32×32, 100 cl.) | GFLOPs/img (32×32) | params (224×224, 1000 cl.) | GFLOPs/img (224×224) |",
             "|---|---:|---:|---:|---:|"]
    for name in list_models():
        small = describe(name)
        large = describe(name, num_classes=1000, input_shape=(224, 224, 3))
        lines.append(f"| {name} | {small.params / 1e6:.2f} M | {small.gflops:.3f} | "
                     f"{large.params / 1e6:.2f} M | {large.gflops:.2f} |")
    return "\n".join(lines)


def update_readme(path: str) -> bool:
    """Rewrite the table between the markers in `path`; True if the file changed."""
    text = open(path, encoding="utf-8").read()
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"error: {path} has no {BEGIN} ... {END} block")
    new = pattern.sub(lambda _: f"{BEGIN}\n{markdown_table()}\n{END}", text)
    if new != text:
        open(path, "w", encoding="utf-8").write(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models", description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=100)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--update-readme", metavar="PATH")
    args = p.parse_args(argv)
    if args.update_readme:
        print("updated" if update_readme(args.update_readme) else "unchanged")
    elif args.model:
        from models import describe
        try:
            d = describe(args.model, num_classes=args.num_classes, width=args.width,
                         input_shape=(args.image_size, args.image_size, 3))
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(d.table())
    else:
        print(markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
