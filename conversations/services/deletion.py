"""Deleting completely: a conversation or an organization goes with its rows, the uploaded
files it came from and what the cache holds about it; uploads are removed on a schedule.

Rows go in one transaction; files and cache entries go once it commits, so a rollback never
leaves rows whose files are gone. The big tables (usage, turns, messages) are emptied with
one DELETE each: Django's cascade would first load every row of them into memory.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from django.core.files.storage import FileSystemStorage, default_storage
from django.db import router, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from .. import what_if
from ..models import (
    Conversation,
    ImportJob,
    ImportStatus,
    Message,
    Organization,
    Turn,
    UsageRecord,
)
from . import rollups
from .imports import progress_key

logger = logging.getLogger(__name__)

UPLOADS = "imports"
# An upload's folder is written before its job row commits: never take a folder that young
# for an orphan.
ORPHAN_GRACE_SECONDS = 3600


def _rows_delete(conversations: QuerySet[Conversation]) -> None:
    """Every row of these conversations; the caller owns the transaction."""
    using = router.db_for_write(Conversation)
    # _raw_delete: one DELETE, no cascade collection (nothing else points at these rows).
    UsageRecord.objects.filter(conversation__in=conversations)._raw_delete(using)
    Turn.objects.filter(conversation__in=conversations)._raw_delete(using)
    Message.objects.filter(conversation__in=conversations)._raw_delete(using)
    # The ORM's delete for the rest, so relations added later are cascaded as declared.
    conversations.delete()


def upload_names(jobs: Iterable[ImportJob]) -> list[str]:
    return [f.name for job in jobs for f in (job.file, job.second_file) if f.name]


def files_delete(names: list[str]) -> None:
    """Remove uploaded files, and their job's folder once it is empty."""
    for name in names:
        default_storage.delete(name)
        if isinstance(default_storage, FileSystemStorage):
            _prune(Path(default_storage.path(name)).parent)


def _prune(folder: Path) -> None:
    """Remove empty folders up to the uploads root."""
    root = Path(default_storage.path(UPLOADS))
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty, or already gone
            return
        folder = folder.parent


def _files_removed(jobs: QuerySet[ImportJob]) -> list[str]:
    """Mark the jobs' files removed, and return their names for removal after commit."""
    names = upload_names(jobs)
    jobs.update(file="", second_file="", files_removed=timezone.now())
    return names


@transaction.atomic
def conversation_delete(*, conversation: Conversation) -> None:
    """The conversation's rows, its cached what-if, and the uploaded file it came from: the
    file holds this conversation too. Other conversations of that file stay."""
    names: list[str] = []
    if conversation.import_job_id is not None:
        names = _files_removed(ImportJob.objects.filter(pk=conversation.import_job_id))
    with rollups.conversations_removed(conversation_ids=[conversation.pk]):
        _rows_delete(Conversation.objects.filter(pk=conversation.pk))
    transaction.on_commit(lambda: files_delete(names))
    transaction.on_commit(lambda: what_if.forget(conversation))


@transaction.atomic
def organization_delete(*, organization: Organization) -> None:
    """Everything of the organization: rows, uploaded files, cache entries."""
    conversations = Conversation.objects.filter(organization=organization)
    keys = [what_if.cache_key(c) for c in conversations.only("code")]
    jobs = ImportJob.objects.filter(organization=organization)
    keys += [progress_key(job) for job in jobs.only("code")]
    names = upload_names(jobs)
    folder = f"{UPLOADS}/{organization.pk}"
    # The organization's row first: an import or a live call in flight has rows pointing
    # at it, so this waits for them to commit before taking the rollup lock they may be
    # waiting for (rollup_lock.organization_lock).
    list(Organization.objects.select_for_update().filter(pk=organization.pk).values("pk"))
    rollups.organization_forget(organization=organization)
    _rows_delete(conversations)
    organization.delete()

    def after() -> None:
        files_delete(names)
        # Anything else under the org's folder: an upload whose job row never committed.
        if isinstance(default_storage, FileSystemStorage):
            shutil.rmtree(default_storage.path(folder), ignore_errors=True)
        cache.delete_many(keys)

    transaction.on_commit(after)


@dataclass
class UploadsSwept:
    removed: int = 0
    orphans: int = 0


def uploads_sweep() -> UploadsSwept:
    """Remove the files of finished imports past their keeping time: a day for failed and
    duplicate uploads (nothing came of them), COSTLAB_UPLOAD_RETENTION_DAYS for the rest;
    and folders that belong to no job."""
    now = timezone.now()
    kept_days = now - timedelta(days=settings.COSTLAB_UPLOAD_RETENTION_DAYS)
    kept_hours = now - timedelta(hours=settings.COSTLAB_FAILED_UPLOAD_RETENTION_HOURS)
    old = ImportJob.objects.exclude(file="", second_file="").filter(
        Q(status=ImportStatus.SUCCEEDED, finished__lt=kept_days)
        | Q(status__in=[ImportStatus.FAILED, ImportStatus.DUPLICATE], finished__lt=kept_hours)
    )
    swept = UploadsSwept()
    with transaction.atomic():
        names = _files_removed(old.select_for_update())
    files_delete(names)
    swept.removed = len(names)
    swept.orphans = _orphans_delete()
    if swept.removed or swept.orphans:
        logger.info("uploads sweep: %s files, %s orphan folders", swept.removed, swept.orphans)
    return swept


def _orphans_delete() -> int:
    """Folders imports/<org>/<job code>/ whose job row does not exist (a crashed upload, a
    job deleted in Django admin)."""
    if not isinstance(default_storage, FileSystemStorage):
        return 0
    root = Path(default_storage.path(UPLOADS))
    folders = [f for f in root.glob("*/*") if f.is_dir()] if root.is_dir() else []
    young = time.time() - ORPHAN_GRACE_SECONDS
    candidates = {f.name: f for f in folders if f.stat().st_mtime < young}
    known = {
        str(code)
        for code in ImportJob.objects.filter(code__in=_uuids(candidates)).values_list(
            "code", flat=True
        )
    }
    removed = 0
    for name, folder in candidates.items():
        if name not in known:
            shutil.rmtree(folder, ignore_errors=True)
            _prune(folder.parent)
            removed += 1
    return removed


def _uuids(names: Iterable[str]) -> list[str]:
    found = []
    for name in names:
        try:
            found.append(str(uuid.UUID(name)))
        except ValueError:
            continue
    return found
