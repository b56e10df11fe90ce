"""Claims, heartbeats and the sweep of long jobs (costlab/heartbeat.py), in process; the real
worker killed with -9 is tests/test_crash_recovery.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from django.core.cache import cache
from django.core.files import File
from django.db import connection, connections, transaction
from django.utils import timezone
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings

from conversations import tasks
from conversations.models import Conversation, ImportJob, ImportStatus, Organization
from conversations.services import imports
from costlab import heartbeat
from costlab.celery import app as celery_app
from pricing import services as pricing_services
from pricing.models import CostRecompute, RecomputeStatus

from .factories import OrganizationFactory

T = TypeVar("T")
needs_second_writer = pytest.mark.skipif(
    connection.vendor == "sqlite", reason="heartbeats need a second writer (PostgreSQL)"
)


@pytest.fixture
def eager() -> Iterator[None]:
    celery_app.conf.task_always_eager = True
    try:
        yield
    finally:
        celery_app.conf.task_always_eager = False


def upload_job(organization: Organization, fixtures: Path, **fields: object) -> ImportJob:
    job = ImportJob(organization=organization, original_name="chat_small.json", **fields)
    with (fixtures / "chat_small.json").open("rb") as handle:
        job.file.save("chat_small.json", File(handle), save=True)
    return job


def silent_for(seconds: float) -> dict[str, object]:
    """The fields of a job claimed once whose worker has said nothing for `seconds`."""
    then = timezone.now() - timedelta(seconds=seconds)
    return {"status": ImportStatus.RUNNING, "started": then, "heartbeat": then, "attempts": 1}


def dead() -> dict[str, object]:
    """A job silent for longer than the stale limit of this database."""
    return silent_for(heartbeat.stale_after().total_seconds() + 60)


@pytest.fixture
def media(settings: Settings, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path
    return tmp_path


@pytest.mark.django_db
def test_it_claims_a_pending_job_once(fixtures: Path, media: Path) -> None:
    job = upload_job(OrganizationFactory.create(), fixtures)
    claimed = imports.import_job_claim(job.id)
    assert claimed is not None
    assert (claimed.status, claimed.attempts) == (ImportStatus.RUNNING, 1)
    assert claimed.heartbeat is not None
    assert imports.import_job_claim(job.id) is None  # a second delivery takes nothing


@pytest.mark.django_db
def test_it_takes_over_a_running_job_only_once_its_heartbeat_is_stale(
    fixtures: Path, media: Path, settings: Settings
) -> None:
    settings.COSTLAB_JOB_STALE_SECONDS = 30
    organization = OrganizationFactory.create()
    alive = upload_job(organization, fixtures, **silent_for(10))
    assert imports.import_job_claim(alive.id) is None
    if connection.vendor == "sqlite":
        return  # heartbeats stall on SQLite: only the hour-long limit applies (below)
    dead = upload_job(organization, fixtures, **silent_for(31))
    claimed = imports.import_job_claim(dead.id)
    assert claimed is not None and claimed.attempts == 2


@pytest.mark.django_db
def test_it_waits_an_hour_on_sqlite_where_heartbeats_cannot_be_written(
    settings: Settings,
) -> None:
    settings.COSTLAB_JOB_STALE_SECONDS = 30
    expected = heartbeat.SQLITE_STALE_AFTER if connection.vendor == "sqlite" else None
    assert heartbeat.stale_after() == (expected or timedelta(seconds=30))


@pytest.mark.django_db
def test_it_sweeps_stale_jobs_back_into_the_queue_and_runs_them(
    fixtures: Path,
    media: Path,
    eager: None,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    organization = OrganizationFactory.create()
    lost = upload_job(organization, fixtures, **dead())
    alive = upload_job(organization, fixtures, **silent_for(5))
    cache.set(imports.progress_key(lost), {"conversations": 7})  # the dead attempt's
    with django_capture_on_commit_callbacks(execute=True):
        tasks.import_jobs_sweep()
    assert cache.get(imports.progress_key(lost)) is None
    lost.refresh_from_db()
    alive.refresh_from_db()
    assert (lost.status, lost.attempts) == (ImportStatus.SUCCEEDED, 2)
    assert Conversation.objects.filter(import_job=lost).count() == 1
    assert (alive.status, alive.attempts) == (ImportStatus.RUNNING, 1)


@pytest.mark.django_db
def test_it_fails_a_job_that_lost_its_worker_too_often_or_cannot_run_again(
    fixtures: Path, media: Path, settings: Settings
) -> None:
    settings.COSTLAB_JOB_MAX_ATTEMPTS = 3
    organization = OrganizationFactory.create()
    worn = upload_job(organization, fixtures, **{**dead(), "attempts": 3})
    # A command-line import: its file is on the machine that ran the command.
    command = ImportJob.objects.create(
        organization=organization, original_name="local.jsonl", **dead()
    )
    swept = imports.import_jobs_sweep()
    assert sorted(swept.failed) == sorted([worn.id, command.id]) and not swept.requeued
    worn.refresh_from_db()
    command.refresh_from_db()
    assert worn.status == command.status == ImportStatus.FAILED
    assert "stopped 3 times" in worn.error and "nothing was stored" in worn.error
    assert "stopped before it finished" in command.error


@pytest.mark.django_db
def test_it_claims_a_pending_job_handed_straight_to_the_import(fixtures: Path, media: Path) -> None:
    job = upload_job(OrganizationFactory.create(), fixtures)
    done = imports.import_job_process(job)
    assert (done.status, done.attempts) == (ImportStatus.SUCCEEDED, 1)


@pytest.mark.django_db
def test_it_rolls_back_an_attempt_whose_job_was_taken_over(fixtures: Path, media: Path) -> None:
    job = upload_job(OrganizationFactory.create(), fixtures)
    slow = imports.import_job_claim(job.id)
    assert slow is not None
    # The sweep thought the worker dead and another worker took the job meanwhile.
    ImportJob.objects.filter(id=job.id).update(attempts=2)
    result = imports.import_job_process(slow)
    assert (result.status, result.attempts) == (ImportStatus.RUNNING, 2)
    assert not Conversation.objects.exists()


@needs_second_writer
@pytest.mark.django_db(transaction=True)
def test_it_beats_outside_the_jobs_transaction(
    fixtures: Path, media: Path, settings: Settings
) -> None:
    settings.COSTLAB_JOB_HEARTBEAT_SECONDS = 0.05
    organization = OrganizationFactory.create()
    job = upload_job(organization, fixtures)
    claimed = imports.import_job_claim(job.id)
    assert claimed is not None and claimed.heartbeat is not None
    owned = heartbeat.owned(ImportJob.objects.all(), pk=job.id, attempt=claimed.attempts)
    with heartbeat.beating(owned, pk=job.id) as beat, transaction.atomic():
        Conversation.objects.create(organization=organization, title="uncommitted")
        time.sleep(0.5)
        # Read on a connection of another thread, as the sweep would.
        seen = run_in_thread(lambda: ImportJob.objects.get(id=job.id).heartbeat)
        beat.check()  # still ours
    assert seen is not None and seen > claimed.heartbeat


@needs_second_writer
@pytest.mark.django_db(transaction=True)
def test_it_notices_a_lost_claim_while_beating(
    fixtures: Path, media: Path, settings: Settings
) -> None:
    settings.COSTLAB_JOB_HEARTBEAT_SECONDS = 0.05
    job = upload_job(OrganizationFactory.create(), fixtures)
    claimed = imports.import_job_claim(job.id)
    assert claimed is not None
    owned = heartbeat.owned(ImportJob.objects.all(), pk=job.id, attempt=claimed.attempts)
    with heartbeat.beating(owned, pk=job.id) as beat:
        ImportJob.objects.filter(id=job.id).update(attempts=2)
        deadline = time.monotonic() + 5
        while not beat.lost.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(heartbeat.ClaimLost):
            beat.check()


def run_in_thread(read: Callable[[], T]) -> T:
    """`read()` on a thread of its own, hence on a database connection of its own."""
    box: list[T] = []

    def target() -> None:
        try:
            box.append(read())
        finally:
            connections.close_all()

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    return box[0]


@pytest.mark.django_db
def test_it_queues_a_recompute_as_a_job_and_runs_it(
    eager: None, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    organization = OrganizationFactory.create()
    with django_capture_on_commit_callbacks(execute=True):
        log = pricing_services.costs_recompute_request(organization=organization)
        assert log.status == RecomputeStatus.PENDING
    log.refresh_from_db()
    assert (log.status, log.attempts) == (RecomputeStatus.SUCCEEDED, 1)
    assert log.finished is not None


@pytest.mark.django_db
def test_it_sweeps_a_recompute_whose_worker_died(
    eager: None, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    log = CostRecompute.objects.create(organization=OrganizationFactory.create(), **dead())
    with django_capture_on_commit_callbacks(execute=True):
        swept = pricing_services.costs_recompute_sweep()
    assert swept.requeued == [log.pk]
    log.refresh_from_db()
    assert (log.status, log.attempts) == (RecomputeStatus.SUCCEEDED, 2)


def test_it_sweeps_on_a_schedule_shorter_than_the_stale_limit(settings: Settings) -> None:
    by_task = {entry["task"]: entry for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    for name in ("conversations.tasks.import_jobs_sweep", "pricing.tasks.costs_recompute_sweep"):
        assert by_task[name]["schedule"] < settings.COSTLAB_JOB_STALE_SECONDS
    # A live job misses several beats before anyone calls it dead.
    assert settings.COSTLAB_JOB_HEARTBEAT_SECONDS * 3 <= settings.COSTLAB_JOB_STALE_SECONDS
