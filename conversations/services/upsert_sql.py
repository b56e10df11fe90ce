"""SQL the rollup writers share (rollups.py, dimension_rollups.py, chunk_sums.py): quoted
names, and the ON CONFLICT clause that combines an upsert's figures with the row already
there, one way per kind of figure."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection

# How a figure combines with the one already stored: added; added where either may be
# NULL (money: NULL + x = x, as SUM has it); the least or greatest of the two; or either
# (a flag such as ConversationTotals.is_priced, true once one of its calls was priced).
ADD, MONEY, LEAST, GREATEST, EITHER = "add", "money", "least", "greatest", "either"


def quote(name: str) -> str:
    return connection.ops.quote_name(name)


def on_conflict_combine(
    table: str, conflict: Iterable[str], figures: Iterable[tuple[str, str]]
) -> str:
    """` ON CONFLICT (conflict) DO UPDATE SET ...`: each (column, kind) of `figures`
    combined with the stored row's own."""
    target = quote(table)
    updates = []
    for column, kind in figures:
        mine, theirs = f"{target}.{quote(column)}", f"excluded.{quote(column)}"
        if kind == MONEY:
            updates.append(f"{quote(column)} = COALESCE({mine} + {theirs}, {mine}, {theirs})")
        elif kind in (LEAST, GREATEST):
            # SQLite's two-argument MIN and MAX are PostgreSQL's LEAST and GREATEST.
            function = kind
            if connection.vendor == "sqlite":
                function = "min" if kind == LEAST else "max"
            updates.append(f"{quote(column)} = {function}({mine}, {theirs})")
        elif kind == EITHER:
            updates.append(f"{quote(column)} = ({mine} OR {theirs})")
        else:
            updates.append(f"{quote(column)} = {mine} + {theirs}")
    keys = ", ".join(quote(k) for k in conflict)
    return f" ON CONFLICT ({keys}) DO UPDATE SET {', '.join(updates)}"
