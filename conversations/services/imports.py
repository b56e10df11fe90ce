"""Import jobs: an upload or a command-line file, from its job row to its outcome.

An import is all or nothing: everything it creates is written inside one transaction, and
the job row records the outcome. Progress is published through the cache, because rows
written inside that transaction are invisible to the page that polls until it commits.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.core.cache import cache
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from costlab import heartbeat, jobs

from ..formats import parse_files
from ..formats.errors import ParseError, printable
from ..hashing import files_sha256
from ..models import ImportJob, ImportStatus, Organization
from .transcripts import WARNINGS_KEPT, ImportTotals, transcripts_store

logger = logging.getLogger(__name__)


class ImportFailed(Exception):
    """An import that stored nothing; the message names the file, line and field."""


def shown_name(name: str) -> str:
    """A file name as costlab shows it (job list, errors, the terminal): its last path
    component, whichever separator the sender's system uses, with control and format
    characters (terminal escapes, bell, right-to-left overrides) replaced by "?"."""
    return printable(re.split(r"[/\\]", name)[-1] or "upload")[:300]


def progress_key(job: ImportJob) -> str:
    return f"import-progress:{job.code}"


def import_progress_apply(job: ImportJob) -> None:
    """Overlay the live counts a running job's worker publishes (see module docstring).
    The job is not saved: the database keeps only committed outcomes."""
    if job.status != ImportStatus.RUNNING:
        return
    for key, value in (cache.get(progress_key(job)) or {}).items():
        setattr(job, key, value)


def _previous_import(organization: Organization, digest: str) -> ImportJob | None:
    """The succeeded import of the same content into the organization, if any."""
    return ImportJob.objects.filter(
        organization=organization, content_sha256=digest, status=ImportStatus.SUCCEEDED
    ).first()


def _mark_duplicate(
    job: ImportJob, previous: ImportJob, *, rows: QuerySet[ImportJob] | None = None
) -> None:
    """`rows`: the running attempt's owned() row, so a lost claim changes nothing."""
    (rows if rows is not None else ImportJob.objects.filter(id=job.id)).update(
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
    tags: dict[str, str] | None = None,
) -> ImportJob:
    """Store an upload and queue it. The same content already imported into the org
    creates a job marked duplicate and nothing else. `tags` go on every conversation."""
    uploads = [upload] if second_upload is None else [upload, second_upload]
    file_names = [shown_name(u.name or "upload") for u in uploads]
    job = ImportJob(
        organization=organization,
        tags=tags or {},
        created_by_id=user.pk if user.is_authenticated else None,
        original_name=" + ".join(file_names)[:300],
        file_names=file_names,
        format=format,
        size_bytes=sum(u.size or 0 for u in uploads),
    )
    paths = [_save_upload(job, "file", upload)]
    if second_upload is not None:
        paths.append(_save_upload(job, "second_file", second_upload))
    # The content, not the bytes: gzipped, zipped or with CRLF endings, it is the same log.
    job.content_sha256 = _content_sha256(paths)
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


def _content_sha256(paths: list[Path]) -> str:
    return files_sha256(
        paths,
        max_bytes=settings.COSTLAB_MAX_UPLOAD_BYTES,
        max_ratio=settings.COSTLAB_MAX_COMPRESSION_RATIO,
    )


def import_job_claim(job_id: int) -> ImportJob | None:
    """Take a pending job, or one whose worker died (costlab/heartbeat.py): a re-delivered
    task finds its job taken and does nothing."""
    return heartbeat.claim(ImportJob.objects.all(), job_id)


def import_jobs_sweep() -> heartbeat.Swept:
    """Queue again the running jobs whose worker died. A command-line import cannot run
    again (its files are on the machine that ran it): it fails."""
    swept = heartbeat.sweep(ImportJob.objects.all(), rerunnable=~Q(file=""), noun="import")
    # The dead attempt's progress would show until the next attempt publishes its own.
    requeued = ImportJob.objects.filter(pk__in=swept.requeued).only("code")
    cache.delete_many([progress_key(job) for job in requeued])
    for job_id in swept.requeued:
        jobs.enqueue_on_commit(jobs.IMPORT_JOB_RUN, job_id)
    return swept


def _job_paths(job: ImportJob) -> list[Path]:
    paths = [Path(job.file.path)]
    if job.second_file:
        paths.append(Path(job.second_file.path))
    return paths


def _display_names(job: ImportJob, paths: list[Path]) -> dict[Path, str]:
    """Each file's name as errors and "read as" show it: the job's own list of them; a job
    made before it kept one has only original_name (one file: whole, as a name may hold
    " + " itself; two: split at the first " + ", the best it can say)."""
    if len(job.file_names) == len(paths):
        return dict(zip(paths, job.file_names, strict=True))
    if len(paths) == 1:
        return {paths[0]: job.original_name}
    first, _, second = job.original_name.partition(" + ")
    return {paths[0]: first, paths[1]: second or first}


