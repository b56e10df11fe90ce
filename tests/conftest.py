import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.backends.base.creation import BaseDatabaseCreation
from pytest_django import Settings

from conversations.engine import compiled
from costlab.celery import app as celery_app

ROOT = Path(__file__).resolve().parent.parent
# Outside material lives beside the checkout (../shared/oracles), in CI too; never copied in.
ORACLES = ROOT.parent / "shared" / "oracles"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def pytest_report_header() -> str:
    return f"costlab: {compiled.status()}"


# Fixtures that spy on calls between compiled modules: a test using one is pure_python.
SPY_FIXTURES = frozenset({"encoded"})


@pytest.hookimpl(tryfirst=True)  # (before -m selects by marker)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that patch a module's internals (a spy on a function another module calls)
    see nothing when that module is compiled: its calls are direct. They run when the
    sources do, and `make test` runs them again so (COSTLAB_COMPILED=off)."""
    active = compiled.active()
    skip = pytest.mark.skip(reason="patches a module's internals: runs with COSTLAB_COMPILED=off")
    for item in items:
        if SPY_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.pure_python)
        if active and item.get_closest_marker("pure_python"):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def serialized_rollback_after_any_flush() -> Iterator[None]:
    """A transactional test without serialized_rollback ends with a flush and post_migrate,
    which creates content types and permissions again under new ids; a later test with
    serialized_rollback (the browser tests) then restores the originals under their old ids
    and collides on (app_label, model). Those recreated rows go before the restore."""
    original = BaseDatabaseCreation.deserialize_db_from_string

    def deserialize(self: BaseDatabaseCreation, data: str) -> None:
        ContentType.objects.using(self.connection.alias).all().delete()
        original(self, data)
        ContentType.objects.clear_cache()

    BaseDatabaseCreation.deserialize_db_from_string = deserialize  # type: ignore[method-assign]
    yield
    BaseDatabaseCreation.deserialize_db_from_string = original  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def fast_passwords(settings: Settings) -> None:
    # Factory users and the login form both hash; the default hasher costs ~1 s a test.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def oracles() -> Path:
    if not ORACLES.is_dir():
        pytest.fail(f"{ORACLES} is missing: tests need ../shared/oracles beside the checkout")
    return ORACLES


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    host, port = db.get("HOST") or "127.0.0.1", db.get("PORT") or 5432
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{host}:{port}/{db['NAME']}"


class Worker(subprocess.Popen[bytes]):
    """A Celery worker process that knows where its log goes (tests print it on failure).
    It leads its own process group, so a test can kill it with everything it started."""

    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(self.pid, sig)


class Workers:
    """Starts Celery workers on one queue of their own, and stops them all at the end."""

    def __init__(self, *, env: dict[str, str], queue: str, tmp_path: Path) -> None:
        self.env, self.queue, self.tmp_path = env, queue, tmp_path
        self.started: list[tuple[Worker, IO[str]]] = []

    def start(self, *, beat: bool = False) -> Worker:
        """A solo-pool worker; with `beat`, Celery beat runs inside it (the sweeps)."""
        n = len(self.started) + 1
        log_path = self.tmp_path / f"worker-{n}.log"
        log = log_path.open("w")
        command = [
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
            self.queue,
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
        ]
        if beat:
            command += ["--beat", "--schedule", str(self.tmp_path / f"beat-{n}")]
        process = Worker(
            command,
            cwd=ROOT,
            env=self.env,
            # A file, not a pipe: a chatty worker must never block on a full pipe.
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process.log_path = log_path
        self.started.append((process, log))
        return process

    def stop_all(self) -> None:
        for process, log in self.started:
            process.kill_group(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill_group(signal.SIGKILL)
                process.wait()
            log.close()


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[Workers]:
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
    started = Workers(env=env, queue=queue, tmp_path=tmp_path)
    yield started
    celery_app.conf.task_default_queue = previous
    started.stop_all()


@pytest.fixture
def worker(workers: Workers) -> Worker:
    return workers.start()
