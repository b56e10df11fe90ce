"""Deleting is complete: a conversation or an organization goes with its rows, its uploaded
files and its cache entries; the uploads sweep removes files past their keeping time."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.apps import apps
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings

from conversations import tasks, what_if
from conversations.models import (
    Conversation,
    ImportJob,
    ImportStatus,
    Membership,
    Message,
    Organization,
    Role,
    Turn,
    UsageRecord,
)
from conversations.services import deletion, imports
from pricing.models import CostRecompute

from .factories import MembershipFactory, ModelPriceFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def media(settings: Settings, tmp_path: Path) -> Path:
    root = tmp_path / "media"
    settings.MEDIA_ROOT = root
    return root


def two_conversations(tmp_path: Path, tag: str) -> Path:
    path = tmp_path / f"{tag}.jsonl"
    lines = [
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "user", "content": f"{tag} question {n}"},
                {"role": "assistant", "content": f"{tag} answer {n}"},
            ],
        }
        for n in (1, 2)
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def uploaded(membership: Membership, path: Path, client: Client) -> ImportJob:
    """An upload through the page, imported by the task as a worker would run it."""
    client.force_login(membership.user)
    with path.open("rb") as handle:
        response = client.post(
            reverse("imports", args=[membership.organization.slug]), {"file": handle}
        )
    assert response.status_code == 302
    job = ImportJob.objects.filter(organization=membership.organization).latest("id")
    tasks.import_job_run(job.id)
    job.refresh_from_db()
    assert job.status == ImportStatus.SUCCEEDED, job.error
    return job


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def table_counts() -> dict[str, int]:
    """Rows per table; log-in sessions come and go with the test client, not with data."""
    return {
        m._meta.label: m._default_manager.count()
        for m in apps.get_models()
        if m._meta.label != "sessions.Session"
    }


def test_it_deletes_a_conversation_with_its_rows_file_and_cached_what_if(
    client: Client,
    media: Path,
    tmp_path: Path,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    membership = MembershipFactory.create(role=Role.ANALYST)
    job = uploaded(membership, two_conversations(tmp_path, "pair"), client)
    upload = media / job.file.name
    assert upload.is_file()
    doomed, kept = Conversation.objects.filter(import_job=job).order_by("id")
    slug = membership.organization.slug
    what_if_url = reverse("conversation_what_if", args=[slug, doomed.code])
    assert client.get(what_if_url).status_code == 200
    assert cache.get(what_if.cache_key(doomed))
    kept_rows = (kept.messages.count(), kept.turns.count(), kept.usage_records.count())

    # Files and cache entries go once the deletion commits.
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("conversation_delete", args=[slug, doomed.code]))

    assert response.status_code == 302 and response["Location"].endswith(f"/o/{slug}/")
    assert not Conversation.objects.filter(pk=doomed.pk).exists()
    assert not Message.objects.filter(conversation_id=doomed.pk).exists()
    assert not Turn.objects.filter(conversation_id=doomed.pk).exists()
    assert not UsageRecord.objects.filter(conversation_id=doomed.pk).exists()
    assert (kept.messages.count(), kept.turns.count(), kept.usage_records.count()) == kept_rows
    # The uploaded file held the deleted conversation too: it is gone, folder and all.
    assert not upload.exists() and not upload.parent.exists()
    job.refresh_from_db()
    assert job.file.name == "" and job.files_removed is not None
    assert cache.get(what_if.cache_key(doomed)) is None
    page = client.get(reverse("import_job_detail", args=[slug, job.code])).content.decode()
    assert "data-files-removed" in page
    assert client.get(what_if_url).status_code == 404


def test_it_lets_only_analysts_and_admins_delete_a_conversation(
    client: Client, media: Path, tmp_path: Path
) -> None:
    analyst = MembershipFactory.create(role=Role.ANALYST)
    uploaded(analyst, two_conversations(tmp_path, "keep"), client)
    viewer = MembershipFactory.create(organization=analyst.organization, role=Role.VIEWER)
    client.force_login(viewer.user)
    conversation = Conversation.objects.filter(organization=analyst.organization).first()
    assert conversation is not None
    detail = reverse("conversation_detail", args=[analyst.organization.slug, conversation.code])
    assert "delete-conversation" not in client.get(detail).content.decode()
    delete = reverse("conversation_delete", args=[analyst.organization.slug, conversation.code])
    assert client.post(delete).status_code == 403
    assert client.get(delete).status_code == 405
    assert Conversation.objects.filter(pk=conversation.pk).exists()
    client.force_login(analyst.user)
    assert "delete-conversation" in client.get(detail).content.decode()


def test_it_deletes_an_organization_leaving_tables_and_disk_as_before_it(
    client: Client,
    media: Path,
    tmp_path: Path,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    # Another organization, with data of its own, must come through untouched.
    other = MembershipFactory.create(role=Role.ANALYST)
    uploaded(other, two_conversations(tmp_path, "other"), client)
    admin_user, viewer_user = UserFactory.create(), UserFactory.create()
    counts_before, files_before = table_counts(), files_under(media)

    doomed = MembershipFactory.create(user=admin_user, role=Role.ADMIN).organization
    MembershipFactory.create(user=viewer_user, organization=doomed, role=Role.VIEWER)
    admin = Membership.objects.get(user=admin_user, organization=doomed)
    jobs = [uploaded(admin, two_conversations(tmp_path, tag), client) for tag in ("a", "b")]
    ModelPriceFactory.create(model="gpt-4o", organization=doomed)
    CostRecompute.objects.create(organization=doomed, status="succeeded")
    conversation = Conversation.objects.filter(organization=doomed).first()
    assert conversation is not None
    what_if.conversation_what_if(conversation)
    cache.set(imports.progress_key(jobs[0]), {"conversations": 1})
    # An upload whose job row never committed (the web process died in between).
    stray = media / "imports" / str(doomed.pk) / "lost-upload"
    stray.mkdir(parents=True)
    (stray / "half.jsonl").write_text("{}")
    assert table_counts() != counts_before and files_under(media) != files_before

    with django_capture_on_commit_callbacks(execute=True):
        deletion.organization_delete(organization=doomed)

    assert table_counts() == counts_before
    assert files_under(media) == files_before
    assert cache.get(what_if.cache_key(conversation)) is None
    assert cache.get(imports.progress_key(jobs[0])) is None
    assert not Organization.objects.filter(pk=doomed.pk).exists()


def test_it_deletes_an_organization_from_django_admin_through_the_service(
    client: Client,
    media: Path,
    tmp_path: Path,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    membership = MembershipFactory.create()
    job = uploaded(membership, two_conversations(tmp_path, "admin"), client)
    assert (media / job.file.name).is_file()
    operator = UserFactory.create(is_staff=True, is_superuser=True)
    client.force_login(operator)
    organization = membership.organization
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:conversations_organization_delete", args=[organization.pk]),
            {"post": "yes"},
        )
    assert response.status_code == 302
    assert not Organization.objects.filter(pk=organization.pk).exists()
    assert not (media / "imports" / str(organization.pk)).exists()


def aged_job(organization: Organization, status: str, age: timedelta, name: str) -> ImportJob:
    job = ImportJob(
        organization=organization, original_name=name, status=status, content_sha256=name
    )
    job.file.save(name, ContentFile(b"{}"), save=False)
    job.finished = timezone.now() - age
    job.save()
    return job


def test_it_sweeps_uploads_past_their_keeping_time(media: Path, settings: Settings) -> None:
    settings.COSTLAB_UPLOAD_RETENTION_DAYS = 30
    settings.COSTLAB_FAILED_UPLOAD_RETENTION_HOURS = 24
    org = MembershipFactory.create().organization
    day, hour = timedelta(days=1), timedelta(hours=1)
    gone = [
        aged_job(org, ImportStatus.SUCCEEDED, 31 * day, "old.jsonl"),
        aged_job(org, ImportStatus.FAILED, 25 * hour, "failed.jsonl"),
        aged_job(org, ImportStatus.DUPLICATE, 25 * hour, "duplicate.jsonl"),
    ]
    kept = [
        aged_job(org, ImportStatus.SUCCEEDED, 29 * day, "recent.jsonl"),
        aged_job(org, ImportStatus.FAILED, 23 * hour, "just-failed.jsonl"),
        aged_job(org, ImportStatus.PENDING, 40 * day, "waiting.jsonl"),
    ]
    old_orphan = media / "imports" / str(org.pk) / "0b3c5a3e-5d1e-4a57-9a53-6f1f2b0c1d2e"
    young_orphan = media / "imports" / str(org.pk) / "5f0c0a3e-5d1e-4a57-9a53-6f1f2b0c1d2e"
    for folder in (old_orphan, young_orphan):
        folder.mkdir(parents=True)
        (folder / "upload.jsonl").write_text("{}")
    two_hours_ago = time.time() - 2 * 3600
    os.utime(old_orphan, (two_hours_ago, two_hours_ago))
    paths = {job.pk: media / job.file.name for job in gone + kept}

    tasks.uploads_sweep()

    for job in gone:
        job.refresh_from_db()
        assert not paths[job.pk].exists() and job.file.name == "", job.original_name
        assert job.files_removed is not None
    for job in kept:
        job.refresh_from_db()
        assert paths[job.pk].is_file() and job.file.name, job.original_name
    assert not old_orphan.exists() and young_orphan.is_dir()
    assert deletion.uploads_sweep().removed == 0  # nothing left to do


def test_it_sweeps_uploads_every_hour(settings: Settings) -> None:
    by_task = {entry["task"]: entry for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert by_task["conversations.tasks.uploads_sweep"]["schedule"] == 3600
