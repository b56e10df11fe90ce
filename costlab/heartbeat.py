"""Long jobs (imports, cost recomputes) that survive their worker: claim, heartbeat, sweep.

A job row says `running` from the moment a worker claims it, and everything the job writes
goes into one transaction, all or nothing: while it runs, no other process can see its
progress in the database. So a thread of the worker stamps `heartbeat` on the row every
COSTLAB_JOB_HEARTBEAT_SECONDS, on the thread's own database connection, outside that
transaction. A running job whose heartbeat is older than COSTLAB_JOB_STALE_SECONDS lost its
worker (killed, out of memory, its machine gone); its transaction died with its connection,
so the sweep (Celery beat) puts it back in the queue to run again from the start.

Every outcome is written through `owned()`, the row filtered on the attempt that claimed it:
a worker that was only slow, not dead, finds its claim taken and rolls back instead of
finishing the job a second time.

The job models share the fields this module reads and writes: status, attempts, started,
heartbeat, finished and error.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import DatabaseError, connection, connections, models
from django.db.models import F, Q, QuerySet
from django.utils import timezone

logger = logging.getLogger(__name__)

PENDING, RUNNING, FAILED = "pending", "running", "failed"
# SQLite has one writer: a running import holds the write lock until it commits, so its
# heartbeat cannot be written, and a job only counts as lost once no task could still be
# running it (the tasks' hard time limit).
SQLITE_STALE_AFTER = timedelta(hours=1)

M = TypeVar("M", bound=models.Model)


class ClaimLost(Exception):
    """This attempt no longer owns its job: another worker took it over."""


def beats_supported() -> bool:
    return connection.vendor != "sqlite"


def stale_after() -> timedelta:
    if not beats_supported():
        return SQLITE_STALE_AFTER
    return timedelta(seconds=settings.COSTLAB_JOB_STALE_SECONDS)


def stale(now: datetime) -> Q:
    """Running jobs whose worker is silent: no heartbeat since the limit (rows that never
    beat count from when they started)."""
    cutoff = now - stale_after()
    return Q(status=RUNNING) & (
        Q(heartbeat__lt=cutoff) | Q(heartbeat__isnull=True, started__lt=cutoff)
    )


def claim(rows: QuerySet[M], pk: int) -> M | None:
    """Take a pending job, or a stale running one, with one conditional UPDATE: a task
    delivered twice finds nothing to take the second time and does nothing."""
    now = timezone.now()
    taken = rows.filter(Q(status=PENDING) | stale(now), pk=pk).update(
        status=RUNNING, started=now, heartbeat=now, attempts=F("attempts") + 1
    )
    return rows.get(pk=pk) if taken else None


def owned(rows: QuerySet[M], *, pk: int, attempt: int) -> QuerySet[M]:
    """The job's row while this attempt still owns it."""
    return rows.filter(pk=pk, status=RUNNING, attempts=attempt)


@dataclass
class Beat:
    """The running side of a heartbeat; `check()` raises once the claim is lost."""

    rows: QuerySet[Any]
    pk: int
    interval: float
    lost: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        if self.lost.is_set():
            raise ClaimLost(f"job {self.pk} was taken over by another worker")

    def run(self) -> None:
        try:
            while not self.stop.wait(self.interval):
                self.beat()
        finally:
            # The thread's own connection; Django would otherwise leave it open.
            connections.close_all()

    def beat(self) -> None:
        try:
            if self.rows.update(heartbeat=timezone.now()):
                return
            # No row matched. Another attempt owns it now, unless the row is not visible to
            # this connection at all (a test's uncommitted transaction): then keep going.
            if self.rows.model._default_manager.filter(pk=self.pk).exists():
                self.lost.set()
                self.stop.set()
        except DatabaseError:
            # A lost connection must not stop the job: the next beat reconnects.
            logger.warning("heartbeat of job %s failed", self.pk, exc_info=True)
            connections.close_all()


@contextmanager
def beating(rows: QuerySet[Any], *, pk: int) -> Iterator[Beat]:
    """Stamp the heartbeat of `rows` (the job's `owned()` row) while the block runs."""
    beat = Beat(rows=rows, pk=pk, interval=settings.COSTLAB_JOB_HEARTBEAT_SECONDS)
    if not beats_supported():
        yield beat
        return
    thread = threading.Thread(target=beat.run, name=f"heartbeat-{pk}", daemon=True)
    thread.start()
    try:
        yield beat
    finally:
        beat.stop.set()
        thread.join()


@dataclass
class Swept:
    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def sweep(rows: QuerySet[M], *, rerunnable: Q, noun: str) -> Swept:
    """Stale jobs go back to pending (the caller queues them again), or fail once they have
    used up COSTLAB_JOB_MAX_ATTEMPTS or cannot run again (`rerunnable` says which can).
    Each row is changed with a conditional UPDATE, so two sweeps never both requeue it."""
    now = timezone.now()
    result = Swept()
    limit = settings.COSTLAB_JOB_MAX_ATTEMPTS
    for pk, attempts, can_rerun in (
        rows.filter(stale(now))
        .annotate(can_rerun=models.ExpressionWrapper(rerunnable, models.BooleanField()))
        .values_list("pk", "attempts", "can_rerun")
    ):
        same = rows.filter(stale(now), pk=pk, attempts=attempts)
        if can_rerun and attempts < limit:
            if same.update(status=PENDING, heartbeat=now):
                result.requeued.append(pk)
            continue
        why = (
            f"the worker running this {noun} stopped {attempts} times (killed, out of memory "
            "or over the time limit)"
            if can_rerun
            else f"the process running this {noun} stopped before it finished"
        )
        if same.update(status=FAILED, error=f"{why}; nothing was stored", finished=now):
            result.failed.append(pk)
    for pk in result.requeued:
        logger.warning("%s %s lost its worker; queued again", noun, pk)
    for pk in result.failed:
        logger.error("%s %s lost its worker; failed", noun, pk)
    return result
