"""What the command-line tools print: commands for users to paste (Hydra- and shell-quoted), one-line errors."""

from __future__ import annotations

import re
import shlex
import sys
from typing import Any, NoReturn

_PLAIN = re.compile(r"[A-Za-z_/][\w\-/.:+@]*")  # a value Hydra reads back unquoted as this same string
_KEYWORDS = {"true", "false", "null", "nan", "inf"}


def hydra_value(value: Any) -> str:
    """`value` as the right-hand side of a Hydra override that parses back to the same string."""
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _KEYWORDS:
        return text
    quote = '"' if '"' not in text else "'"
    # inside quotes Hydra reads \" (\') as the quote, and backslashes as themselves except a run before a quote
    # (or before the closing quote), which is doubled
    escaped = re.sub(rf"(\\*)({quote}|$)",
                     lambda m: m.group(1) * 2 + (f"\\{quote}" if m.group(2) else ""), text)
    return f"{quote}{escaped}{quote}"


def command(*words: str, **overrides: Any) -> str:
    """`words` then key=value Hydra overrides, each shell-quoted: one line a shell runs as meant."""
    args = [*words, *(f"{key}={hydra_value(value)}" for key, value in overrides.items())]
    return " ".join(shlex.quote(a) for a in args)


def fail(message: str) -> NoReturn:
    """Bad input: `error: message` as one line on stderr, exit status 2 (every command's one way to fail)."""
    line = " ".join(part.strip() for part in str(message).splitlines())  # a library's multi-line message, joined
    print(f"error: {line}", file=sys.stderr, flush=True)
    sys.exit(2)