def _job_succeed(
    owned: QuerySet[ImportJob], job: ImportJob, totals: ImportTotals, read_as: list[list[str]]
) -> None:
    """Record the outcome in the import's transaction, if this attempt still owns the job."""
    done = owned.update(
        read_as=read_as,
        status=ImportStatus.SUCCEEDED,
        conversations=totals.conversations,
        turns=totals.turns,
        messages=totals.messages,
        tokens=totals.tokens,
        cost=totals.cost,
        unpriced_turns=totals.unpriced_turns,
        skipped_conversations=totals.skipped,
        warnings=totals.warnings,
        bytes_done=job.size_bytes,
        finished=timezone.now(),
    )
    if not done:
        raise heartbeat.ClaimLost(f"import job {job.id} was taken over by another worker")


def import_job_process(job: ImportJob, *, paths: list[Path] | None = None) -> ImportJob:
    """Parse, analyse and store a claimed job's file(s), all or nothing, keeping the job's
    heartbeat while it runs. A pending job is claimed first; one that cannot be claimed
    (another worker has it) is returned as it is."""
    if job.status == ImportStatus.PENDING:
        claimed = import_job_claim(job.id)
        if claimed is None:
            job.refresh_from_db()
            return job
        job = claimed
    paths = paths if paths is not None else _job_paths(job)
    names = _display_names(job, paths)
    owned = heartbeat.owned(ImportJob.objects.all(), pk=job.id, attempt=job.attempts)
    bytes_done = 0

    with heartbeat.beating(owned, pk=job.id) as beat:

        def on_progress(done: int, total: int) -> None:
            nonlocal bytes_done
            bytes_done = done
            beat.check()

        def on_chunk(totals: ImportTotals) -> None:
            beat.check()
            live = {
                "bytes_done": bytes_done,
                "conversations": totals.conversations,
                "turns": totals.turns,
                "messages": totals.messages,
            }
            cache.set(progress_key(job), live, timeout=24 * 3600)

        file_warnings: list[str] = []
        read_as: list[list[str]] = []
        try:
            with transaction.atomic():
                transcripts = parse_files(
                    paths,
                    format=job.format or None,
                    display_names=names,
                    max_bytes=settings.COSTLAB_MAX_UPLOAD_BYTES,
                    max_record_bytes=settings.COSTLAB_MAX_RECORD_BYTES,
                    max_ratio=settings.COSTLAB_MAX_COMPRESSION_RATIO,
                    on_progress=on_progress,
                    on_warning=file_warnings.append,
                    on_format=lambda name, kind: read_as.append([name, kind]),
                )
                totals = transcripts_store(
                    organization=job.organization,
                    transcripts=transcripts,
                    job=job,
                    on_chunk=on_chunk,
                    tags=job.tags,
                )
                # The files' own warnings first, as `analyze` prints them.
                totals.warnings = [*file_warnings, *totals.warnings][:WARNINGS_KEPT]
                if totals.conversations == 0 and not totals.skipped:
                    raise ImportFailed(f"{job.original_name}: no conversations found in the file")
                _job_succeed(owned, job, totals, read_as)
        except heartbeat.ClaimLost:
            # Another worker runs the job now; this attempt's writes rolled back.
            logger.warning("import job %s: attempt %s lost its claim", job.id, job.attempts)
            job.refresh_from_db()
            return job
        except (ParseError, ImportFailed) as exc:
            # How the files were read stays: it is what a failure is explained by.
            _fail(job, str(exc), rows=owned, read_as=read_as)
        except IntegrityError:
            # Another job with the same content won the race: this one is a duplicate.
            previous = _previous_import(job.organization, job.content_sha256)
            if previous is None:
                logger.exception("import job %s refused by the database", job.id)
                _fail(
                    job,
                    "the database refused a value of this file (a negative or oversized token "
                    "count?); nothing was stored",
                    rows=owned,
                )
                job.refresh_from_db()
                return job
            _mark_duplicate(job, previous, rows=owned)
        except Exception as exc:
            # A bug or a lost database must not leave the job "running" forever; the
            # transaction already rolled back, so nothing of the file is stored.
            logger.exception("import job %s crashed", job.id)
            _fail(
                job,
                f"internal error while importing ({type(exc).__name__}); nothing was stored",
                rows=owned,
            )
            raise
    job.refresh_from_db()
    logger.info("import job %s attempt %s: %s", job.id, job.attempts, job.status)
    cache.delete(progress_key(job))
    return job


def _fail(
    job: ImportJob,
    error: str,
    *,
    rows: QuerySet[ImportJob] | None = None,
    read_as: list[list[str]] | None = None,
) -> None:
    (rows if rows is not None else ImportJob.objects.filter(id=job.id)).update(
        read_as=read_as or [],
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
    tags: dict[str, str] | None = None,
) -> ImportJob:
    """The command-line import: the same job, service and guarantees as an upload."""
    digest = _content_sha256(paths)
    file_names = [shown_name(p.name) for p in paths]
    now = timezone.now()
    job = ImportJob.objects.create(
        organization=organization,
        original_name=" + ".join(file_names)[:300],
        file_names=file_names,
        format=format,
        size_bytes=sum(p.stat().st_size for p in paths),
        content_sha256=digest,
        tags=tags or {},
        status=ImportStatus.RUNNING,
        started=now,
        heartbeat=now,
        attempts=1,
    )
    previous = _previous_import(organization, digest)
    if previous is not None:
        _mark_duplicate(job, previous)
        return job
    return import_job_process(job, paths=paths)
