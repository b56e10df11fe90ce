"""The lock that orders an organization's rollup writers (services/rollups.py,
services/dimension_rollups.py): a module of its own so that both can import it.

Writers that add sums (an import's end, a live call) take their rollup rows in one order
(DimensionDay, then ORG_DAY_TABLES, keys sorted), so they never wait on each other in a
cycle. Writers that recompute (re-pricing, deletes, tag edits, rebuilds) DELETE rows in
scan order and re-INSERT them, which no order can make agree with the adders'. So each
organization has a lock of the transaction: adders take it shared (they still run side by
side), recomputers exclusive (they wait for the adders in flight, and the adders after
them wait for them). A recomputer takes it once it has changed or locked the raw rows,
just before touching a rollup; an adder just before its first shared rollup row: so
neither holds, while it waits for this lock, a row the holder of the lock then waits for.
"""

from __future__ import annotations

from django.db import connection

ADVISORY_NAMESPACE = 0x636C  # the first key of the two-key advisory lock ("cl")


def organization_lock(organization_id: int, *, shared: bool) -> None:
    """The organization's rollup lock until the transaction ends (PostgreSQL; SQLite has a
    single writer). Outside a transaction (autocommit) each statement is its own
    transaction, and there is nothing to hold the lock across."""
    if connection.vendor != "postgresql" or not connection.in_atomic_block:
        return
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}(%s, %s)", list(organization_lock_keys(organization_id)))


def organization_lock_keys(organization_id: int) -> tuple[int, int]:
    """The two keys of the organization's advisory lock. The two-key form takes 32-bit
    keys: two organizations may share a lock, which only makes one wait for the other."""
    return ADVISORY_NAMESPACE, organization_id % (2**31)
