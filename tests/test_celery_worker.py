"""The upload path end to end with a real Celery worker process and a real broker
(Redis in CI, the filesystem broker otherwise) against the test database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.db import connection
from django.urls import reverse

from conversations import tasks
from conversations.models import Conversation, ImportJob, ImportStatus, UsageRecord
from costlab.celery import app as celery_app

from .factories import MembershipFactory

ROOT = Path(__file__).resolve().parent.parent


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    host, port = db.get("HOST") or "127.0.0.1", db.get("PORT") or 5432
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{host}:{port}/{db['NAME']}"


@pytest.fixture
def worker(settings, tmp_path):
    queue = f"test-{uuid.uuid4().hex[:8]}"
    settings.MEDIA_ROOT = tmp_path / "media"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "costlab.settings",
        "DATABASE_URL": _database_url(),
        "CELERY_QUEUE": queue,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
    }
    previous = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = queue
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "costlab",
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "--loglevel=INFO",
            "-Q",
            queue,
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield process
    celery_app.conf.task_default_queue = previous
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_it_imports_an_upload_with_a_real_worker(client, worker, fixtures):
    membership = MembershipFactory()
    client.force_login(membership.user)
    slug = membership.organization.slug
    with (fixtures / "chat_small.json").open("rb") as handle:
        response = client.post(reverse("imports", args=[slug]), {"file": handle})
    assert response.status_code == 302
    job = ImportJob.objects.get(organization=membership.organization)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.is_finished or worker.poll() is not None:
            break
        time.sleep(0.3)
    if not job.is_finished:
        worker.terminate()
        pytest.fail(f"worker did not finish the job; its log:\n{worker.communicate(timeout=20)[0]}")
    assert job.status == ImportStatus.SUCCEEDED, job.error
    assert (job.conversations, job.turns, job.messages) == (1, 3, 6)
    assert Conversation.objects.filter(organization=membership.organization).count() == 1
    assert (
        UsageRecord.objects.filter(organization=membership.organization, is_billing=True).count()
        == 3
    )
    progress = client.get(
        reverse("import_job_progress", args=[slug, job.code]), headers={"HX-Request": "true"}
    )
    assert progress.status_code == 286  # htmx: stop polling, the job is over
    assert b"Done" in progress.content


@pytest.mark.django_db
def test_it_does_nothing_when_a_task_is_delivered_twice(fixtures, settings, tmp_path):
    from django.core.files import File

    membership = MembershipFactory()
    settings.MEDIA_ROOT = tmp_path
    job = ImportJob(organization=membership.organization, original_name="chat_small.json")
    with (fixtures / "chat_small.json").open("rb") as handle:
        job.file.save("chat_small.json", File(handle), save=True)
    tasks.import_job_run(job.id)
    tasks.import_job_run(job.id)  # re-delivered: the job is no longer pending
    job.refresh_from_db()
    assert job.status == ImportStatus.SUCCEEDED
    assert Conversation.objects.count() == 1
    assert UsageRecord.objects.count() == 3


def test_it_sets_time_limits_on_the_import_task():
    assert tasks.import_job_run.soft_time_limit == tasks.IMPORT_SOFT_TIME_LIMIT
    assert tasks.import_job_run.time_limit == tasks.IMPORT_TIME_LIMIT
    assert tasks.import_job_run.soft_time_limit < tasks.import_job_run.time_limit
    assert tasks.import_job_run.acks_late is True
