import logging
import os
import re
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "costlab.settings")

app = Celery("costlab")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# "Task calls.tasks.api_calls_sweep[<id>] received", "Sending due task … (….uploads_sweep)".
SWEEP_TASK = re.compile(r"\.\w+_sweep[\[)]")


class QuietSweeps(logging.Filter):
    """Drops the worker's routine INFO lines (sent by beat, received, succeeded) for the sweeps.

    Beat sends four sweeps every COSTLAB_JOB_SWEEP_SECONDS (10 s): eight such lines every ten
    seconds buried an import's or a chat call's lines on a `make run` console. A sweep that
    finds work says so itself (heartbeat.sweep logs a warning), and failures are errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not SWEEP_TASK.search(record.getMessage())


# The loggers Celery writes a task's "sending due task" (beat), "received" (strategy),
# "succeeded" (trace) and "discarding" (request) lines to.
SWEEP_QUIET_LOGGERS = (
    "celery.beat",
    "celery.worker.strategy",
    "celery.app.trace",
    "celery.worker.request",  # "Discarding revoked task": a sweep that expired in the queue
)
for _name in SWEEP_QUIET_LOGGERS:
    logging.getLogger(_name).addFilter(QuietSweeps())


@signals.task_prerun.connect
@signals.task_postrun.connect
def database_connections_tidy(task: Any = None, **_: Any) -> None:
    """Around each task, as Django does around each request: a connection that broke or
    outlived CONN_MAX_AGE is closed, a sound one is kept for the next task. (Celery's own
    fixup would close every connection before and after every task, CELERY_DB_REUSE_MAX:
    one new PostgreSQL session per task, a sizeable part of a short call's cost.) An eager
    task runs inside its caller's transaction, whose connection is not ours to close."""
    from django.db import close_old_connections

    if task is not None and getattr(task.request, "is_eager", False):
        return
    close_old_connections()
