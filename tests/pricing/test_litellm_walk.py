"""Every OpenAI chat model of LiteLLM's table prices exactly as the table says.

The table (../shared/oracles, a copy of LiteLLM's model_prices_and_context_window.json) is
imported through the real command path; then, for random usage objects on every tier and
both sides of the long-context threshold, costlab's cost is compared with the table's
per-token rates times the buckets, read straight from the table's keys."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pytest

from conversations.engine.pricing import buckets_from_usage, usage_from_dict
from pricing import litellm, services
from pricing.book import PriceBook

WHEN = datetime(2026, 11, 1, tzinfo=UTC)
PLACES = Decimal("0.000000000001")
SUFFIX = {"standard": "", "batch": "_batches", "flex": "_flex", "priority": "_priority"}


def _rate(entry: dict[str, Any], key: str) -> Decimal | None:
    value = entry.get(key)
    return None if value is None else Decimal(repr(value))


def _table_rate(
    entry: dict[str, Any], base: str, tier: str, above: bool, extended: bool
) -> Decimal | None:
    """A rate looked up by LiteLLM key names, falling back as design.md 2.3 documents:
    same tier and band, same tier other band, standard tier same band, standard."""
    band = "_above_272k_tokens" if above else ""
    other = "" if above else "_above_272k_tokens"
    retentions = ["_above_12hr", ""] if extended else [""]
    for b, t in ((band, SUFFIX[tier]), (other, SUFFIX[tier]), (band, ""), ("", "")):
        for r in retentions:
            found = _rate(entry, f"{base}{r}{b}{t}")
            if found is not None:
                return found
        if base == "cache_read_input_token_cost" and tier == "batch" and b == other:
            return _table_rate(entry, "input_cost_per_token", "batch", above, False)
    return None


def _money(tokens: int, per_token: Decimal | None, fallback: Decimal) -> Decimal:
    rate = per_token if per_token is not None else fallback
    return (rate * tokens).quantize(PLACES, rounding=ROUND_HALF_EVEN)


def _expected(entry: dict[str, Any], usage: dict[str, Any], tier: str, ext: bool) -> Decimal:
    b = buckets_from_usage(usage_from_dict(usage))
    above = b.prompt_tokens > 272_000 and any("above_272k" in k for k in entry)

    def rate(base: str) -> Decimal | None:
        return _table_rate(entry, base, tier, above, ext)

    inp = rate("input_cost_per_token")
    out = rate("output_cost_per_token")
    assert inp is not None and out is not None
    audio_in, audio_out = rate("input_cost_per_audio_token"), rate("output_cost_per_audio_token")
    text_in = b.input_uncached - (b.audio_input if audio_in is not None else 0)
    text_out = b.output - (b.audio_output if audio_out is not None else 0)
    return (
        _money(text_in, inp, inp)
        + (_money(b.audio_input, audio_in, inp) if audio_in is not None else Decimal(0))
        + _money(b.input_cached, rate("cache_read_input_token_cost"), inp)
        + _money(b.input_cache_write, rate("cache_creation_input_token_cost"), inp)
        + _money(text_out, out, out)
        + (_money(b.audio_output, audio_out, out) if audio_out is not None else Decimal(0))
    )


def _random_usage(rng: random.Random) -> dict[str, Any]:
    prompt = rng.choice(
        [rng.randint(0, 4_000), rng.randint(200_000, 272_000), rng.randint(272_001, 900_000)]
    )
    cached = rng.randint(0, prompt)
    write = rng.randint(0, prompt - cached) if rng.random() < 0.5 else 0
    completion = rng.randint(0, 50_000)
    details: dict[str, Any] = {"cached_tokens": cached}
    if write:
        details["cache_write_tokens"] = write
    if rng.random() < 0.2:
        details["audio_tokens"] = rng.randint(0, prompt - cached - write)
    completion_details = {"reasoning_tokens": rng.randint(0, completion)}
    if rng.random() < 0.2:
        completion_details["audio_tokens"] = rng.randint(
            0, completion - completion_details["reasoning_tokens"]
        )
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": details,
        "completion_tokens_details": completion_details,
    }


@pytest.mark.django_db
def test_it_prices_every_openai_chat_model_as_the_table_says(oracles: Path) -> None:
    table = json.loads((oracles / "litellm_model_prices_and_context_window.json").read_text())
    chat = {
        name: entry
        for name, entry in table.items()
        if isinstance(entry, dict)
        and entry.get("litellm_provider") == "openai"
        and entry.get("mode") == "chat"
        and entry.get("input_cost_per_token") is not None
    }
    assert len(chat) > 90
    services.prices_import(
        entries=litellm.entries(table, providers={"openai"}), effective_from=WHEN
    )
    book = PriceBook.for_organization(None)
    rng = random.Random(20261130)
    checked = 0
    for name, entry in sorted(chat.items()):
        row = book.resolve(name, WHEN)
        assert row is not None and row.model == name, name  # its own row, not a base's
        for _ in range(40):
            usage = _random_usage(rng)
            tier = rng.choice(list(SUFFIX))
            extended = rng.random() < 0.3
            priced = book.price(
                model=name,
                at=WHEN,
                buckets=buckets_from_usage(usage_from_dict(usage)),
                service_tier=None if tier == "batch" else tier,
                batch=tier == "batch",
                extended_retention=extended,
            )
            assert priced.cost is not None
            expected = _expected(entry, usage, tier, extended)
            assert abs(priced.cost.total - expected) <= PLACES, (name, tier, extended, usage)
            checked += 1
    assert checked == 40 * len(chat)


@pytest.mark.django_db
def test_it_prices_the_issue_examples(oracles: Path) -> None:
    """gpt-5.6 priority above 272k pays $16/1M input (not $8); gpt-5 batch cached input is
    $0.0625/1M; gpt-4o-2024-05-13 is $5/$15, not gpt-4o's $2.50/$10."""
    table = json.loads((oracles / "litellm_model_prices_and_context_window.json").read_text())
    services.prices_import(
        entries=litellm.entries(table, providers={"openai"}), effective_from=WHEN
    )
    book = PriceBook.for_organization(None)

    def rates(model: str, **kwargs: Any) -> Any:
        row = book.resolve(model, WHEN)
        assert row is not None
        return book.matrix(row).rates(**kwargs)

    assert rates("gpt-5.6", service_tier="priority", batch=False, prompt_tokens=300_000).input == 16
    assert rates("gpt-5", service_tier=None, batch=True, prompt_tokens=10).cached_input == Decimal(
        "0.0625"
    )
    snapshot = rates("gpt-4o-2024-05-13", service_tier=None, batch=False, prompt_tokens=10)
    assert (snapshot.input, snapshot.output) == (5, 15)
