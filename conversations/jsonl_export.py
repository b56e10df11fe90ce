"""JSON Lines out of costlab: the export views' format for programs (a notebook, a warehouse
load), beside CSV for spreadsheets. One object per row, keyed by the CSV's header.

Money is a string of its exact decimal digits (a JSON number is read as a float, which
rounds it); unknown money is null, never 0; times are ISO 8601. Text is written as it is:
no spreadsheet evaluates it, so nothing is neutralised (csv_export.py is for that).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal

from .csv_export import Cell, money_text

Value = str | int | float | None


def _value(value: Cell) -> Value:
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return money_text(value)  # exact digits, as many on every row as the CSV's
    return str(value)  # a code (UUID), as the CSV writes it


def jsonl_lines(header: Sequence[str], rows: Iterable[Sequence[Cell]]) -> Iterator[str]:
    """The rows as JSON objects, one line each: memory stays one row whatever their number."""
    for row in rows:
        fields = {name: _value(value) for name, value in zip(header, row, strict=True)}
        yield json.dumps(fields, ensure_ascii=False) + "\n"
