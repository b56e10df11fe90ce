"""Rows updated by their primary key, or inserted, with statements built once per process.

A chat call updates its ApiCall and CallAttempt rows three times (the claim, the answer, the
answered attempt). Through the ORM each of those built its query and compiled it afresh
(~0.2-0.4 ms of a worker's CPU each, more than PostgreSQL took to run it); here the text is
built once per model, columns and condition, and each value is prepared by its field as the
ORM's update prepares it (`get_db_prep_save`; None as SQL NULL, as the ORM writes it).

Its turn (and a replayed one) inserts three kinds of rows (the reply's Message, the Turn, its
UsageRecords): the ORM built a model instance, an insert query and its compiled text for each
(~0.5 ms of the worker's CPU for the three); `rows_insert` writes every column as the ORM's insert does
(a field not given takes its default) with a statement built once per model and row count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from django.conf import settings
from django.db import connection, models
from django.db.models.fields import AutoFieldMixin

_statements: dict[tuple[Any, ...], str] = {}
_MISSING = object()
_M = TypeVar("_M", bound=models.Model)


def _field(model: type[models.Model], name: str) -> models.Field[Any, Any]:
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field), f"{model.__name__}.{name} is not a column"
    return field


def row_update(
    *,
    model: type[models.Model],
    pk: int,
    values: Mapping[str, Any],
    increment: Sequence[str] = (),
    status_in: Sequence[str] = (),
) -> int:
    """UPDATE the row `pk` of `model`: `values` by field name (a foreign key by its field's
    name, given the id), each `increment` field plus one, and only while its `status` is one
    of `status_in` when given. How many rows it changed (0 or 1)."""
    fields = [_field(model, name) for name in values]
    nulls = tuple(value is None for value in values.values())
    key = (connection.alias, model, tuple(values), nulls, tuple(increment), len(status_in))
    sql = _statements.get(key)
    if sql is None:
        quote = connection.ops.quote_name
        sets = [
            f"{quote(field.column)} = {'NULL' if null else '%s'}"
            for field, null in zip(fields, nulls, strict=True)
        ]
        for name in increment:
            column = quote(_field(model, name).column)
            sets.append(f"{column} = {column} + 1")
        pk_field = model._meta.pk
        assert pk_field is not None
        where = f"{quote(pk_field.column)} = %s"
        if status_in:
            marks = ", ".join(["%s"] * len(status_in))
            where += f" AND {quote(_field(model, 'status').column)} IN ({marks})"
        table = quote(model._meta.db_table)
        sql = _statements[key] = f"UPDATE {table} SET {', '.join(sets)} WHERE {where}"
    params = [
        field.get_db_prep_save(value, connection)
        for field, value in zip(fields, values.values(), strict=True)
        if value is not None
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, pk, *status_in])
        return int(cursor.rowcount)


def _insert_fields(model: type[models.Model]) -> list[models.Field[Any, Any]]:
    """The columns an insert writes: every concrete one but an automatic primary key. The
    ORM's `pre_save` is not called, so no field may set itself when saved (auto_now)."""
    fields = []
    for field in model._meta.concrete_fields:
        if isinstance(field, AutoFieldMixin):
            continue
        assert not getattr(field, "auto_now", False) and not getattr(field, "auto_now_add", False)
        fields.append(field)
    return fields


_insert_columns: dict[type[models.Model], tuple[list[models.Field[Any, Any]], frozenset[str]]] = {}


def rows_insert(*, model: type[models.Model], rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """INSERT `rows` of `model` in one statement and return their primary keys: in the rows'
    order on PostgreSQL (as bulk_create assumes there); SQLite does not promise RETURNING's
    order, so a caller pairing the ids of several rows with its rows must not rely on it.
    A row gives values by field name or column attribute (`turn` or `turn_id`, the id); a
    field it leaves out takes its default, as `Model.objects.create` would. A unique
    constraint's violation raises IntegrityError (Django's cursor wraps it), as the ORM's."""
    known = _insert_columns.get(model)
    if known is None:
        fields = _insert_fields(model)
        names = frozenset(name for field in fields for name in (field.name, field.attname))
        known = _insert_columns[model] = (fields, names)
    fields, names = known
    key = (connection.alias, "insert", model, len(rows))
    sql = _statements.get(key)
    if sql is None:
        quote = connection.ops.quote_name
        pk_field = model._meta.pk
        assert pk_field is not None
        columns = ", ".join(quote(field.column) for field in fields)
        row = "(" + ", ".join(["%s"] * len(fields)) + ")"
        sql = _statements[key] = (
            f"INSERT INTO {quote(model._meta.db_table)} ({columns}) "
            f"VALUES {', '.join([row] * len(rows))} RETURNING {quote(pk_field.column)}"
        )
    params = []
    for values in rows:
        unknown = values.keys() - names
        assert not unknown, f"{model.__name__} has no columns {sorted(unknown)}"
        for field in fields:
            value = values.get(field.attname, _MISSING)
            if value is _MISSING:
                value = values.get(field.name, _MISSING)
            if value is _MISSING:
                value = field.get_default()
            params.append(field.get_db_prep_save(value, connection))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [int(row[0]) for row in cursor.fetchall()]


def instance_insert(obj: _M) -> _M:
    """INSERT the unsaved `obj` (built as `Model(...)`, so every field it was not given holds
    its default) with `rows_insert`'s statement, and give it its primary key and the state
    the ORM's `save` leaves: what `Model.objects.create` does, minus building and compiling
    an insert query per call (~0.3 ms of a process's CPU each, py-spy on bench/calls.py)."""
    model = type(obj)
    fields, _ = _insert_columns.get(model) or (_insert_fields(model), None)
    [pk] = rows_insert(model=model, rows=[{f.attname: getattr(obj, f.attname) for f in fields}])
    obj.pk = pk
    obj._state.adding = False
    obj._state.db = connection.alias
    return obj


# psycopg prepares only what is asked for (prepare=True) above this threshold: Django leaves
# it unset, and unset, psycopg prepares nothing at all (as conversations/services/rollups.py).
_PREPARE_WHEN_ASKED = 2**31 - 1


def rows_fetch(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Run one read built once per process and return its rows (as Django's cursor gives
    them: convert them as the ORM does). On PostgreSQL it is prepared once per session
    (COSTLAB_DB_PREPARE_CALLS): planned afresh, the claim's read (three joins) took 0.35-0.40
    ms of PostgreSQL's CPU to plan against 0.07 ms to run, a send's state (four subqueries)
    0.17-0.22 against 0.04 (EXPLAIN ANALYZE, warm session, bench/calls.py's database).
    Logged as Django logs what it runs (tests count statements)."""
    if not (settings.COSTLAB_DB_PREPARE_CALLS and connection.vendor == "postgresql"):
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
    import psycopg

    connection.ensure_connection()
    raw = connection.connection
    if raw.prepare_threshold is None:
        raw.prepare_threshold = _PREPARE_WHEN_ASKED
    with connection.wrap_database_errors, psycopg.Cursor(raw) as cursor:
        cursor.execute(sql, params, prepare=True)
        rows = cursor.fetchall() if cursor.description is not None else []
    if connection.queries_logged:
        connection.queries_log.append({"sql": sql, "time": "0.000"})
    return rows
