"""Dedupe on content, not bytes: the same log gzipped, zipped or with CRLF endings is the
same upload."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from conversations.hashing import file_sha256, files_sha256
from conversations.models import Conversation, ImportStatus
from conversations.services import imports

from .factories import MembershipFactory

LOG = (
    b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
    b'{"messages": [{"role": "user", "content": "a\\r\\nb"}, {"role": "assistant", "content": "ok"}]}\n'
)


def _variants(tmp_path: Path) -> dict[str, Path]:
    paths = {
        "plain": tmp_path / "log.jsonl",
        "crlf": tmp_path / "log-windows.jsonl",
        "cr": tmp_path / "log-classic-mac.jsonl",
        "gzip": tmp_path / "log.jsonl.gz",
        "zip": tmp_path / "log.zip",
    }
    paths["plain"].write_bytes(LOG)
    paths["crlf"].write_bytes(LOG.replace(b"\n", b"\r\n"))
    paths["cr"].write_bytes(LOG.replace(b"\n", b"\r"))
    paths["gzip"].write_bytes(gzip.compress(LOG.replace(b"\n", b"\r\n")))
    with zipfile.ZipFile(paths["zip"], "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("export/log.jsonl", LOG)
    return paths


def test_it_hashes_the_content_whatever_the_container_and_line_endings(tmp_path: Path) -> None:
    digests = {name: file_sha256(path) for name, path in _variants(tmp_path).items()}
    assert len(set(digests.values())) == 1, digests
    # ... and only the line endings: an escaped "\r\n" inside a JSON string is content.
    other = tmp_path / "other.jsonl"
    other.write_bytes(LOG.replace(b"a\\r\\nb", b"a\\nb"))
    assert file_sha256(other) != digests["plain"]


def test_it_hashes_a_crlf_split_across_reads_as_one_line_ending(tmp_path: Path) -> None:
    # The read size is 1 MiB: put a CR as the last byte of the first read.
    body = b"x" * (1024 * 1024 - 1)
    split = tmp_path / "split.jsonl"
    split.write_bytes(body + b"\r\n" + b"y")
    unix = tmp_path / "unix.jsonl"
    unix.write_bytes(body + b"\n" + b"y")
    assert file_sha256(split) == file_sha256(unix)


def test_it_stops_reading_a_bomb_at_the_limit(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.jsonl.gz"
    bomb.write_bytes(gzip.compress(b" " * 5_000_000))
    small = tmp_path / "small.jsonl.gz"
    small.write_bytes(gzip.compress(b" " * 3_000_000))
    # Both are past a 1 MB limit: equal prefixes, flagged as over it; never read whole.
    assert files_sha256([bomb], max_bytes=1_000_000) == files_sha256([small], max_bytes=1_000_000)
    assert file_sha256(bomb) != file_sha256(small)


@pytest.mark.django_db
def test_it_imports_the_same_content_once_through_the_upload_form(tmp_path: Path) -> None:
    membership = MembershipFactory.create()
    org = membership.organization
    jobs = []
    for name, path in _variants(tmp_path).items():
        upload = SimpleUploadedFile(path.name, path.read_bytes())
        job = imports.import_job_create(organization=org, user=membership.user, upload=upload)
        if job.status == ImportStatus.PENDING:
            job = imports.import_job_process(job)  # a pending job is claimed first
        jobs.append((name, job.status))
    assert jobs == [
        ("plain", ImportStatus.SUCCEEDED),
        ("crlf", ImportStatus.DUPLICATE),
        ("cr", ImportStatus.DUPLICATE),
        ("gzip", ImportStatus.DUPLICATE),
        ("zip", ImportStatus.DUPLICATE),
    ]
    assert Conversation.objects.filter(organization=org).count() == 2
