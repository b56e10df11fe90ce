"""The worker's console: routine sweep lines are dropped, everything else is kept."""

from __future__ import annotations

import logging

from costlab.celery import SWEEP_QUIET_LOGGERS, QuietSweeps


def record(level: int, message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("celery.app.trace", level, __file__, 1, message, args, None)


def test_routine_sweep_lines_are_dropped() -> None:
    quiet = QuietSweeps()
    assert not quiet.filter(
        record(logging.INFO, "Task %s[%s] received", "calls.tasks.api_calls_sweep", "7aaf")
    )
    assert not quiet.filter(
        record(logging.INFO, "Task conversations.tasks.import_jobs_sweep[03a5] succeeded in 0.01s")
    )
    assert not quiet.filter(
        record(
            logging.INFO,
            "Scheduler: Sending due task %s (%s)",
            "uploads-sweep",
            "conversations.tasks.uploads_sweep",
        )
    )


def test_other_tasks_and_a_failing_sweep_are_kept() -> None:
    quiet = QuietSweeps()
    assert quiet.filter(record(logging.INFO, "Task conversations.tasks.import_job_run[1] received"))
    assert quiet.filter(record(logging.ERROR, "Task calls.tasks.api_calls_sweep[1] raised"))


def test_the_filter_sits_on_the_loggers_celery_writes_task_lines_to() -> None:
    for name in SWEEP_QUIET_LOGGERS:
        assert any(isinstance(f, QuietSweeps) for f in logging.getLogger(name).filters)
