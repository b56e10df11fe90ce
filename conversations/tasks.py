"""Thin Celery tasks: ids in, one service call. Job state lives in the database, so a
re-delivered message finds its job already claimed and does nothing."""

from __future__ import annotations

import logging

from celery import shared_task

from .services import deletion, imports

logger = logging.getLogger(__name__)

# A 500 MB log takes minutes; an hour means something is stuck.
IMPORT_SOFT_TIME_LIMIT = 50 * 60
IMPORT_TIME_LIMIT = 60 * 60


@shared_task(
    acks_late=True,  # safe: the job is claimed with a conditional UPDATE (idempotent)
    reject_on_worker_lost=True,
    soft_time_limit=IMPORT_SOFT_TIME_LIMIT,
    time_limit=IMPORT_TIME_LIMIT,
)
def import_job_run(job_id: int) -> None:
    job = imports.import_job_claim(job_id)
    if job is None:
        logger.info("import job %s already claimed; nothing to do", job_id)
        return
    imports.import_job_process(job)


@shared_task(soft_time_limit=50, time_limit=60)
def import_jobs_sweep() -> None:
    """Celery beat, every few seconds: jobs whose worker died run again."""
    imports.import_jobs_sweep()


@shared_task(soft_time_limit=50 * 60, time_limit=60 * 60)
def uploads_sweep() -> None:
    """Celery beat, hourly: uploaded files past their keeping time are removed."""
    deletion.uploads_sweep()
