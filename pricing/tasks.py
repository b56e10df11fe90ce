"""Thin Celery tasks of the price book: ids in, one service call."""

from __future__ import annotations

import logging

from celery import shared_task

from . import services

logger = logging.getLogger(__name__)

# Re-pricing a large organization walks every usage record; an hour means it is stuck.
RECOMPUTE_SOFT_TIME_LIMIT = 50 * 60
RECOMPUTE_TIME_LIMIT = 60 * 60


@shared_task(
    acks_late=True,  # safe: the recompute is claimed with a conditional UPDATE
    reject_on_worker_lost=True,
    soft_time_limit=RECOMPUTE_SOFT_TIME_LIMIT,
    time_limit=RECOMPUTE_TIME_LIMIT,
)
def costs_recompute_run(recompute_id: int) -> None:
    log = services.costs_recompute_claim(recompute_id)
    if log is None:
        logger.info("recompute %s already claimed; nothing to do", recompute_id)
        return
    services.costs_recompute_process(log)


@shared_task(soft_time_limit=50, time_limit=60)
def costs_recompute_sweep() -> None:
    """Celery beat, every few seconds: recomputes whose worker died run again."""
    services.costs_recompute_sweep()
