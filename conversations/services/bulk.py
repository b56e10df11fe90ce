"""Rows written in bulk: PostgreSQL's COPY where the database has it, the ORM elsewhere.

An import writes about 40 rows per conversation. As INSERT statements built by Django and
psycopg that was most of an import's time (issue 13: 82 % of a 50 MB file); COPY streams one
table's rows of a whole chunk in one statement, through the same constraints and triggers.

Rows come as plain dicts, not model instances: building ~95,000 instances for a 50 MB file
took longer than their COPY (profiled). Defaults Django would fill in Python (uuid codes,
`created` timestamps, JSON defaults) are filled here from the same field definitions."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from operator import itemgetter
from typing import Any

from django.db import connection, models
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

# Where `rows_copy` runs. A module constant so a test can take the ORM path on
# PostgreSQL too and compare what both write.
COPY_VENDORS = frozenset({"postgresql"})

Row = Mapping[str, Any]


def copy_supported() -> bool:
    return connection.vendor in COPY_VENDORS


def ids_reserve(*, model: type[models.Model], count: int) -> list[int]:
    """`count` fresh ids from the table's own sequence, ascending.

    Reserved before the COPY rather than read back after it: the chunk's foreign keys
    (message -> conversation, turn -> response message, usage -> turn) are then filled in
    Python and each table takes one COPY, with no query to match rows back to objects by
    natural key. A rolled-back import leaves a gap in the sequence, as INSERTs do."""
    if count == 0:
        return []
    with connection.cursor() as cursor:
        # The sequence's name first, then nextval of it as a constant: with the lookup in
        # the same statement PostgreSQL ran it for every row (2.6 us an id, 0.25 s for a
        # 50 MB file's 94,600; 0.3 us with the name given).
        cursor.execute(
            "SELECT pg_get_serial_sequence(%s, %s)", [model._meta.db_table, model._meta.pk.column]
        )
        (sequence,) = cursor.fetchone()
        cursor.execute(
            "SELECT nextval(%s::regclass) FROM generate_series(1, %s)", [sequence, count]
        )
        # nextval hands out ascending values; sorted anyway so that ids follow the objects'
        # order, as they do with INSERT (pages that order by id show the same thing).
        return sorted(row[0] for row in cursor.fetchall())


@contextmanager
def outside_keys_checked_now(tables: Sequence[type[models.Model]]) -> Iterator[None]:
    """Inside the block, the tables' deferred foreign keys to tables outside `tables` (an
    import's organization, price rows, job) are checked as each statement ends (SET
    CONSTRAINTS ... IMMEDIATE) instead of at commit; deferred again after it.

    The checks are the same and cost the server the same; what moves is when. At commit, a
    50 MB import's ~50,000 such checks (a usage record's organization and price, a
    conversation's organization and job) added to the ~0.55 s the server spends on all its
    deferred checks after the last chunk, when nothing else is left to run beside them;
    checked as each chunk's COPY ends, the import's analysis thread works while this
    thread waits. The rows they look up exist before the import and do not change size
    during it, so the plan the server makes for them at the first chunk is the one it would
    make at commit. Not the keys between the tables written: checked per chunk, the plan
    made while the first chunk's 200 conversations were the whole table was a sequential
    scan, kept for every later chunk (the 50 MB file: 99,550 scans reading 123 M rows,
    4.3 -> 7.7 s of CPU). A violation is the same IntegrityError, from the COPY instead of
    the commit. Only constraints declared INITIALLY DEFERRED (all of Django's foreign keys)
    are named, so deferring them again restores what they were."""
    written = [model._meta.db_table for model in tables]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT format('%%I.%%I', n.nspname, c.conname) FROM pg_constraint c"
            " JOIN pg_namespace n ON n.oid = c.connamespace"
            " WHERE c.contype = 'f' AND c.condeferred AND c.conrelid = ANY(%s::regclass[])"
            " AND c.confrelid <> ALL(%s::regclass[]) ORDER BY 1",
            [written, written],
        )
        names = ", ".join(name for (name,) in cursor.fetchall())
    if not names:
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute(f"SET CONSTRAINTS {names} IMMEDIATE")
    # Not deferred again when the block raises: a failed statement has broken the
    # transaction, which the import rolls back (SET CONSTRAINTS ends with it).
    yield
    with connection.cursor() as cursor:
        cursor.execute(f"SET CONSTRAINTS {names} DEFERRED")


def rows_copy(*, model: type[models.Model], rows: Sequence[Row], ids: Sequence[int]) -> None:
    """Write rows given as columns by attribute name, under the ids given, with one COPY.
    Every row has the first row's columns; a column they leave out gets the field's
    default, called per row as Model.__init__ does (a fresh uuid4 code, `created` = now).

    Text format: psycopg turns each Python value (str, int, bool, Decimal, datetime, UUID)
    into the server's text form and the server parses it by the column's type, so a value
    the column refuses fails the COPY as it would fail an INSERT (raised as Django's
    IntegrityError / DataError, which the import reports)."""
    if not rows:
        return
    pk = model._meta.pk
    assert pk is not None
    fields = [field for field in model._meta.concrete_fields if field is not pk]
    given = [field for field in fields if field.attname in rows[0]]
    defaulted = [field for field in fields if field.attname not in rows[0]]
    if len(given) != len(rows[0]):
        unknown = sorted(set(rows[0]) - {field.attname for field in given})
        raise ValueError(f"{model.__name__} has no column {', '.join(unknown)}")
    columns = [pk, *given, *defaulted]
    # As the ORM writes a JSONField: Python None is SQL NULL, anything else JSON text
    # (without the spaces json.dumps puts after separators: jsonb drops them anyway).
    # One encoder a column, made once: json.dumps would build one per value.
    encoders = [
        (index, (field.encoder or json.JSONEncoder)(separators=(",", ":")).encode)
        for index, field in enumerate(columns)
        if isinstance(field, models.JSONField)
    ]
    names = [field.attname for field in given]
    # itemgetter of one name returns the value itself, not a 1-tuple.
    values_of = itemgetter(*names) if len(names) > 1 else lambda row: (row[names[0]],)
    defaults = [field.get_default for field in defaulted]
    statement = sql.SQL("COPY {table} ({columns}) FROM STDIN").format(
        table=sql.Identifier(model._meta.db_table),
        columns=sql.SQL(", ").join(sql.Identifier(field.column) for field in columns),
    )
    connection.ensure_connection()
    with (
        connection.wrap_database_errors,
        connection.connection.cursor() as cursor,
        # A thread sends while this one formats: the server parses a block while the next
        # is built, instead of each side waiting for the other.
        cursor.copy(statement, writer=QueuedLibpqWriter(cursor)) as copy,
    ):
        for row, id_ in zip(rows, ids, strict=True):
            if len(row) != len(given):  # a column the first row lacks would be lost
                raise ValueError(f"{model.__name__} rows differ in their columns")
            values = [id_, *values_of(row), *[default() for default in defaults]]
            for index, encode in encoders:
                if values[index] is not None:
                    values[index] = encode(values[index])
            copy.write_row(values)
