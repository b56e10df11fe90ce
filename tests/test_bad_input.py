"""The bad-input suite: each probe goes through the upload form over HTTP (a logged-in member
posting it, a real Celery worker importing it) and through the import command (a process of
its own), and must leave every table of the conversations, calls and pricing apps as it was,
except the one ImportJob row that records the failure (failures are recorded there, so the
user can read the error on the job page), with an error naming the file, the line or
record, and the field where there is one. A probe that is not refused (an unknown model,
cached above prompt) says what it stores instead.

The worker's and the command's peak memory (VmHWM, ru_maxrss) stays under MEMORY_BOUND on
each probe: memory is bounded by configuration (COSTLAB_MAX_RECORD_BYTES,
COSTLAB_MAX_COMPRESSION_RATIO), not by the input. Probes are generated under tmp_path.
"""

from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
import sys
import threading
import time
import unicodedata
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.apps import apps
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils.html import escape
from pytest_django import DjangoDbBlocker

from conversations.models import (
    Conversation,
    ImportJob,
    ImportStatus,
    Membership,
    Message,
    Organization,
    UsageRecord,
)
from conversations.services import rollups
from conversations.services.imports import shown_name
from costlab.celery import app as celery_app

from .conftest import ROOT, Worker, Workers, _database_url
from .factories import MembershipFactory

# The documented bound (README, "Limits"): a worker or an import command never needs more.
MEMORY_BOUND = 500 * 1024 * 1024
MB = 1024 * 1024

# Filled as the probes run; printed at the end of the session (pytest -s) as the table of
# the issue note.
FIGURES: list[tuple[str, str, str, int | None, int | None]] = []


def _chat_line(i: int, *, model: str = "gpt-4o-mini", content: str | None = None) -> bytes:
    record = {
        "model": model,
        "messages": [
            {"role": "user", "content": content if content is not None else f"Question {i}?"},
            {"role": "assistant", "content": f"Answer {i}."},
        ],
    }
    return json.dumps(record).encode() + b"\n"


def _api_log_line(usage: dict[str, object], *, model: str = "gpt-4o-mini", n: int = 1) -> bytes:
    record = {
        "request": {"model": model, "messages": [{"role": "user", "content": f"Hi {n}"}]},
        "response": {
            "id": f"r{n}",
            "created": 1746000000 + n,
            "model": model,
            "choices": [{"message": {"role": "assistant", "content": "Hello"}}],
            "usage": usage,
        },
    }
    return json.dumps(record).encode() + b"\n"


def _write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def _chat_json(n: int = 3) -> bytes:
    records = [json.loads(_chat_line(i)) for i in range(n)]
    return json.dumps(records, indent=1).encode()


def _zip_bomb(directory: Path) -> Path:
    """100 MB of valid chat lines, the same line over and over, deflated to ~100 kB."""
    path = directory / "bomb.zip"
    line = _chat_line(1)
    block = line * (MB // len(line))
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open("calls.jsonl", "w", force_zip64=True) as member,
    ):
        for _ in range(100):
            member.write(block)
    return path


