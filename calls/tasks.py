"""Thin Celery tasks: a call's id in, one service call. Nothing secret travels in a task's
arguments: the worker reads the connection, and decrypts its key, itself."""

from __future__ import annotations

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from .services import chats, experiments

# A call waits at most ~4 minutes for budgets and retries (calling.chat_completion_call);
# past the soft limit the call is given up and recorded as failed, the hard limit kills.
CALL_SOFT_TIME_LIMIT = 5 * 60
CALL_TIME_LIMIT = 6 * 60
# An experiment's run hands over to a fresh task past its soft limit (it goes on where it
# stopped); the hard limit only catches a run that could not stop within a call.
EXPERIMENT_SOFT_TIME_LIMIT = 60 * 60
EXPERIMENT_TIME_LIMIT = EXPERIMENT_SOFT_TIME_LIMIT + CALL_TIME_LIMIT


@shared_task(
    # Safe: the call is claimed with a conditional UPDATE and its turn is written once, by
    # the unique (conversation, index); a call re-run after a lost worker records nothing twice.
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=CALL_SOFT_TIME_LIMIT,
    time_limit=CALL_TIME_LIMIT,
)
def api_call_run(call_id: int) -> None:
    try:
        chats.api_call_run(call_id)
    except SoftTimeLimitExceeded:
        chats.api_call_fail(call_id=call_id, message=f"gave up after {CALL_SOFT_TIME_LIMIT} s")


@shared_task(soft_time_limit=50, time_limit=60)
def api_calls_sweep() -> None:
    """Celery beat, every few seconds: calls whose worker died are sent again."""
    chats.api_calls_sweep()


@shared_task(
    # Safe: the run is claimed with a conditional UPDATE (costlab/heartbeat.py) and each turn
    # is recorded once, by the unique (replay, index); a re-delivered run skips what is done.
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=EXPERIMENT_SOFT_TIME_LIMIT,
    time_limit=EXPERIMENT_TIME_LIMIT,
)
def experiment_run(experiment_id: int) -> None:
    try:
        experiments.experiment_run(experiment_id)
    except SoftTimeLimitExceeded:
        experiments.experiment_release(experiment_id)
    except Exception as error:
        # Running it again would break the same way: say so on the page, keep the turns.
        experiments.experiment_fail(experiment_id=experiment_id, message=f"the run broke: {error}")
        raise


@shared_task(soft_time_limit=50, time_limit=60)
def experiments_sweep() -> None:
    """Celery beat: experiments whose worker died go on in another one."""
    experiments.experiments_sweep()
