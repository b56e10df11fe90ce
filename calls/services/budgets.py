"""Rate budgets shared by every worker: a token bucket per connection, in the database.

A row lock (PostgreSQL) or the write lock of an IMMEDIATE transaction (SQLite, settings.py)
serializes the read-refill-take, so two workers can never both take the last request of a
minute, and the SQLite + filesystem-broker setup of `make run` needs no Redis for it.
Like the API's own limiter, a request is charged its estimated prompt plus its output limit
up front; the difference is settled once the usage is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from ..models import ProviderConnection, RateBudget


@dataclass(frozen=True)
class Take:
    """The outcome of asking for budget: taken (wait 0), or how long to wait first."""

    wait_seconds: float
    tokens: int  # what was charged (0 when nothing was taken)

    @property
    def taken(self) -> bool:
        return self.wait_seconds <= 0


def _budget_row(connection: ProviderConnection, now: datetime) -> RateBudget:
    budget = RateBudget.objects.select_for_update().filter(connection=connection).first()
    if budget is not None:
        return budget
    try:
        with transaction.atomic():  # a savepoint: a racing worker may create it first
            return RateBudget.objects.create(
                connection=connection,
                requests=float(connection.rpm_limit or 0),
                tokens=float(connection.tpm_limit or 0),
                refreshed=now,
            )
    except IntegrityError:
        return RateBudget.objects.select_for_update().get(connection=connection)


def budget_take(
    *, connection: ProviderConnection, tokens: int, now: datetime | None = None
) -> Take:
    """Take one request and `tokens` tokens from the connection's budget, or say how long
    to wait until both are there (nothing is taken then). A request larger than a whole
    minute of tokens waits for a full bucket rather than forever."""
    rpm, tpm = connection.rpm_limit, connection.tpm_limit
    if not rpm and not tpm:
        return Take(0.0, 0)
    now = now or timezone.now()
    with transaction.atomic():
        budget = _budget_row(connection, now)
        elapsed = max(0.0, (now - budget.refreshed).total_seconds())
        requests = min(float(rpm), budget.requests + elapsed * rpm / 60) if rpm else 0.0
        available = min(float(tpm), budget.tokens + elapsed * tpm / 60) if tpm else 0.0
        charge = min(tokens, tpm) if tpm else 0
        waits = [0.0]
        if rpm and requests < 1:
            waits.append((1 - requests) * 60 / rpm)
        if tpm and available < charge:
            waits.append((charge - available) * 60 / tpm)
        wait = max(waits)
        if wait <= 0:
            requests -= 1 if rpm else 0
            available -= charge
        budget.requests, budget.tokens, budget.refreshed = requests, available, now
        budget.save(update_fields=["requests", "tokens", "refreshed"])
    return Take(wait, charge if wait <= 0 else 0)


def budget_settle(*, connection: ProviderConnection, charged: int, used: int) -> None:
    """Give back what a request was over-charged (or take what it under-estimated)."""
    if not connection.tpm_limit or charged == used:
        return
    RateBudget.objects.filter(connection=connection).update(tokens=F("tokens") + (charged - used))
