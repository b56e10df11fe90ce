import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection
from pytest_django import Settings

from costlab.celery import app as celery_app

ROOT = Path(__file__).resolve().parent.parent
# Outside material lives beside the checkout (../shared/oracles), in CI too; never copied in.
ORACLES = ROOT.parent / "shared" / "oracles"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


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
    """A Celery worker process that knows where its log goes (tests print it on failure)."""

    log_path: Path


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[Worker]:
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
    log_path = tmp_path / "worker.log"
    log = log_path.open("w")
    process = Worker(
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
        # A file, not a pipe: a chatty worker must never block on a full pipe.
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    process.log_path = log_path
    yield process
    celery_app.conf.task_default_queue = previous
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()
