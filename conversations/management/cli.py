"""What every management command that reads or writes costlab's tables shares: the
migration guard and the --org option."""

from __future__ import annotations

from django.core.management.base import CommandError
from django.db import DEFAULT_DB_ALIAS, OperationalError, connections
from django.db.migrations.executor import MigrationExecutor

from conversations.models import Organization


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


def organization_option(slug: str | None) -> Organization | None:
    """The organization an optional --org names, or None when it was not given."""
    return organization_by_slug(slug) if slug else None


def organization_by_slug(slug: str) -> Organization:
    """An unknown slug stops the command with one line, not a traceback."""
    organization = Organization.objects.filter(slug=slug).first()
    if organization is None:
        raise CommandError(f"no organization with slug {slug!r}")
    return organization
