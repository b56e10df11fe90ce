"""CSV out of costlab: one cell-neutralising rule and one streaming writer, shared by the
export views and `manage.py export_usage`.

A spreadsheet treats a cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return
as a formula (CSV injection, OWASP). Titles, model names, tags and cache keys come from
imported files, so every text cell goes through `neutralise`. Numbers are written as numbers:
a negative figure is data, not a formula, and prefixing it would break sums in the sheet.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

Cell = str | int | float | Decimal | date | datetime | None
MONEY_PLACES = Decimal("1e-12")  # the DecimalFields' decimal_places


def neutralise(text: str) -> str:
    """The text made inert for a spreadsheet: a leading formula character gets a leading
    apostrophe, which spreadsheets show as text and never evaluate."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def money_text(value: Decimal) -> str:
    """Money at the 12 places it is stored with, every row alike: sums came out as "0" on
    one row and "0.005280000000" on the next."""
    return f"{value.quantize(MONEY_PLACES):f}"  # not "0E-12"


def _cell(value: Cell) -> str:
    if value is None:
        return ""  # unknown (an unpriced cost): empty, never 0
    if isinstance(value, str):
        return neutralise(value)
    if isinstance(value, bool):
        return "true" if value else "false"  # as JSON Lines writes it, not Python's True
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return money_text(value)
    return str(value)


class _Line:
    """A file-like that hands back what csv.writer wrote, one line at a time."""

    def write(self, text: str) -> str:
        return text


def csv_lines(header: Sequence[str], rows: Iterable[Sequence[Cell]]) -> Iterator[str]:
    """The CSV text line by line: memory stays one row whatever the number of rows."""
    writer = csv.writer(_Line())
    yield writer.writerow([neutralise(name) for name in header])
    for row in rows:
        yield writer.writerow([_cell(value) for value in row])
