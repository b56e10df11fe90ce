"""Demo data for `make run`: a few conversations that show what costlab explains.

Deterministic text, so every fresh machine shows the same numbers."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path

from .engine.types import Call, Transcript
from .formats import parse_files

RECORDED = Path(__file__).parent / "demo_data" / "mirascope-caching.jsonl"

WORDS = [
    "cache",
    "prefix",
    "tokens",
    "model",
    "request",
    "history",
    "budget",
    "latency",
    "invoice",
    "summary",
    "context",
    "window",
    "customer",
    "support",
    "order",
    "refund",
    "policy",
    "shipping",
    "account",
    "password",
    "update",
    "report",
    "analysis",
    "quarter",
    "revenue",
    "forecast",
    "pipeline",
    "deploy",
    "service",
    "error",
    "retry",
    "timeout",
]


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def _policy(rng: random.Random) -> str:
    # A long, static system prompt: above 1024 tokens, so repeated calls can hit the cache.
    return "You are the support assistant of ACME. Policy:\n" + "\n".join(
        f"{i}. {_text(rng, 14)}" for i in range(1, 110)
    )


def _growing(
    rng: random.Random,
    *,
    title: str,
    model: str,
    system: str,
    start: datetime,
    turns: int,
    gap_seconds: int,
) -> Transcript:
    messages: list[dict[str, object]] = [{"role": "system", "content": system}]
    times: list[datetime | None] = [start]
    at = start
    for _ in range(turns):
        messages.append({"role": "user", "content": _text(rng, rng.randint(10, 60))})
        times.append(at)
        at += timedelta(seconds=gap_seconds)
        messages.append({"role": "assistant", "content": _text(rng, rng.randint(40, 220))})
        times.append(at)
    return Transcript(
        messages=messages, title=title, model=model, message_times=times, created_at=start
    )


def demo_transcripts(now: datetime) -> list[Transcript]:
    rng = random.Random(2026)
    policy = _policy(rng)
    day = now.replace(hour=9, minute=0, second=0, microsecond=0)
    result = [
        _growing(
            rng,
            title="Refund policy questions (cache-friendly)",
            model="gpt-4o",
            system=policy,
            start=day - timedelta(days=3),
            turns=12,
            gap_seconds=40,
        ),
        _growing(
            rng,
            title="Order tracking, long idle gaps",
            model="gpt-4o",
            system=policy,
            start=day - timedelta(days=2),
            turns=6,
            gap_seconds=15 * 60,
        ),
        _growing(
            rng,
            title="Password reset (short prompt, never cacheable)",
            model="gpt-4.1-mini",
            system="You are a terse helpdesk bot.",
            start=day - timedelta(days=2, hours=3),
            turns=5,
            gap_seconds=30,
        ),
        _growing(
            rng,
            title="Quarterly report draft (self-hosted model, no price)",
            model="llama-3-70b",
            system="You write reports.",
            start=day - timedelta(days=1),
            turns=4,
            gap_seconds=60,
        ),
    ]
    # A timestamp at the top of the system prompt changes the prefix on every call.
    stamped = _growing(
        rng,
        title="Timestamped system prompt (breaks the cache)",
        model="gpt-4o-mini",
        system=policy,
        start=day - timedelta(days=1, hours=2),
        turns=6,
        gap_seconds=45,
    )
    calls = []
    for i in range(1, len(stamped.messages), 2):
        when = stamped.message_times[i] if stamped.message_times else None
        calls.append(
            Call(
                request=[len(stamped.messages) + i // 2, *range(1, i + 1)],
                response=i + 1,
                model="gpt-4o-mini",
                started_at=when,
            )
        )
    for i in range(1, len(stamped.messages), 2):
        when = stamped.message_times[i] if stamped.message_times else None
        stamp = when.isoformat() if when else ""
        stamped.messages.append({"role": "system", "content": f"Now: {stamp}\n{policy}"})
    stamped.messages[0] = {"role": "system", "content": "(each call sent its own timestamped copy)"}
    stamped.calls = calls
    result.append(stamped)
    # An API log with reported usage: a real recorded conversation (demo_data/README.md), so
    # the overview's calibration table compares costlab with what OpenAI really billed.
    result.append(_recorded(title="API log with reported usage", start=day - timedelta(hours=5)))
    return result


def _recorded(*, title: str, start: datetime) -> Transcript:
    """The recorded calls, moved to start at `start` (their gaps kept); bodies and usage
    as recorded."""
    transcript = next(iter(parse_files([RECORDED], format="api_log")))
    calls = transcript.calls or []
    shift = start - min(c.started_at or start for c in calls)
    for call in calls:
        if call.started_at is not None:
            call.started_at += shift
    if transcript.created_at is not None:
        transcript.created_at += shift
    if transcript.message_times is not None:
        transcript.message_times = [t + shift if t else None for t in transcript.message_times]
    transcript.title = title
    return transcript
