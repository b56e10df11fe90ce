"""Thin Celery tasks of the price book: ids in, one service call."""

from __future__ import annotations

from celery import shared_task

from . import services

# Re-pricing a large organization walks every usage record; an hour means it is stuck.
RECOMPUTE_SOFT_TIME_LIMIT = 50 * 60
RECOMPUTE_TIME_LIMIT = 60 * 60


@shared_task(soft_time_limit=RECOMPUTE_SOFT_TIME_LIMIT, time_limit=RECOMPUTE_TIME_LIMIT)
def costs_recompute_run(organization_id: int | None, user_id: int | None = None) -> None:
    # Not acks_late: a re-run is harmless (it changes nothing the second time) but logged twice.
    services.costs_recompute_by_ids(organization_id=organization_id, user_id=user_id)
