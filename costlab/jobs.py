"""Enqueueing Celery tasks from the write paths, by task name.

Task modules import the services they run; if services imported the task modules back, the
import graph would have a circle. Services and admin actions enqueue through this module
instead, which looks the task up in Celery's registry only when the transaction commits.
"""

from __future__ import annotations

from django.db import transaction

from .celery import app

IMPORT_JOB_RUN = "conversations.tasks.import_job_run"
COSTS_RECOMPUTE = "pricing.tasks.costs_recompute_run"
CALL_RUN = "calls.tasks.api_call_run"
EXPERIMENT_RUN = "calls.tasks.experiment_run"


def enqueue(task_name: str, *args: object) -> None:
    """Send now (through `.delay`, so eager mode in tests applies as usual)."""
    if task_name not in app.tasks:
        # A web process registers tasks lazily: run Celery's autodiscovery once.
        app.loader.import_default_modules()
    app.tasks[task_name].delay(*args)


def enqueue_on_commit(task_name: str, *args: object) -> None:
    """Send once the current transaction commits: a worker never sees a row that a
    rollback later removes, nor misses one that is not committed yet."""
    transaction.on_commit(lambda: enqueue(task_name, *args))