def _gzip_bomb(directory: Path) -> Path:
    path = directory / "bomb.jsonl.gz"
    line = _chat_line(1)
    block = line * (MB // len(line))
    with gzip.open(path, "wb", compresslevel=9) as out:
        for _ in range(100):
            out.write(block)
    return path


def _zip_symlink(directory: Path) -> Path:
    path = directory / "linked.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("chat.jsonl", _chat_line(1))
        link = zipfile.ZipInfo("passwd.jsonl")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    return path


def _zip_dotdot(directory: Path) -> Path:
    path = directory / "escape.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("chat.jsonl", _chat_line(1))
        archive.writestr("../../evil.jsonl", _chat_line(2))
    return path


def _one_bad_line(directory: Path) -> Path:
    lines = [_chat_line(i) for i in range(1, 10_001)]
    bad = json.loads(lines[4_999])
    bad["messages"][0]["role"] = "wizard"
    lines[4_999] = json.dumps(bad).encode() + b"\n"
    return _write(directory, "ten_thousand.jsonl", b"".join(lines))


def _huge_string_array(directory: Path) -> Path:
    """One 50 MB string inside the second record of a JSON array (never on disk in git)."""
    path = directory / "huge_string.json"
    with path.open("wb") as out:
        out.write(b"[" + _chat_line(1).strip() + b',\n{"model": "gpt-4o", "messages": [')
        out.write(b'{"role": "user", "content": "')
        for _ in range(50):
            out.write(b"a" * MB)
        out.write(b'"}]}]\n')
    return path


def _huge_string_line(directory: Path) -> Path:
    path = directory / "huge_line.jsonl"
    with path.open("wb") as out:
        out.write(_chat_line(1))
        out.write(b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "')
        for _ in range(50):
            out.write(b"b" * MB)
        out.write(b'"}]}\n')
    return path


def _largest_accepted(directory: Path) -> Path:
    """A message of 8,000,000 characters of prose: just under the default record limit."""
    text = ("lorem ipsum dolor sit amet " * 300_000)[:8_000_000]
    return _write(directory, "largest.jsonl", _chat_line(1, model="gpt-4o", content=text))


def _stored_whole(job: ImportJob) -> None:
    assert (job.conversations, job.turns, job.messages) == (1, 1, 2)
    assert job.tokens > 1_000_000
    assert Message.objects.filter(conversation__organization=job.organization).count() == 2


def _deep(directory: Path) -> Path:
    deep = b"[" * 100_000 + b"]" * 100_000
    line = b'{"messages": [{"role": "user", "content": ' + deep + b"}]}\n"
    return _write(directory, "deep.jsonl", _chat_line(1) + line)


def _truncated(directory: Path) -> Path:
    data = _chat_json(3)
    return _write(directory, "truncated.json", data[: len(data) - 40])


def _utf16(directory: Path) -> Path:
    text = (_chat_line(1) + _chat_line(2)).decode()
    return _write(directory, "windows.jsonl", text.encode("utf-16"))


@dataclass(frozen=True)
class Probe:
    name: str
    build: Callable[[Path], Path]
    # Pieces the error must hold: the file's name, the line or record, the field.
    expect: tuple[str, ...] = ()
    # Refused by the upload form itself (400, no job): nothing to queue.
    at_the_door: bool = False
    # Probes that are not refused: what they store (checked by `verify`).
    stored: bool = False
    verify: Callable[[ImportJob], None] | None = None
    upload_name: str = ""
    tables_changed: frozenset[str] = field(default_factory=frozenset)


def _unpriced(job: ImportJob) -> None:
    records = UsageRecord.objects.filter(organization=job.organization)
    assert records.count() == 2, "one estimated record per turn"
    assert {r.model for r in records} == {"acme-unknown-9000"}
    assert all(r.cost_total is None and r.price_id is None for r in records), "NULL, never 0"
    assert job.cost is None or job.cost == 0
    assert job.unpriced_turns == 2


def _cached_above_prompt(job: ImportJob) -> None:
    (record,) = UsageRecord.objects.filter(organization=job.organization, source="reported")
    assert record.raw is not None
    assert record.raw["prompt_tokens_details"]["cached_tokens"] == 50, "stored as reported"
    assert record.prompt_tokens == 10
    assert record.input_cached + record.input_uncached == record.prompt_tokens
    assert any(
        "cached.jsonl line 1" in w and "usage.prompt_tokens_details.cached_tokens" in w
        for w in job.warnings
    ), job.warnings


STORED_TABLES = frozenset(
    {
        "conversations.Conversation",
        "conversations.Message",
        "conversations.Turn",
        "conversations.UsageRecord",
        "conversations.ImportJob",
        # The rollups of what was stored (written in the same transaction).
        "conversations.UsageDay",
        "conversations.CacheDay",
        "conversations.ConversationDay",
        "conversations.ConversationTotals",
        "conversations.CalibrationGap",
        "conversations.DimensionDay",
        "conversations.BreakerDay",
    }
)

PROBES = [
    Probe(
        "empty file",
        lambda d: _write(d, "empty.jsonl", b""),
        ("empty.jsonl", "empty file"),
        at_the_door=True,
    ),
    Probe(
        "binary garbage",
        lambda d: _write(d, "garbage.json", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 400),
        ("garbage.json", "not JSON"),
    ),
    Probe("truncated JSON", _truncated, ("truncated.json record 3", "malformed JSON")),
    Probe(
        "one bad line in 10,000",
        _one_bad_line,
        ("ten_thousand.jsonl line 5000", "field messages[0].role", "wizard"),
    ),
    Probe("UTF-16", _utf16, ("windows.jsonl", "UTF-16", "UTF-8")),
    Probe(
        "50 MB string in a JSON array",
        _huge_string_array,
        (
            "huge_string.json record 2, field messages[0].content",
            "over the limit of 8,388,608 bytes",
        ),
    ),
    Probe(
        "50 MB string on one JSONL line",
        _huge_string_line,
        ("huge_line.jsonl line 2, field messages[0].content", "over the limit of 8,388,608 bytes"),
    ),
    Probe(
        "largest accepted message (8 MB of text)",
        _largest_accepted,
        stored=True,
        verify=_stored_whole,
        tables_changed=STORED_TABLES,
    ),
    Probe("deep nesting", _deep, ("deep.jsonl line 2", "nested deeper than 100 levels")),
    Probe("zip bomb", _zip_bomb, ("bomb.zip:calls.jsonl", "decompression bomb")),
    Probe("gzip bomb", _gzip_bomb, ("bomb.jsonl.gz", "decompression bomb")),
    Probe("zip with ..", _zip_dotdot, ("escape.zip:../../evil.jsonl", "unsafe member path")),
    Probe("zip with a symlink", _zip_symlink, ("linked.zip:passwd.jsonl", "symbolic link")),
    Probe(
        "prompt_tokens: -5",
        lambda d: _write(d, "negative.jsonl", _api_log_line({"prompt_tokens": -5})),
        ("negative.jsonl line 1", "field response.usage.prompt_tokens", "-5"),
    ),
    Probe(
        "prompt_tokens: 1e30",
        lambda d: _write(d, "absurd.jsonl", _api_log_line({"prompt_tokens": 1e30})),
        ("absurd.jsonl line 1", "field response.usage.prompt_tokens"),
    ),
    Probe(
        "cached_tokens above prompt_tokens",
        lambda d: _write(
            d,
            "cached.jsonl",
            _api_log_line(
                {
                    "prompt_tokens": 10,
                    "completion_tokens": 1,
                    "prompt_tokens_details": {"cached_tokens": 50},
                }
            ),
        ),
        stored=True,
        verify=_cached_above_prompt,
        tables_changed=STORED_TABLES,
    ),
    Probe(
        "unknown model",
        lambda d: _write(
            d,
            "unknown.jsonl",
            _chat_line(1, model="acme-unknown-9000") + _chat_line(2, model="acme-unknown-9000"),
        ),
        stored=True,
        verify=_unpriced,
        tables_changed=STORED_TABLES,
    ),
    Probe(
        "name with separators and control characters",
        # The content is bad on purpose: the error shows the name the user sees.
        lambda d: _write(d, "a\\b\x1b[31m\x07\u202egnp.jsonl", b"{}\nnot json\n"),
        # The command shows "?" for each control character; over HTTP, Django's upload
        # parser has already dropped them. Either way none reaches a page or a terminal.
        ("[31m", "gnp.jsonl line 1"),
        upload_name="../../etc/a\\b\x1b[31m\x07\u202egnp.jsonl",
    ),
]


@pytest.fixture(scope="session")
def probe_files(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Probe], Path]:
    """Each probe's file, built once for both paths (the bombs take seconds to build)."""
    built: dict[str, Path] = {}

    def get(probe: Probe) -> Path:
        if probe.name not in built:
            built[probe.name] = probe.build(tmp_path_factory.mktemp("probe"))
        return built[probe.name]

    return get


def table_counts() -> dict[str, int]:
    """Rows in every table of the apps an import could touch."""
    return {
        model._meta.label: model._base_manager.count()
        for label in ("conversations", "calls", "pricing")
        for model in apps.get_app_config(label).get_models()
    }


def assert_unchanged(before: dict[str, int], after: dict[str, int], probe: Probe) -> None:
    changed = {
        label: (before[label], after[label])
        for label in before
        if before[label] != after[label] and label not in probe.tables_changed
    }
    # The failure is recorded on the job row: exactly one more, nothing else.
    jobs = changed.pop("conversations.ImportJob", None)
    assert jobs is None or jobs[1] == jobs[0] + 1, jobs
    assert not changed, f"{probe.name}: rows changed: {changed}"


def _check_outcome(probe: Probe, job: ImportJob, *, text: str) -> None:
    if probe.stored:
        assert job.status == ImportStatus.SUCCEEDED, job.error
        assert probe.verify is not None
        probe.verify(job)
        assert not rollups.organization_drift(organization=job.organization)
        return
    assert job.status == ImportStatus.FAILED, f"{probe.name}: {job.status}"
    for piece in probe.expect:
        assert piece in text, f"{probe.name}: {piece!r} not in {text!r}"
    hidden = [c for c in text if c not in "\n" and unicodedata.category(c) in ("Cc", "Cf")]
    assert not hidden, f"{probe.name}: control characters in {text!r}"


def _record(
    probe: Probe, path: str, outcome: str, peak: int | None, before: int | None = None
) -> None:
    """`before`: a long-lived worker's resident size when the probe started (its peak
    cannot be less: the heap of earlier probes stays mapped)."""
    FIGURES.append((probe.name, path, outcome, peak, before))
    assert peak is None or peak < MEMORY_BOUND, f"{probe.name}: peak {peak / MB:.0f} MB"


# --- through the import command ------------------------------------------------------------


# manage.py, reporting its own high-water mark as it exits. Read in the process itself:
# the rusage wait4 gives a parent counts the parent's size at fork time in ru_maxrss.
_MEASURED_MANAGE = """
import atexit, os, runpy, sys

def report():
    with open("/proc/self/status") as status:
        (line,) = [x for x in status if x.startswith("VmHWM:")]
    with open(os.environ["COSTLAB_TEST_PEAK_FILE"], "w") as out:
        out.write(line.split()[1])

atexit.register(report)
sys.argv = ["manage.py", *sys.argv[1:]]
runpy.run_path("manage.py", run_name="__main__")
"""


def run_import_command(path: Path, organization: Organization) -> tuple[int, str, int]:
    """(exit code, output, peak resident bytes) of `manage.py import_transcripts` in a
    process of its own against the test database."""
    peak_file = path.parent / f"peak-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "costlab.settings",
        "DATABASE_URL": _database_url(),
        "COSTLAB_TEST_PEAK_FILE": str(peak_file),
    }
    command = [sys.executable, "-c", _MEASURED_MANAGE, "import_transcripts", str(path)]
    result = subprocess.run(
        [*command, "--org", organization.slug],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=300,
        check=False,
    )
    output = result.stdout.decode(errors="replace")
    assert peak_file.exists(), output
    return result.returncode, output, int(peak_file.read_text()) * 1024


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_the_import_command_refuses_bad_input_and_stores_nothing(
    probe: Probe, probe_files: Callable[[Probe], Path]
) -> None:
    membership = MembershipFactory.create()
    path = probe_files(probe)
    before = table_counts()
    code, output, peak = run_import_command(path, membership.organization)
    assert_unchanged(before, table_counts(), probe)
    job = ImportJob.objects.get(organization=membership.organization)
    if probe.stored:
        assert code == 0, output
    else:
        assert code != 0, output
        assert "Traceback" not in output, output
        assert "Nothing was stored." in output
        # The terminal gets no control character from a file name.
        assert "\x1b" not in output and "\x07" not in output
    _check_outcome(probe, job, text=output)
    _record(probe, "command", job.status, peak)


