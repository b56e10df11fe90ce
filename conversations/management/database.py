"""A guard for the management commands that read or write costlab's tables."""

from __future__ import annotations

from django.core.management.base import CommandError
from django.db import DEFAULT_DB_ALIAS, OperationalError, connections
from django.db.migrations.executor import MigrationExecutor


def require_migrated() -> None:
    """Stop with one line when migrations are pending: otherwise the first query dies
    with a traceback about a missing table or column."""
    try:
        executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except OperationalError as exc:  # no server, no such database, wrong credentials
        raise CommandError(f"cannot reach the database: {exc}".strip()) from exc
    if pending:
        raise CommandError(
            f"the database has {len(pending)} unapplied migration(s): run "
            "`python manage.py migrate` first (`make run` does it for you)"
        )
