"""The upload path end to end with a real Celery worker process and a real broker
(Redis in CI, the filesystem broker otherwise) against the test database."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse
from pytest_django import Settings

from conversations import tasks
from conversations.models import Conversation, ImportJob, ImportStatus, UsageRecord

from .conftest import Worker
from .factories import MembershipFactory


@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_it_imports_an_upload_with_a_real_worker(
    client: Client, worker: Worker, fixtures: Path
) -> None:
    membership = MembershipFactory.create()
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
        pytest.fail(f"worker did not finish the job; its log:\n{worker.log_path.read_text()}")
    assert job.status == ImportStatus.SUCCEEDED, job.error
    assert (job.conversations, job.turns, job.messages) == (1, 3, 6)
    assert Conversation.objects.filter(organization=membership.organization).count() == 1
    records = UsageRecord.objects.filter(organization=membership.organization)
    # Three turns estimated; the trailing request got no reply, so two are billed.
    assert (records.count(), records.filter(is_billing=True).count()) == (3, 2)
    progress = client.get(
        reverse("import_job_progress", args=[slug, job.code]), headers={"HX-Request": "true"}
    )
    assert progress.status_code == 286  # htmx: stop polling, the job is over
    assert b"Done" in progress.content


@pytest.mark.django_db
def test_it_does_nothing_when_a_task_is_delivered_twice(
    fixtures: Path, settings: Settings, tmp_path: Path
) -> None:
    from django.core.files import File

    membership = MembershipFactory.create()
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


def test_it_sets_time_limits_on_the_import_task() -> None:
    assert tasks.import_job_run.soft_time_limit == tasks.IMPORT_SOFT_TIME_LIMIT
    assert tasks.import_job_run.time_limit == tasks.IMPORT_TIME_LIMIT
    assert tasks.import_job_run.soft_time_limit < tasks.import_job_run.time_limit
    assert tasks.import_job_run.acks_late is True