# --- through the upload form and a real worker ---------------------------------------------


def _status(worker: Worker, key: str) -> int:
    status = Path(f"/proc/{worker.pid}/status").read_text()
    (line,) = [x for x in status.splitlines() if x.startswith(f"{key}:")]
    return int(line.split()[1]) * 1024


def _peak(worker: Worker) -> int:
    return _status(worker, "VmHWM")


def _reset_peak(worker: Worker) -> int:
    """Reset the worker's high-water mark to its current resident size (proc(5): "5" to
    clear_refs); that size."""
    Path(f"/proc/{worker.pid}/clear_refs").write_text("5")
    return _status(worker, "VmRSS")


@pytest.fixture(scope="module")
def module_workers(
    django_db_setup: None,
    django_db_blocker: DjangoDbBlocker,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[Worker]]:
    """Two real workers for all the HTTP probes (starting one per probe would cost more than
    the probes): the duplicate-upload probe needs two to race."""
    from django.conf import settings

    queue = f"test-bad-{uuid.uuid4().hex[:8]}"
    with django_db_blocker.unblock():
        url = _database_url()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "costlab.settings",
        "DATABASE_URL": url,
        "CELERY_QUEUE": queue,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
    }
    previous = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = queue
    started = Workers(env=env, queue=queue, tmp_path=tmp_path_factory.mktemp("workers"))
    workers = [started.start(), started.start()]
    yield workers
    celery_app.conf.task_default_queue = previous
    started.stop_all()


