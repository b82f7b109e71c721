"""Read a TF Serving text proto into a message, with errors that name the file, the
line and the column."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from ..config import ConfigError

# Larger than any config anyone writes by hand; a bound on what is read.
MAX_FILE_BYTES = 16 * 1024 * 1024

_WHERE = re.compile(r"^\s*\d+:\d+\s*:\s*")


def read_text(path: Path, what: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {what}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: {what}: larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: {what}: not UTF-8 text (byte {exc.start})") from None


def parse(path: Path, text: str, classes: list[Any]) -> Any:
    """Parse with the first class that accepts the text; report the first one's error."""
    first: text_format.ParseError | None = None
    for cls in classes:
        try:
            return text_format.Parse(text, cls())
        except text_format.ParseError as exc:
            first = first or exc
    assert first is not None
    line, col = first.GetLine(), first.GetColumn()
    message = _WHERE.sub("", str(first))
    where = f"{path}:{line}:{col}" if line is not None and line > 0 else str(path)
    raise ConfigError(f"{where}: {message}")
