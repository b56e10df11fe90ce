"""A live turn's rows and its rollup sums, written all at once: a chat's turn and a replayed
turn alike (chats.py, experiments.py).

The caller gives the steps that write the turn's rows (its reply or response message, the
Turn, its UsageRecords, the call's and attempt's outcome: updates.rows_write_together
steps). On PostgreSQL the turn's rollup sums, computed in Python from those rows
(rollups.turn_sums), are added by the same statement: the organization's rollup lock, then
one upsert per table in the order every adder takes them. The statement is its own
transaction. Elsewhere (SQLite), or for a turn turn_sums does not cover, the rows are
written and rollups.turns_added adds the sums from them, in one transaction.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

from django.db import connection, transaction

from conversations.models import Conversation, Organization
from conversations.services import rollups
from conversations.services.chunk_sums import PriceRates
from pricing.book import PriceBook

from .updates import Insert, Lock, Step, Upsert, rows_write_together


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
        rates=book_rates(book),
    )
    if sums is not None:
        together = [
            *steps,
            Lock(sums.lock),
            *(Upsert(t.model, t.keys, t.figures, t.rows, conflict=t.conflict) for t in sums.tables),
        ]
        inner = transaction.atomic() if connection.in_atomic_block else nullcontext()
        with inner:
            return rows_write_together(together)[turn_step]
    with transaction.atomic():
        turn_id = rows_write_together(steps)[turn_step]
        # Last, right before the commit: every call of the organization updates the same
        # organization-day rollup rows, and holds their locks from here to the commit.
        billed_in = [conversation.pk] if any(r["is_billing"] for r in usage_rows) else []
        rollups.turns_added(
            organization=organization, turn_ids=[turn_id], conversation_ids=billed_in
        )
        return turn_id


# Per process, the price rows' figures the rollups' LOST reads, by price book: a worker's
# book is re-read every BOOK_SECONDS (selectors.price_book), an experiment run has its own,
# and a book's rows are the ones its calls were priced with.
_rates: OrderedDict[int, tuple[PriceBook, PriceRates]] = OrderedDict()
_rates_lock = threading.Lock()


def book_rates(book: PriceBook) -> PriceRates:
    with _rates_lock:
        found = _rates.get(id(book))
    if found is not None and found[0] is book:
        return found[1]
    rates = PriceRates()
    rates.remember(book.rows)
    with _rates_lock:
        _rates[id(book)] = (book, rates)
        while len(_rates) > 8:
            _rates.popitem(last=False)
    return rates
