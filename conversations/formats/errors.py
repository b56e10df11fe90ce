"""Errors a user can act on: which file, which line (or record), which field, what is wrong."""

from __future__ import annotations

import unicodedata
from typing import Any


class ParseError(Exception):
    """A transcript file that cannot be imported as it is.

    `file` is the name the user knows (for a zip member "archive.zip:inner/file.jsonl"),
    `line` the 1-based line of a JSONL file or the 1-based record of a JSON array (then
    `unit` is "record"), `field` a JSON path inside that line or record such as
    `messages[2].role`, and `byte_offset` the position of a fault found below the JSON
    level (invalid UTF-8 in a JSON document).
    """

    def __init__(
        self,
        message: str,
        *,
        file: str = "",
        line: int | None = None,
        field: str | None = None,
        unit: str = "line",
        byte_offset: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        self.unit = unit
        self.byte_offset = byte_offset

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where = f"{where} {self.unit} {self.line}".strip()
        if self.field:
            where = f"{where}, field {self.field}" if where else f"field {self.field}"
        return f"{where}: {self.message}" if where else self.message

    # Exceptions pickle through their args only; keep the keyword attributes across
    # processes (a worker may hand the error back to the web process).
    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.message, self.__dict__.copy()))


def _rebuild(message: str, attrs: dict[str, Any]) -> ParseError:
    err = ParseError(message)
    err.__dict__.update(attrs)
    return err


def describe(value: Any) -> str:
    """The JSON name of a value's type, for messages such as "expected an object, got list"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def printable(text: str) -> str:
    """`text` (a file or archive member name) with control and format characters (terminal
    escapes, bell, right-to-left overrides) replaced by "?": names are shown in pages and
    printed to terminals, and a name is whatever its sender chose."""
    return "".join("?" if unicodedata.category(c) in ("Cc", "Cf") else c for c in text)
