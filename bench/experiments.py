"""Experiments benchmark: turns per second of a replay through the whole path (run task ->
threads -> call service -> openai SDK -> HTTP -> built-in endpoint -> turn recorded), and
the time the results page takes.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/costlab_bench \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/3 .venv/bin/python bench/experiments.py \\
        --conversations 50 --turns 20

A web server (runserver, threaded) serves the endpoint and a Celery worker (one process: an
experiment is one task whose threads replay COSTLAB_EXPERIMENT_PARALLEL conversations at
once) runs the experiment: CONVERSATIONS stored conversations of TURNS turns each, under two
variants (gpt-4o full history, gpt-4o-mini window:8), pacing "fast", recorded replies.
On Linux it also prints the worker's and the web server's CPU per turn (/proc, as
bench/calls.py reads it; not PostgreSQL's: the replay threads' sessions end with the run).
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "costlab.dev_settings")

WORDS = (
    "the a to of and in is for on with that this it as be are by from at or an not have "
    "cache prompt token model request history cost latency invoice summary context window "
    "customer support order refund policy shipping account password update report analysis"
).split()


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choices(WORDS, k=words))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the web server did not listen on {port}")


def _transcripts(count: int, turns: int) -> list[Any]:
    from conversations.engine.types import Call, Transcript

    rng = random.Random(7)
    start = datetime(2026, 11, 2, 9, tzinfo=UTC)
    out = []
    for number in range(count):
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": f"Shop {number}. " + _text(rng, 1200)}
        ]
        calls = []
        for turn in range(turns):
            messages.append({"role": "user", "content": _text(rng, 40)})
            calls.append(
                Call(
                    request=list(range(len(messages))),
                    response=len(messages),
                    model="gpt-4o",
                    started_at=start + timedelta(seconds=30 * turn),
                )
            )
            messages.append({"role": "assistant", "content": _text(rng, 60)})
        out.append(Transcript(messages=messages, calls=calls, title=f"bench {number}"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--page-repeat", type=int, default=5)
    args = parser.parse_args()

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import transaction
    from django.test import Client
    from django.urls import reverse

    from bench.calls import _cpu_snapshot
    from calls import selectors
    from calls.services import experiments
    from calls.services.connections import ConnectionSettings, connection_create
    from conversations.models import Conversation, Membership, Organization, Role
    from conversations.services.transcripts import transcripts_store
    from costlab.celery import app

    call_command("migrate", verbosity=0)
    Organization.objects.filter(slug="bench-experiments").delete()
    organization = Organization.objects.create(name="bench experiments", slug="bench-experiments")
    user = get_user_model().objects.create_user(f"bench-{uuid.uuid4().hex[:8]}")
    Membership.objects.create(organization=organization, user=user, role=Role.ANALYST)
    started = time.perf_counter()
    with transaction.atomic():
        transcripts_store(
            organization=organization, transcripts=_transcripts(args.conversations, args.turns)
        )
    print(f"stored            {args.conversations} conversations x {args.turns} turns "
          f"in {time.perf_counter() - started:.1f} s")  # fmt: skip
    port = _free_port()
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "COSTLAB_ENDPOINT_LATENCY_MS": "0", "CELERY_QUEUE": queue}
    env["DJANGO_SETTINGS_MODULE"] = "costlab.settings"
    web = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "costlab", "worker", "-Q", queue,
         "--pool=prefork", "--concurrency=1", "--loglevel=WARNING",
         "--without-heartbeat", "--without-mingle", "--without-gossip"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    app.conf.task_default_queue = queue
    try:
        _wait_for(port)
        connection = connection_create(
            organization=organization,
            user=None,
            settings=ConnectionSettings(name="built-in", base_url=f"http://127.0.0.1:{port}/v1"),
            api_key=f"sk-bench-{uuid.uuid4().hex[:8]}",
        )
        started = time.perf_counter()
        experiment = experiments.experiment_create(
            organization=organization,
            user=None,
            conversations=list(Conversation.objects.filter(organization=organization)),
            variants=[
                experiments.variant_parse("model=gpt-4o,strategy=full"),
                experiments.variant_parse("model=gpt-4o-mini,strategy=window:8"),
            ],
            connection=connection,
        )
        predicted = time.perf_counter() - started
        print(f"prediction        {experiment.turns_total} calls planned and predicted "
              f"in {predicted:.2f} s")  # fmt: skip
        started = time.perf_counter()
        cpu_before = _cpu_snapshot(web.pid, worker.pid)
        experiments.experiment_start(experiment=experiment, membership=None, confirmed=True)
        while not experiment.is_finished:
            time.sleep(0.2)
            experiment.refresh_from_db()
        elapsed = time.perf_counter() - started
        progress = selectors.experiment_progress(experiment)
        print(f"run               {progress.turns_done} turns ({progress.turns_failed} failed), "
              f"status {experiment.status}, in {elapsed:.1f} s")  # fmt: skip
        print(f"  turns/s         {progress.turns_done / elapsed:.1f}")
        if cpu_before and progress.turns_done:
            cpu_after = _cpu_snapshot(web.pid, worker.pid)
            print("  per turn        CPU by process, us (other jobs' load excluded)")
            for name in ("web server (endpoint)", "worker (main)", "worker (children)"):
                spent = (cpu_after[name] - cpu_before[name]) / progress.turns_done
                print(f"    {name:<24}{spent * 1e6:8.0f}")
        results = selectors.experiment_results(experiment)
        for result in results:
            same = sum(t.cached_gap == 0 for t in result.turns)
            print(f"  {result.label:<28} measured = predicted cached tokens on "
                  f"{same}/{len(result.turns)} turns")  # fmt: skip
        started = time.perf_counter()
        selectors.experiment_results(experiment)
        print(f"results selector  {(time.perf_counter() - started) * 1e3:.0f} ms")
        client = Client()
        client.force_login(user)
        url = reverse("experiment_detail", args=[organization.slug, experiment.code])
        times = []
        for _ in range(args.page_repeat):
            started = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - started)
            assert response.status_code == 200
        print(f"results page      median {median(times) * 1e3:.0f} ms over {args.page_repeat} "
              f"loads ({experiment.turns_total} turns)")  # fmt: skip
    finally:
        worker.terminate()
        web.terminate()
        worker.wait(timeout=30)
        web.wait(timeout=30)
        organization.delete()
        user.delete()


if __name__ == "__main__":
    main()
