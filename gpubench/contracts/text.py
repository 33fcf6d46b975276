"""User text made safe to print: control characters written as escapes.

A case name, an exception's message or a worker's stderr is the user's text (or a
model's, or a library's), and it reaches the terminal and report.md. A control
character there is an instruction to the terminal, not text: ``ESC[2J`` clears the
screen, ``ESC]0;...BEL`` sets the window title, a carriage return overwrites the line
it is on, a bidirectional override reorders what a reader sees. :func:`safe_text` writes
each as a visible escape (``\\x1b``, ``\\u202e``), so the message stays readable and
complete and does nothing; a newline and a tab are kept where the text has lines.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls (0x9b is a one-byte CSI), the
# bidirectional embeddings, overrides and isolates, and the line/paragraph separators
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_UNSAFE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def safe_text(text: str, *, lines: bool = True) -> str:
    """``text`` with every control character written as an escape; with ``lines``, a
    newline and a tab are kept (a traceback, a table), else they are escaped too (one
    line of a table, a progress line). An unpaired surrogate (an undecodable byte,
    escaped by Python) is written as ``\\udcxx``."""
    pattern = _UNSAFE if lines else _UNSAFE_LINE
    text = pattern.sub(_escape, str(text))
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
