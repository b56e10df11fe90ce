"""Helpers for the engine tests: pure Python, no Django and no database."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from conversations.engine import messages
from conversations.engine.messages import EncodedMessage
from conversations.engine.pricing import Rates
from conversations.engine.profiles import ModelProfile, default_profile
from conversations.engine.types import Call, ChatMessage, Transcript

# gpt-4o, USD per 1M tokens
GPT_4O = Rates(input=Decimal("2.50"), cached_input=Decimal("1.25"), output=Decimal("10"))
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


def xs(count: int, tag: str = "") -> str:
    """Text of exactly `count` tokens in both encodings (" x" is one token), optionally
    prefixed by a tag so that two texts differ from their first token."""
    return f"{tag}" + " x" * (count - (1 if tag else 0)) if count else ""


def cookbook(oracles: Path) -> dict[str, Any]:
    """The OpenAI cookbook's token-counting notebook: API-reported counts and printed ids."""
    data: dict[str, Any] = json.loads((oracles / "cookbook_token_counts.json").read_text())
    return data


def prose(rng: random.Random, words: int) -> str:
    vocabulary = ("cache", "prompt", "token", "model", "cost", "turn", "reply", "budget", "price")
    return " ".join(rng.choice(vocabulary) for _ in range(words))


def conversation(
    turns: int,
    *,
    seed: int = 1,
    system_words: int = 1100,
    user_words: tuple[int, int] = (20, 120),
    reply_words: tuple[int, int] = (60, 300),
    gap_seconds: float | None = 30.0,
    model: str = "gpt-4o",
) -> Transcript:
    """A manual-flow transcript; with message times `gap_seconds` apart unless None."""
    rng = random.Random(seed)
    messages: list[ChatMessage] = [{"role": "system", "content": prose(rng, system_words)}]
    for _ in range(turns):
        messages.append({"role": "user", "content": prose(rng, rng.randint(*user_words))})
        messages.append({"role": "assistant", "content": prose(rng, rng.randint(*reply_words))})
    times: list[datetime | None] | None = None
    if gap_seconds is not None:
        times = [T0 + timedelta(seconds=gap_seconds * i) for i in range(len(messages))]
    return Transcript(messages=messages, model=model, message_times=times, external_id="c")


@pytest.fixture
def profile_for() -> Callable[[str | None], ModelProfile]:
    return default_profile


@pytest.fixture
def rates_for() -> Callable[[Call, int], Rates | None]:
    return lambda call, prompt_tokens: GPT_4O


@pytest.fixture
def fast_passwords() -> None:
    """The engine needs no Django: this overrides the suite-wide autouse fixture of the same
    name (it needs pytest-django's `settings`), so `pytest -p no:django tests/engine` runs."""


@pytest.fixture
def encoded(monkeypatch: pytest.MonkeyPatch) -> list[ChatMessage]:
    """Every message the renderer encodes (re-encodes included), in order."""
    seen: list[ChatMessage] = []
    original = messages.encode_message

    def counting(message: ChatMessage, profile: ModelProfile) -> EncodedMessage:
        seen.append(message)
        return original(message, profile)

    monkeypatch.setattr(messages, "encode_message", counting)
    return seen
