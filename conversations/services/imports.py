"""Import jobs: an upload or a command-line file, from its job row to its outcome.

An import is all or nothing: everything it creates is written inside one transaction, and
the job row records the outcome. Progress is published through the cache, because rows
written inside that transaction are invisible to the page that polls until it commits.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.core.cache import cache
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from costlab import jobs

from ..formats import parse_files
from ..formats.errors import ParseError
from ..hashing import files_sha256
from ..models import ImportJob, ImportStatus, Organization
from .transcripts import WARNINGS_KEPT, ImportTotals, transcripts_store

logger = logging.getLogger(__name__)


class ImportFailed(Exception):
    """An import that stored nothing; the message names the file, line and field."""


def _progress_key(job: ImportJob) -> str:
    return f"import-progress:{job.code}"


def import_progress_apply(job: ImportJob) -> None:
    """Overlay the live counts a running job's worker publishes (see module docstring).
    The job is not saved: the database keeps only committed outcomes."""
    if job.status != ImportStatus.RUNNING:
        return
    for key, value in (cache.get(_progress_key(job)) or {}).items():
        setattr(job, key, value)


def _previous_import(organization: Organization, digest: str) -> ImportJob | None:
    """The succeeded import of the same content into the organization, if any."""
    return ImportJob.objects.filter(
        organization=organization, content_sha256=digest, status=ImportStatus.SUCCEEDED
    ).first()


def _mark_duplicate(job: ImportJob, previous: ImportJob) -> None:
    ImportJob.objects.filter(id=job.id).update(
        status=ImportStatus.DUPLICATE, duplicate_of=previous, finished=timezone.now()
    )
    job.refresh_from_db()


def _save_upload(job: ImportJob, field_name: str, upload: UploadedFile) -> Path:
    """Store the upload; its path on disk."""
    getattr(job, field_name).save(Path(upload.name or "upload").name, upload, save=False)
    return Path(getattr(job, field_name).path)


def import_job_create(
    *,
    organization: Organization,
    user: AbstractBaseUser | AnonymousUser,
    upload: UploadedFile,
    second_upload: UploadedFile | None = None,
    format: str = "",
) -> ImportJob:
    """Store an upload and queue it. The same content already imported into the org
    creates a job marked duplicate and nothing else."""
    job = ImportJob(
        organization=organization,
        created_by_id=user.pk if user.is_authenticated else None,
        original_name=(upload.name or "upload")[:300],
        format=format,
        size_bytes=(upload.size or 0) + ((second_upload.size or 0) if second_upload else 0),
    )
    paths = [_save_upload(job, "file", upload)]
    if second_upload is not None:
        job.original_name = f"{upload.name} + {second_upload.name}"[:300]
        paths.append(_save_upload(job, "second_file", second_upload))
    # The content, not the bytes: gzipped, zipped or with CRLF endings, it is the same log.
    job.content_sha256 = files_sha256(paths, max_bytes=settings.COSTLAB_MAX_UPLOAD_BYTES)
    previous = _previous_import(organization, job.content_sha256)
    if previous is not None:
        job.status = ImportStatus.DUPLICATE
        job.duplicate_of = previous
        job.finished = timezone.now()
        job.save()
        return job
    job.save()
    jobs.enqueue_on_commit(jobs.IMPORT_JOB_RUN, job.id)
    return job


def import_job_claim(job_id: int, *, stale_after: timedelta) -> ImportJob | None:
    """Move a pending job to running with one conditional UPDATE: a re-delivered task
    finds nothing to claim and does nothing. A job 'running' for longer than a task may
    live lost its worker (killed, out of memory); its transaction rolled back, so the
    redelivered task may take it again."""
    now = timezone.now()
    claimable = Q(status=ImportStatus.PENDING) | Q(
        status=ImportStatus.RUNNING, started__lt=now - stale_after
    )
    claimed = ImportJob.objects.filter(claimable, id=job_id).update(
        status=ImportStatus.RUNNING, started=now
    )
    return ImportJob.objects.get(id=job_id) if claimed else None


def _job_paths(job: ImportJob) -> list[Path]:
    paths = [Path(job.file.path)]
    if job.second_file:
        paths.append(Path(job.second_file.path))
    return paths


def _job_succeed(job: ImportJob, totals: ImportTotals) -> None:
    job.status = ImportStatus.SUCCEEDED
    job.conversations, job.turns, job.messages = (
        totals.conversations,
        totals.turns,
        totals.messages,
    )
    job.tokens, job.cost, job.unpriced_turns = totals.tokens, totals.cost, totals.unpriced_turns
    job.skipped_conversations = totals.skipped
    job.warnings = totals.warnings
    job.bytes_done = job.size_bytes
    job.finished = timezone.now()
    job.save()


def import_job_process(job: ImportJob, *, paths: list[Path] | None = None) -> ImportJob:
    """Parse, analyse and store a claimed job's file(s), all or nothing."""
    paths = paths if paths is not None else _job_paths(job)
    names = {paths[0]: job.original_name.split(" + ")[0]}
    if len(paths) > 1:
        names[paths[1]] = job.original_name.split(" + ")[-1]
    bytes_done = 0

    def on_progress(done: int, total: int) -> None:
        nonlocal bytes_done
        bytes_done = done

    def on_chunk(totals: ImportTotals) -> None:
        live = {
            "bytes_done": bytes_done,
            "conversations": totals.conversations,
            "turns": totals.turns,
            "messages": totals.messages,
        }
        cache.set(_progress_key(job), live, timeout=24 * 3600)

    file_warnings: list[str] = []
    try:
        with transaction.atomic():
            transcripts = parse_files(
                paths,
                format=job.format or None,
                display_names=names,
                max_bytes=settings.COSTLAB_MAX_UPLOAD_BYTES,
                on_progress=on_progress,
                on_warning=file_warnings.append,
            )
            totals = transcripts_store(
                organization=job.organization, transcripts=transcripts, job=job, on_chunk=on_chunk
            )
            # The files' own warnings first, as `analyze` prints them.
            totals.warnings = [*file_warnings, *totals.warnings][:WARNINGS_KEPT]
            if totals.conversations == 0 and not totals.skipped:
                raise ImportFailed(f"{job.original_name}: no conversations found in the file")
            _job_succeed(job, totals)
    except (ParseError, ImportFailed) as exc:
        _fail(job, str(exc))
    except IntegrityError:
        # Another job with the same content won the race: this one is a duplicate.
        previous = _previous_import(job.organization, job.content_sha256)
        if previous is None:
            logger.exception("import job %s refused by the database", job.id)
            _fail(
                job,
                "the database refused a value of this file (a negative or oversized token "
                "count?); nothing was stored",
            )
            job.refresh_from_db()
            return job
        _mark_duplicate(job, previous)
    except Exception as exc:
        # A bug or a lost database must not leave the job "running" forever; the
        # transaction already rolled back, so nothing of the file is stored.
        logger.exception("import job %s crashed", job.id)
        _fail(job, f"internal error while importing ({type(exc).__name__}); nothing was stored")
        raise
    job.refresh_from_db()
    cache.delete(_progress_key(job))
    return job


def _fail(job: ImportJob, error: str) -> None:
    ImportJob.objects.filter(id=job.id).update(
        status=ImportStatus.FAILED,
        error=error[:5000],
        finished=timezone.now(),
        conversations=0,
        turns=0,
        messages=0,
    )


def import_path(
    *,
    organization: Organization,
    paths: list[Path],
    format: str = "",
) -> ImportJob:
    """The command-line import: the same job, service and guarantees as an upload."""
    digest = files_sha256(paths, max_bytes=settings.COSTLAB_MAX_UPLOAD_BYTES)
    name = " + ".join(p.name for p in paths)
    job = ImportJob.objects.create(
        organization=organization,
        original_name=name[:300],
        format=format,
        size_bytes=sum(p.stat().st_size for p in paths),
        content_sha256=digest,
        status=ImportStatus.RUNNING,
        started=timezone.now(),
    )
    previous = _previous_import(organization, digest)
    if previous is not None:
        _mark_duplicate(job, previous)
        return job
    return import_job_process(job, paths=paths)