def _wait(jobs: list[ImportJob], workers: list[Worker], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in jobs:
            job.refresh_from_db()
        if all(job.is_finished for job in jobs):
            return
        if any(w.poll() is not None for w in workers):
            break
        time.sleep(0.2)
    logs = "\n".join(w.log() for w in workers)
    pytest.fail(f"the workers did not finish {[j.status for j in jobs]}; logs:\n{logs}")


def _post(client: Client, membership: Membership, path: Path, name: str) -> tuple[int, bytes]:
    """(status, page) of posting the upload form."""
    upload = SimpleUploadedFile(name, path.read_bytes())
    response = client.post(
        reverse("imports", args=[membership.organization.slug]), {"file": upload}
    )
    return response.status_code, response.content


@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_the_upload_form_refuses_bad_input_and_stores_nothing(
    probe: Probe,
    probe_files: Callable[[Probe], Path],
    client: Client,
    module_workers: list[Worker],
) -> None:
    membership = MembershipFactory.create()
    client.force_login(membership.user)
    path = probe_files(probe)
    before = table_counts()
    resident = max(_reset_peak(worker) for worker in module_workers)
    status, content = _post(client, membership, path, probe.upload_name or path.name)
    if probe.at_the_door:
        assert status == 400
        assert_unchanged(before, table_counts(), probe)
        assert not ImportJob.objects.filter(organization=membership.organization).exists()
        for piece in probe.expect:
            assert piece.encode() in content, piece
        # The form answered in the web process; no worker ran.
        _record(probe, "upload form", "refused by the form (400)", None)
        return
    assert status == 302
    job = ImportJob.objects.get(organization=membership.organization)
    _wait([job], module_workers)
    peak = max(_peak(worker) for worker in module_workers)
    assert_unchanged(before, table_counts(), probe)
    page = client.get(reverse("import_job_detail", args=[membership.organization.slug, job.code]))
    assert page.status_code == 200
    _check_outcome(probe, job, text=job.error)
    if not probe.stored:
        # The page shows the same located error (escaped as HTML).
        assert escape(job.error[:200]).encode() in page.content
    assert "/" not in job.original_name and "\x1b" not in job.original_name
    _record(probe, "upload + worker", job.status, peak, resident)


@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_the_same_file_uploaded_twice_at_once_is_imported_once(
    tmp_path: Path, module_workers: list[Worker]
) -> None:
    membership = MembershipFactory.create()
    path = _write(tmp_path, "twice.jsonl", b"".join(_chat_line(i) for i in range(200)))
    barrier = threading.Barrier(2)
    codes: list[int] = []

    def post() -> None:
        client = Client()
        client.force_login(membership.user)
        try:
            barrier.wait(timeout=30)
            codes.append(_post(client, membership, path, path.name)[0])
        finally:
            connection.close()  # this thread's own connection

    resident = max(_reset_peak(worker) for worker in module_workers)
    threads = [threading.Thread(target=post) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert codes == [302, 302]
    jobs = list(ImportJob.objects.filter(organization=membership.organization))
    assert len(jobs) == 2
    _wait(jobs, module_workers)
    statuses = sorted(job.status for job in jobs)
    assert statuses == [ImportStatus.DUPLICATE, ImportStatus.SUCCEEDED], [
        (j.status, j.error) for j in jobs
    ]
    assert Conversation.objects.filter(organization=membership.organization).count() == 200
    peak = max(_peak(worker) for worker in module_workers)
    probe = Probe("same file uploaded twice at once", lambda d: path)
    _record(probe, "2 uploads + 2 workers", " + ".join(statuses), peak, resident)


@pytest.fixture(scope="module", autouse=True)
def print_figures() -> Iterator[None]:
    yield
    if FIGURES:
        print("\n| probe | path | outcome | peak memory | resident at start |")
        print("|---|---|---|---|---|")
        for name, path, outcome, peak, before in FIGURES:
            shown = "n/a" if peak is None else f"{peak / MB:.0f} MB"
            start = "" if before is None else f"{before / MB:.0f} MB"
            print(f"| {name} | {path} | {outcome} | {shown} | {start} |")


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ("../../etc/passwd.jsonl", "passwd.jsonl"),
        ("C:\\Users\\me\\chats.jsonl", "chats.jsonl"),
        ("a\x1b[31m\x07b.jsonl", "a?[31m?b.jsonl"),
        ("\u202egnp.jsonl", "?gnp.jsonl"),
        ("dir/", "upload"),
    ],
)
def test_it_shows_a_file_name_without_its_path_or_control_characters(sent: str, shown: str) -> None:
    # Django's upload parser drops most of these already; the command passes names as they
    # are on disk, so the service cleans them for both.
    assert shown_name(sent) == shown
