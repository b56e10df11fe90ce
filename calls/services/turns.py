"""A live turn's rows and its rollup sums, written all at once: a chat's turn and a replayed
turn alike (chats.py, experiments.py).

The caller gives the steps that write the turn's rows (its reply or response message, the
Turn, its UsageRecords, the call's and attempt's outcome: updates.rows_write_together
steps). On PostgreSQL the turn's rollup sums, computed in Python from those rows
(rollups.turn_sums), are added by the same statement: the organization's rollup lock, then
one upsert per table in the order every adder takes them. The statement is its own
transaction. A tag edit committed between the conversation's read and that statement is
seen by it (a locking read), and the sums by tag are then recomputed, as the edit does. Elsewhere (SQLite), or for a turn turn_sums does not cover, the rows are
written and rollups.turns_added adds the sums from them, in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

from django.db import connection, transaction

from conversations.models import Conversation, Organization
from conversations.services import dimension_rollups, rollups
from conversations.services.chunk_sums import PriceRates
from pricing.book import PriceBook

from .updates import Check, Insert, Lock, Step, Upsert, rows_write_together


def turn_write(
    *,
    organization: Organization,
    conversation: Conversation,
    steps: Sequence[Step],
    turn_step: int,
    usage_rows: Sequence[Mapping[str, Any]],
    book: PriceBook,
) -> int:
    """Write `steps` (step `turn_step` inserts the Turn, whose columns turn_sums reads; its
    UsageRecords are `usage_rows`, their turn given as that step's key) and the turn's
    rollup sums; the turn's id. A second writer of the same turn raises IntegrityError
    and writes nothing (in a caller's transaction, only its savepoint is rolled back)."""
    turn = steps[turn_step]
    assert isinstance(turn, Insert) and len(turn.rows) == 1, "the Turn's insert, one row"
    sums = rollups.turn_sums(
        organization=organization,
        conversation=conversation,
        turn=turn.rows[0],
        records=usage_rows,
        rates=price_rates(book, usage_rows),
    )
    if sums is not None:
        # The sums by tag are the tags `conversation` was read with. The Check, once the
        # rollup lock is held, says whether a tag edit committed since: that edit recomputed
        # its rows without this turn, so they are recomputed again, now with it.
        together = [
            *steps,
            Lock(sums.lock),
            Check(Conversation, conversation.pk, {"tags": conversation.tags}),
            *(Upsert(t.model, t.keys, t.figures, t.rows, conflict=t.conflict) for t in sums.tables),
        ]
        inner = transaction.atomic() if connection.in_atomic_block else nullcontext()
        with inner:
            written = rows_write_together(together)
        if not written[len(steps) + 1]:
            with transaction.atomic():
                dimension_rollups.conversations_retagged(
                    organization=organization, conversation_ids=[conversation.pk]
                )
        return written[turn_step]
    with transaction.atomic():
        turn_id = rows_write_together(steps)[turn_step]
        # Last, right before the commit: every call of the organization updates the same
        # organization-day rollup rows, and holds their locks from here to the commit.
        billed_in = [conversation.pk] if any(r["is_billing"] for r in usage_rows) else []
        rollups.turns_added(
            organization=organization, turn_ids=[turn_id], conversation_ids=billed_in
        )
        return turn_id


def price_rates(book: PriceBook, usage_rows: Sequence[Mapping[str, Any]]) -> PriceRates:
    """The figures of the price rows the turn's billing record was priced with, which the
    rollups' LOST reads: taken from `book`'s rows in memory, the ones its calls were priced
    with (a row edited since, up to selectors.BOOK_SECONDS ago, as the cost itself). One
    the book lacks is read from the database (PriceRates.load)."""
    wanted = {row.get("price_id") for row in usage_rows if row["is_billing"]} - {None}
    rates = PriceRates()
    if wanted:
        rates.remember(row for row in book.rows if row.pk in wanted)
    return rates
