"""Text from the rows, made safe for the page it lands on.

Every cell of a results file is the user's text: a model name, a host name, an error message,
a file name. In report.md it must stay one cell of one table row and never become markup (HTML,
a link, emphasis, math); in report.html, `html.escape` does that job; on a plot it must not be
read as matplotlib math text. Control characters are shown, never obeyed: a carriage return or
a line separator would end a markdown table row, and a bidirectional override would reorder
what the reader sees.
"""
from __future__ import annotations

import re
import unicodedata

# Unicode format characters that reorder or hide text (bidi embeddings, overrides, isolates, marks)
_BIDI = {0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def _hidden(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ord(ch) in _BIDI


def visible(text: object) -> str:
    """`text` with each control, line-separating or bidi character written as `\\xNN` or
    `\\uNNNN`, and any lone surrogate (a file name that was not UTF-8) as `\\udcNN`."""
    s = str(text)
    if not any(_hidden(c) or "\ud800" <= c <= "\udfff" for c in s):
        return s
    return "".join((f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
                   if _hidden(c) or "\ud800" <= c <= "\udfff" else c for c in s)


# Markdown that plain text could start: inline markup anywhere ...
_MD_ALWAYS = {"\\": "\\\\", "`": "\\`", "*": "\\*", "~": "\\~", "|": "\\|", "$": "\\$", "#": "\\#",
              "&": "&amp;", "<": "&lt;", ">": "&gt;"}  # entities: every markdown flavour passes them through
_MD_INLINE = re.compile(r"[\\`*~|$#&<>]|\](?=[(\[])|(?<![^\W_])_|_(?![^\W_])")
# ... and, where the text starts a list item or a heading, block markup at its start (a
# nested list, a quote, a heading, a setext or thematic line); a table cell holds inline
# content only
_MD_LINE_START = re.compile(r"^(\s*)(?:([-+=])|(\d{1,9})([.)])(?=\s|$))")


def md_cell(text: object) -> str:
    """`text` as literal markdown inline text on one line: it renders as itself in a table
    cell and cannot open a tag, a link, emphasis, math or a new table row."""
    return _MD_INLINE.sub(lambda m: _MD_ALWAYS.get(m.group(0), "\\" + m.group(0)), visible(text))


def md_text(text: object) -> str:
    """md_cell, for text that starts a list item or a heading: it cannot open a block either."""
    return _MD_LINE_START.sub(lambda m: m.group(1) + ("\\" + m.group(2) if m.group(2) else
                                                      m.group(3) + "\\" + m.group(4)), md_cell(text), count=1)
