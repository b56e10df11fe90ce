"""Calls benchmark: the built-in endpoint's own cost per call, and calls per second through the
whole path (page service -> broker -> worker task -> openai SDK -> HTTP -> endpoint -> turn
recorded) beside its floor (the same path without costlab's database work).

    .venv/bin/python bench/calls.py                       # SQLite + filesystem broker under var/
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/costlab_bench \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/3 .venv/bin/python bench/calls.py --chats 20 --turns 10

    .venv/bin/python bench/calls.py --skip-end-to-end --modes bytes   # the endpoint's ratio only
    DATABASE_URL=... CELERY_BROKER_URL=redis://... .venv/bin/python bench/calls.py --skip-endpoint
    .venv/bin/python bench/calls.py --skip-endpoint --skip-floor      # end to end, no floor
    CELERY_BROKER_URL=redis://... .venv/bin/python bench/calls.py --floor-only   # its floor alone
    .venv/bin/python bench/calls.py --skip-end-to-end --modes bytes --user-words 300 --reply-tokens 500

1. Endpoint: a growing conversation (a system prompt of ~1,500 words, then --endpoint-turns
   turns of a --user-words question and a --reply-tokens reply) sent turn after turn to the
   endpoint's per-request code, against the time to tokenize the messages each call adds
   (the floor: encode_message of the previous reply and the new question, fresh copies, the
   same tokenizer: the time to encode the call's new text). The endpoint encodes only what
   it did not write itself: the previous reply, its own output sent back unchanged, keeps
   the tokens it was cut with (found by its text, compared byte for byte; the tokens are
   encode_message's, tests/calls/test_endpoint.py), so a call may take less than encoding
   all its new text would; the question it always encodes. Each call's best of
   --repeat runs. Both sides are timed with the tokenizer equally warm: right before each,
   the call's new messages (other fresh copies) are encoded untimed, and which of the two
   goes first alternates call after call and run after run. The floor used to be timed
   first, cold (20-21 us a call at 60/120, warm 16-17), and the ratio flattered the
   endpoint: on the same code 2.46-2.53x so, 2.96-3.21x now (2.78-3.14x alternated only,
   in another set of runs). Alternated only, the floor timed second was warmed by
   whatever the endpoint had encoded just before, so it depended on the endpoint's code (a
   reply not encoded again left the floor colder, and the ratio lower): with both warmed
   alike it does not. The timed part is
   `simulated.request_read` (the body's bytes to the checked body) and
   `simulated.simulate_usage` (render, cache simulation, the reply's text and the usage):
   all the endpoint does per request but HTTP and Django (the request and its body read off
   the socket, middleware), the key's check and the model's lookup (selectors),
   the fault headers, the response's JSON and the modelled latency's sleep. The answer's
   dict (protocol.Completion, its id included) is timed apart and counted in the ratio; the
   ratio without it is printed too (what the bench timed before it).
   Four ways (--modes): the body's bytes as the SDK sends them, read as the endpoint reads
   them (the history compared as bytes with the conversation's previous body, only the new
   messages parsed: calls/request_body.py), with the read timed; the bytes parsed whole by
   json.loads (as the endpoint did before), timed; and, the parse not timed, requests as
   JSON gives them (new strings: the history's comparison reads every byte of it) and with
   strings shared with the previous request (the history compares by pointer). Target:
   under 2x the floor (mode "bytes" is the endpoint's own path).
2. End to end: a web server (runserver, threaded) and a Celery worker (--pool: prefork, or
   threads; --concurrency: 2) are started; CHATS chats each send TURNS messages, one at a
   time per chat, all chats at once. Target: at least 100 calls/s on 2 cores. On Linux it
   also prints each process's CPU per call (bench, web server, worker, PostgreSQL
   backends) and the database's sessions and commits per call: where the time goes.
   Then its floor (--skip-floor: not; --floor-only: the floor alone, no endpoint part): the
   same web server, command and environment, and a worker with the same flags of
   `-A bench.calls_floor`, costlab's app with one bench-only task (bench/calls_floor.py),
   which makes each call as the real task does (the openai SDK through calls/services/
   calling.py's request path, one client per process, no retries) with the same request
   bodies (the same chats, their questions drawn in the order they are sent, the endpoint's
   replies) and touches no database; it signals each call done by an RPUSH to a Redis list
   the bench BLPOPs (so the floor needs a Redis broker; it is skipped otherwise). Left:
   Celery's publish, the worker's main process and child, the SDK, HTTP, and the endpoint
   (its own key check and model lookup included, cached in its process for seconds: the
   PostgreSQL backends' CPU is about nothing). It prints the floor's calls/s and CPU per call
   by process, then both runs' CPU per call side by side and the share of the end-to-end
   CPU per call above the floor: costlab's own work around the call (the send's rows, the
   claim, the messages read back, the analysis, the turn, the rollups, their statements in
   PostgreSQL), and the bench's polls for finished calls (20 ms apart: one statement each,
   against the floor's BLPOP).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
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


# The end-to-end chats (and the floor's: bench/calls_floor.py builds the same requests).
CHAT_MODEL = "gpt-4o-mini"
CHAT_REPLY_TOKENS = 60  # max_completion_tokens: the endpoint replies with exactly as many
CHAT_QUESTION_WORDS = 40
CHAT_WARM_UP = "hello"  # each chat's first message, before the measured turns
CHAT_API_KEY = "sk-bench"  # development mode: any key is a caller (calls/selectors.py)


def chat_start() -> tuple[random.Random, str]:
    """The chats' random text: their system prompt, and the generator that then draws each
    question (CHAT_QUESTION_WORDS words) in the order the questions are sent."""
    rng = random.Random(5)
    return rng, "You are ACME's assistant. " + _text(rng, 1200)


def _conversation(turns: int, user_words: int) -> tuple[str, list[str]]:
    rng = random.Random(3)
    system = "You are ACME's assistant. " + _text(rng, 1500)
    return system, [_text(rng, user_words) for _ in range(turns)]


def _parsed(value: Any, *, new_strings: bool) -> Any:
    """`value` as a request's JSON parse gives it: new dicts and lists, and new strings too
    unless `new_strings` is off (then they are the very objects sent last time, whose
    comparison is a pointer check: the bench's input until it measured both)."""
    if new_strings:
        return json.loads(json.dumps(value))
    if isinstance(value, dict):
        return {key: _parsed(item, new_strings=False) for key, item in value.items()}
    if isinstance(value, list):
        return [_parsed(item, new_strings=False) for item in value]
    return value


MODES = {
    "bytes": "body bytes as the SDK sends them, read by the endpoint (history compared as bytes)",
    "loads": "body bytes parsed whole by json.loads, then simulated (the endpoint before)",
    "parsed": "requests as JSON gives them (new dicts, new strings), parse not timed",
    "shared": "strings shared with the previous request (compared by pointer), parse not timed",
}


def _endpoint_run(
    turns: int, user_words: int, reply_tokens: int, *, mode: str, run: int = 0
) -> tuple[list[float], list[float], list[float], object]:
    """One conversation sent turn after turn: per call, seconds in the endpoint's part (the
    body read, per `mode`, then simulate_usage), in building the answer (protocol.Completion)
    and to encode the call's new messages (the floor); and the last call. The floor is timed
    before the endpoint in calls whose number plus `run` is even, after it in the others."""
    from calls import protocol, simulated
    from conversations.engine.cache_policy import PREFIX_128
    from conversations.engine.messages import encode_message
    from conversations.engine.profiles import default_profile

    profile = default_profile("gpt-4o")
    simulated.simulate_reset()
    system, questions = _conversation(turns, user_words)
    messages: list[dict[str, object]] = [{"role": "system", "content": system}]
    endpoint: list[float] = []
    answer: list[float] = []
    floor: list[float] = []
    new: list[dict[str, object]] = list(messages)
    call = None

    def read(raw: bytes, reader: Any) -> dict[str, Any]:
        return protocol.request_parse(raw, reader=reader)

    for turn, text in enumerate(questions):
        question = {"role": "user", "content": text}
        messages.append(question)
        new.append(question)
        sent = {"model": "gpt-4o", "messages": messages, "max_completion_tokens": reply_tokens}
        raw = json.dumps(sent, separators=(",", ":"), ensure_ascii=False).encode()
        body: Any = None
        if mode in ("parsed", "shared"):
            body = _parsed(sent, new_strings=mode == "parsed")
        fresh = _parsed(new, new_strings=True)
        warm = _parsed(new, new_strings=True)
        floor_first = not (turn + run) % 2
        if floor_first:
            for message in warm:  # the same warm-up before either side: see the docstring
                encode_message(message, profile)
            started = time.perf_counter()
            for message in fresh:
                encode_message(message, profile)
            floor.append(time.perf_counter() - started)
        for message in warm:
            encode_message(message, profile)
        started = time.perf_counter()
        if mode == "bytes":
            body = simulated.request_read("bench", raw, read)
        elif mode == "loads":
            body = protocol.request_parse(raw)
        call = simulated.simulate_usage(
            org_key="bench",
            body=body,
            now=1_000_000.0 + 10 * turn,  # 6 a minute: below the overflow rate
            profile=profile,
            policy=PREFIX_128,
            retention_seconds=600,
            default_reply_tokens=reply_tokens,
        )
        simulated_at = time.perf_counter()
        endpoint.append(simulated_at - started)
        # The answer as the view builds it (its JSON encoding is Django's JsonResponse).
        protocol.Completion.new(
            model=body["model"], tier=protocol.service_tier(body), call=call, now=0.0
        ).body()
        answer.append(time.perf_counter() - simulated_at)
        if not floor_first:
            for message in warm:
                encode_message(message, profile)
            started = time.perf_counter()
            for message in fresh:
                encode_message(message, profile)
            floor.append(time.perf_counter() - started)
        reply = {"role": "assistant", "content": call.reply}
        messages.append(reply)
        new = [reply]
    return endpoint, answer, floor, call


def endpoint_bench(
    turns: int, user_words: int, reply_tokens: int, repeat: int, modes: list[str]
) -> None:
    from conversations.engine.messages import encode_message
    from conversations.engine.profiles import default_profile

    encode_message({"role": "user", "content": "warm up"}, default_profile("gpt-4o"))
    for number, mode in enumerate(modes):
        words = MODES[mode]
        runs = [
            _endpoint_run(turns, user_words, reply_tokens, mode=mode, run=run)
            for run in range(repeat)
        ]
        # Each call's best over the runs, for both sides alike: a run on a shared machine is
        # interrupted at random calls, while what a call costs (garbage collections
        # included) comes back at the same call every run.
        endpoint = sum(min(times) for times in zip(*(r[0] for r in runs), strict=True))
        answer = sum(min(times) for times in zip(*(r[1] for r in runs), strict=True))
        floor = sum(min(times) for times in zip(*(r[2] for r in runs), strict=True))
        call: Any = runs[-1][3]
        if not number:
            print(
                f"endpoint          {turns} turns of {user_words} words and {reply_tokens} reply "
                f"tokens, last prompt {call.prompt_tokens:,} tokens ({call.cached_tokens:,} "
                f"cached); each call's best of {repeat} runs"
            )
        print(f"  {mode}: {words}")
        print(f"  per call        {endpoint / turns * 1e3:.3f} ms (read, render, simulate, reply)")
        print(f"  answer          {answer / turns * 1e3:.3f} ms per call (protocol.Completion)")
        print(f"  tokenize new    {floor / turns * 1e3:.3f} ms per call (the floor)")
        print(f"  ratio           {(endpoint + answer) / floor:.2f}x the floor (target < 2x)")
        print(f"  without answer  {endpoint / floor:.2f}x (the part timed before)")


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a live process; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _cpu_snapshot(web: int, worker: int) -> dict[str, float]:
    """CPU seconds so far of each part of the path (Linux /proc; empty elsewhere), then the
    database's counters: its time executing statements in this database
    (pg_stat_database.active_time: wall time, waits included), the sessions opened and the
    transactions committed."""
    if not Path("/proc/self/stat").exists():
        return {}
    from django.db import connection

    active_ms = sessions = commits = 0
    backends: list[int] = []
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")  # statistics read afresh
            cursor.execute(
                "SELECT active_time, sessions, xact_commit FROM pg_stat_database "
                "WHERE datname = current_database()"
            )
            active_ms, sessions, commits = cursor.fetchone()
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            backends = [row[0] for row in cursor.fetchall()]
    return {
        "bench (sends, polls)": _proc_cpu(os.getpid()),
        "web server (endpoint)": _proc_cpu(web),
        "worker (main)": _proc_cpu(worker),
        "worker (children)": sum(_proc_cpu(child) for child in _children(worker)),
        # Backends live as long as their sessions (a session opened and closed during the
        # run is missed: see "sessions"); on this machine only.
        "postgres (backends)": sum(_proc_cpu(pid) for pid in backends),
        "db statements (wall)": float(active_ms) / 1000,
        "db sessions": float(sessions),
        "db commits": float(commits),
    }


def _cpu_report(before: dict[str, float], after: dict[str, float], calls: int) -> dict[str, float]:
    """Prints each process's CPU per call and the database's figures per call; returns them
    (seconds, and counts, per call; empty where there are no snapshots)."""
    if not before:
        return {}
    spent = {name: (after[name] - before[name]) / calls for name in after}
    cpu = {name: value for name, value in spent.items() if not name.startswith("db ")}
    print("  per call        CPU by process, us (other helpers' load on the machine excluded)")
    for name, value in cpu.items():
        print(f"    {name:<24}{value * 1e6:8.0f}")
    print(f"    {'all of them':<24}{sum(cpu.values()) * 1e6:8.0f}")
    print(f"    {'db statements (wall)':<24}{spent['db statements (wall)'] * 1e6:8.0f}")
    print(
        f"    sessions {spent['db sessions']:.2f}, commits {spent['db commits']:.1f} per call"
        " (the bench's polls included)"
    )
    return spent


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


def _vacuum() -> None:
    """PostgreSQL: VACUUM ANALYZE the bench's database before it measures. Each run deletes
    what it wrote; with autovacuum off (as on the shared machine) the dead rows stayed in the
    tables and their indexes, and stale statistics picked plans production would not: after
    many runs a send's state query walked 50,427 dead index entries of calls_apicall (0.7 ms).
    Runs then drifted slower one after the other; now each starts from the same state."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE)")


def _servers_start(
    *, port: int, queue: str, app: str, pool: str, concurrency: int, worker_env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """The web server (runserver, the endpoint without its modelled latency) and a Celery
    worker of `app` on its own queue, one command and environment for every run of them: the
    end-to-end part's and its floor's (`worker_env`: the floor's additions, the worker's only)."""
    env = {**os.environ, "COSTLAB_ENDPOINT_LATENCY_MS": "0", "CELERY_QUEUE": queue}
    env["DJANGO_SETTINGS_MODULE"] = "costlab.settings"
    web = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            app,
            "worker",
            "-Q",
            queue,
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            "--loglevel=WARNING",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=ROOT,  # `python -m` puts it on the path: costlab, and bench.calls_floor
        env={**env, **worker_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return web, worker


def _servers_stop(web: subprocess.Popen[bytes], worker: subprocess.Popen[bytes]) -> None:
    worker.terminate()
    web.terminate()
    worker.wait(timeout=30)
    web.wait(timeout=30)


@dataclass(frozen=True)
class Measured:
    """A run of the end-to-end part or of its floor: calls made, seconds, and what
    _cpu_report gave per call (empty off Linux)."""

    calls: int
    seconds: float
    per_call: dict[str, float]


def end_to_end_bench(chats: int, turns: int, concurrency: int, pool: str = "prefork") -> Measured:
    import django

    django.setup()
    from django.core.management import call_command

    from calls.models import ApiCall, CallStatus
    from calls.services import chats as chat_services
    from calls.services.connections import ConnectionSettings, connection_create
    from conversations.models import Organization
    from costlab.celery import app

    call_command("migrate", verbosity=0)
    Organization.objects.filter(slug="bench-calls").delete()
    _vacuum()
    organization = Organization.objects.create(name="bench calls", slug="bench-calls")
    port = _free_port()
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    web, worker = _servers_start(
        port=port, queue=queue, app="costlab", pool=pool, concurrency=concurrency, worker_env={}
    )
    app.conf.task_default_queue = queue
    try:
        _wait_for(port)
        connection = connection_create(
            organization=organization,
            user=None,
            settings=ConnectionSettings(name="built-in", base_url=f"http://127.0.0.1:{port}/v1"),
            api_key=CHAT_API_KEY,
        )
        rng, system_prompt = chat_start()
        options = chat_services.ChatOptions(
            connection=connection,
            model=CHAT_MODEL,
            system_prompt=system_prompt,
            stream=False,
            max_completion_tokens=CHAT_REPLY_TOKENS,
        )
        open_chats = [
            chat_services.chat_create(organization=organization, user=None, options=options)
            for _ in range(chats)
        ]
        # One warm-up call per chat: the worker and the server load their vocabularies.
        waiting = {
            c.pk: chat_services.chat_message_send(chat=c, text=CHAT_WARM_UP) for c in open_chats
        }
        _drain(waiting, ApiCall, CallStatus)
        sent = {c.pk: 1 for c in open_chats}
        cpu_before = _cpu_snapshot(web.pid, worker.pid)
        started = time.perf_counter()
        waiting = {}
        done = 0
        total = chats * (turns - 1)
        by_pk = {c.pk: c for c in open_chats}
        while done < total:
            for pk, chat in by_pk.items():
                if pk not in waiting and sent[pk] < turns:
                    text = _text(rng, CHAT_QUESTION_WORDS)
                    waiting[pk] = chat_services.chat_message_send(chat=chat, text=text)
                    sent[pk] += 1
            finished = _drain(waiting, ApiCall, CallStatus, once=True)
            done += finished
        elapsed = time.perf_counter() - started
        cpu_after = _cpu_snapshot(web.pid, worker.pid)
        failed = ApiCall.objects.filter(organization=organization, status=CallStatus.FAILED)
        print(
            f"end to end        {total} calls in {chats} chats x {turns - 1} turns (after a warm-up)"
        )
        print(f"  wall time       {elapsed:.1f} s, worker {pool} pool of {concurrency}")
        print(f"  calls/s         {total / elapsed:.1f} (target >= 100)")
        per_call = _cpu_report(cpu_before, cpu_after, total)
        if failed.exists():
            example: Any = failed.first()
            print(f"  FAILED          {failed.count()} calls, e.g. {example.error!r}")
    finally:
        _servers_stop(web, worker)
        organization.delete()
    return Measured(total, elapsed, per_call)


POLL_SECONDS = 0.02


def _drain(waiting: dict[int, Any], api_call: Any, status: Any, once: bool = False) -> int:
    """Wait for the waiting calls; forget those that finished; how many did. One small
    statement per look, built once: the bench's own polling should cost the machine (the
    same 2 cores) as little as it can. A look every 20 ms (50 a second for all the chats;
    a chat's page looks once a second, 20 a second for 20 chats): every 5 ms it took 4.7
    looks per call (PostgreSQL's log, 20 chats x 10 turns), each a statement and a commit,
    and a reply seen 20 ms later still finds the queue full (20 chats, 2 worker processes)."""
    from django.db import connection

    sql = f"SELECT id FROM {api_call._meta.db_table} WHERE id IN (%s) AND status IN (%s, %s)"
    finished_count = 0
    with connection.cursor() as cursor:
        while waiting:
            codes = [c.pk for c in waiting.values()]
            marks = ", ".join(["%s"] * len(codes))
            cursor.execute(sql % (marks, "%s", "%s"), [*codes, status.SUCCEEDED, status.FAILED])
            over = {row[0] for row in cursor.fetchall()}
            for chat_pk, call in list(waiting.items()):
                if call.pk in over:
                    del waiting[chat_pk]
                    finished_count += 1
            if once and finished_count:
                return finished_count
            time.sleep(POLL_SECONDS)
    return finished_count


FLOOR_WAIT_SECONDS = 60.0


def floor_bench(chats: int, turns: int, concurrency: int, pool: str = "prefork") -> Measured | None:
    """The end-to-end part without costlab's database work (bench/calls_floor.py): the same
    web server, a worker with the same flags of an app with one task more, the same chats'
    requests sent one turn at a time per chat, all chats at once. None when the broker is not
    Redis, through which the calls say they are done."""
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    broker_url = str(settings.CELERY_BROKER_URL)
    if not broker_url.startswith(("redis://", "rediss://")):
        print("floor             skipped: its calls report through Redis (CELERY_BROKER_URL)")
        return None
    import redis

    from bench import calls_floor
    from costlab.celery import app

    call_command("migrate", verbosity=0)  # the endpoint's key check and model lookup read rows
    port = _free_port()
    queue = f"bench-floor-{uuid.uuid4().hex[:8]}"
    done_list = f"{queue}:done"
    web, worker = _servers_start(
        port=port,
        queue=queue,
        app="bench.calls_floor",
        pool=pool,
        concurrency=concurrency,
        worker_env={
            calls_floor.BASE_URL_ENV: f"http://127.0.0.1:{port}/v1",
            calls_floor.API_KEY_ENV: CHAT_API_KEY,
            calls_floor.DONE_ENV: done_list,
        },
    )
    app.conf.task_default_queue = queue
    broker = redis.Redis.from_url(broker_url)
    try:
        _wait_for(port)
        rng, _ = chat_start()
        asked = {chat: [CHAT_WARM_UP] for chat in range(chats)}
        outcomes: Counter[str] = Counter()
        # One warm-up call per chat, as end to end: the worker's children and the server load
        # their vocabularies (a child builds the endpoint's reply tape too: calls_floor.reply).
        for chat, questions in asked.items():
            calls_floor.chat_call.delay(chat, questions)
        for _ in asked:
            outcomes[_floor_done(broker, done_list, worker)[1]] += 1
        cpu_before = _cpu_snapshot(web.pid, worker.pid)
        started = time.perf_counter()
        waiting: set[int] = set()
        done = 0
        total = chats * (turns - 1)
        while done < total:
            for chat, questions in asked.items():
                if chat not in waiting and len(questions) < turns:
                    questions.append(_text(rng, CHAT_QUESTION_WORDS))
                    calls_floor.chat_call.delay(chat, questions)
                    waiting.add(chat)
            chat, outcome = _floor_done(broker, done_list, worker)
            waiting.discard(chat)
            outcomes[outcome] += 1
            done += 1
        elapsed = time.perf_counter() - started
        cpu_after = _cpu_snapshot(web.pid, worker.pid)
        print(
            f"floor             {total} calls in {chats} chats x {turns - 1} turns (after a "
            "warm-up): the same path without costlab's database work (bench/calls_floor.py)"
        )
        print(f"  wall time       {elapsed:.1f} s, worker {pool} pool of {concurrency}")
        print(f"  calls/s         {total / elapsed:.1f}")
        per_call = _cpu_report(cpu_before, cpu_after, total)
        wrong = {outcome: n for outcome, n in outcomes.items() if outcome != calls_floor.OK}
        if wrong:
            print(f"  NOT AS SENT     {sum(wrong.values())} calls (warm-ups included): {wrong}")
    finally:
        _servers_stop(web, worker)
        broker.delete(done_list)
        broker.close()
    return Measured(total, elapsed, per_call)


def _floor_done(broker: Any, done_list: str, worker: subprocess.Popen[bytes]) -> tuple[int, str]:
    """The next floor call to finish: its chat and outcome (bench/calls_floor.py's RPUSH)."""
    deadline = time.monotonic() + FLOOR_WAIT_SECONDS
    while True:
        popped = broker.blpop([done_list], timeout=1)
        if popped is not None:
            chat, _, outcome = popped[1].decode().partition(" ")
            return int(chat), outcome
        if worker.poll() is not None:
            raise SystemExit(f"the floor's worker exited ({worker.returncode})")
        if time.monotonic() > deadline:
            raise SystemExit(f"no floor call finished in {FLOOR_WAIT_SECONDS:.0f} s")


def floor_compare(path: Measured, floor: Measured) -> None:
    """Each process's CPU per call end to end beside the floor's, and the share of the
    end-to-end CPU per call above the floor."""
    print(
        f"end to end / floor  {path.calls / path.seconds:.1f} / {floor.calls / floor.seconds:.1f} "
        "calls/s"
    )
    if not path.per_call or not floor.per_call:
        return
    print(f"  per call        CPU by process, us {'end to end':>12}{'floor':>8}{'above':>8}")
    names = [name for name in path.per_call if not name.startswith("db ")]
    for name in names:
        e2e, low = path.per_call[name] * 1e6, floor.per_call[name] * 1e6
        print(f"    {name:<31}{e2e:12.0f}{low:8.0f}{e2e - low:8.0f}")
    e2e = sum(path.per_call[name] for name in names) * 1e6
    low = sum(floor.per_call[name] for name in names) * 1e6
    print(f"    {'all of them':<31}{e2e:12.0f}{low:8.0f}{e2e - low:8.0f}")
    print(
        f"  above the floor {(e2e - low) / e2e:.0%} of the end-to-end CPU per call (costlab's "
        "database work: sends, claim, messages read, analysis, turn, rollups; and the bench's "
        "polls)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=10, help="turns per chat (end to end)")
    parser.add_argument("--chats", type=int, default=20)
    # 2: with other jobs on the 2 cores, 4 processes did worse (more switches, and a chat's
    # turn finds the analysis state its previous turn left less often); quiet, 4 did better.
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes (threads)")
    parser.add_argument("--pool", choices=("prefork", "threads"), default="prefork")
    parser.add_argument("--endpoint-turns", type=int, default=200)
    parser.add_argument("--user-words", type=int, default=60, help="words per question (endpoint)")
    parser.add_argument("--reply-tokens", type=int, default=120, help="tokens per reply (endpoint)")
    parser.add_argument(
        "--modes", default=",".join(MODES), help=f"endpoint modes, of {', '.join(MODES)}"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-end-to-end", action="store_true")
    parser.add_argument(
        "--skip-floor",
        action="store_true",
        help="end to end without its floor (bench/calls_floor.py)",
    )
    parser.add_argument(
        "--floor-only", action="store_true", help="the end-to-end floor alone (no endpoint part)"
    )
    parser.add_argument("--skip-endpoint", action="store_true")
    args = parser.parse_args()
    if args.floor_only and (args.skip_floor or args.skip_end_to_end):
        parser.error("--floor-only runs the floor: not with --skip-floor or --skip-end-to-end")
    from conversations.engine import compiled

    print(f"modules           {compiled.status()}")
    if not args.skip_endpoint and not args.floor_only:
        modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
        unknown = [mode for mode in modes if mode not in MODES]
        if unknown:
            parser.error(f"unknown --modes {', '.join(unknown)}: choose of {', '.join(MODES)}")
        endpoint_bench(
            args.endpoint_turns,
            user_words=args.user_words,
            reply_tokens=args.reply_tokens,
            repeat=args.repeat,
            modes=modes,
        )
    path = floor = None
    if not args.skip_end_to_end and not args.floor_only:
        path = end_to_end_bench(args.chats, args.turns, args.concurrency, args.pool)
    if not args.skip_end_to_end and not args.skip_floor:
        floor = floor_bench(args.chats, args.turns, args.concurrency, args.pool)
    if path is not None and floor is not None:
        floor_compare(path, floor)


if __name__ == "__main__":
    main()
