"""Read LiteLLM's `model_prices_and_context_window.json` into price-book rows.

LiteLLM prices are USD per token as JSON floats; costlab stores USD per 1M tokens as
Decimal. Going through repr() keeps 2.5e-06 exact: Decimal("2.5e-06") * 1e6 == 2.5.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from conversations.engine.profiles import default_profile

from .matrix import ABOVE, BASE, BATCH, DEFAULT, EXTENDED, STANDARD, Cell

ONE_MILLION = Decimal(1_000_000)
RATE_PLACES = Decimal("0.000001")

# LiteLLM's per-token keys, by bucket. A key may carry, in this order, a retention
# (_above_12hr, cache writes only), a context band (_above_272k_tokens) and a tier suffix
# (_batches, _flex, _priority, ...): cache_read_input_token_cost_above_272k_tokens_priority.
BUCKET_KEYS = {
    "input_cost_per_token": "input",
    "cache_read_input_token_cost": "cached_input",
    "cache_creation_input_token_cost": "cache_write",
    "output_cost_per_token": "output",
    "output_cost_per_reasoning_token": "reasoning",
    "input_cost_per_audio_token": "audio_input",
    "output_cost_per_audio_token": "audio_output",
}
_KEY = re.compile(
    r"^(?P<base>" + "|".join(BUCKET_KEYS) + r")"
    r"(?P<extended>_above_12hr)?"
    r"(?:_above_(?P<band>\d+)k_tokens)?"
    r"(?:_(?P<tier>[a-z]+))?$"
)
# LiteLLM spells the Batch API's tier "batches".
_TIER_NAMES = {"batches": BATCH}


def parse_key(key: str) -> tuple[str, str, int | None, str] | None:
    """(bucket, tier, band threshold or None, retention) of a LiteLLM rate key, or None
    when the key is not a token rate (search_context_cost_per_query, ...)."""
    match = _KEY.match(key)
    if match is None:
        return None
    tier = match["tier"] or STANDARD
    band = int(match["band"]) * 1000 if match["band"] else None
    retention = EXTENDED if match["extended"] else DEFAULT
    return BUCKET_KEYS[match["base"]], _TIER_NAMES.get(tier, tier), band, retention


class PriceFileError(ValueError):
    pass


@dataclass(frozen=True)
class PriceEntry:
    model: str
    fields: dict[str, Any]  # ModelPrice columns: plain rates and model facts
    cells: dict[Cell, Decimal] = field(default_factory=dict)  # the rest of the matrix
    cache_policy: str = "prefix_128"  # a CachePolicy name


def cache_policy_of(entry: dict[str, Any], cached_rate: Decimal | None) -> str:
    """Trust the rates, not `supports_prompt_caching` (LiteLLM sets it on gpt-4, which has
    no cached rate and never reports cached tokens): no cached rate, no caching."""
    if cached_rate is None:
        return "none"
    if entry.get("supports_prompt_cache_breakpoint"):
        return "breakpoints"
    return "prefix_128"


def per_million(value: Any, *, key: str, model: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise PriceFileError(f"entry {model!r}, field {key}: expected a number, got {value!r}")
    try:
        rate = Decimal(repr(value) if isinstance(value, float) else str(value)) * ONE_MILLION
    except ArithmeticError as exc:
        raise PriceFileError(f"entry {model!r}, field {key}: not a number: {value!r}") from exc
    if rate < 0:
        raise PriceFileError(f"entry {model!r}, field {key}: negative price {value!r}")
    return rate.quantize(RATE_PLACES)


def entries(data: Any, *, providers: set[str] | None) -> list[PriceEntry]:
    """Chat models of the file as row field dicts; `providers` None keeps every provider."""
    if not isinstance(data, dict):
        raise PriceFileError("expected a JSON object mapping model names to entries")
    result = []
    for model, entry in data.items():
        if model == "sample_spec" or not isinstance(entry, dict):
            continue
        if entry.get("mode") != "chat":
            continue
        if providers is not None and entry.get("litellm_provider") not in providers:
            continue
        if entry.get("input_cost_per_token") is None or entry.get("output_cost_per_token") is None:
            continue
        fields, cells = _rates(model, entry)
        max_input, max_output = entry.get("max_input_tokens"), entry.get("max_output_tokens")
        fields["context_window"] = max_input if isinstance(max_input, int) else None
        fields["max_output_tokens"] = max_output if isinstance(max_output, int) else None
        profile = default_profile(model)
        fields["encoding"] = profile.encoding
        fields["tokens_per_message"] = profile.tokens_per_message
        fields["tokens_per_name"] = profile.tokens_per_name
        fields["reply_priming"] = profile.reply_priming
        policy = cache_policy_of(entry, fields.get("cached_input_per_1m"))
        result.append(PriceEntry(model=model, fields=fields, cells=cells, cache_policy=policy))
    return result


def _rates(model: str, entry: dict[str, Any]) -> tuple[dict[str, Any], dict[Cell, Decimal]]:
    """The plain columns (standard tier, base band) and the other cells of one entry.
    costlab keeps one long-context band per row: the lowest threshold a prompt crosses."""
    parsed = {key: parse_key(key) for key in entry}
    thresholds = sorted({p[2] for p in parsed.values() if p is not None and p[2] is not None})
    threshold = thresholds[0] if thresholds else None
    fields: dict[str, Any] = {f"{bucket}_per_1m": None for bucket in BUCKET_KEYS.values()}
    fields["long_context_threshold"] = threshold
    cells: dict[Cell, Decimal] = {}
    for key, found in parsed.items():
        if found is None or entry[key] is None:
            continue
        bucket, tier, band_threshold, retention = found
        if band_threshold is not None and band_threshold != threshold:
            continue
        rate = per_million(entry[key], key=key, model=model)
        if rate is None:
            continue
        band = ABOVE if band_threshold is not None else BASE
        if (tier, band, retention) == (STANDARD, BASE, DEFAULT):
            fields[f"{bucket}_per_1m"] = rate
        else:
            cells[(bucket, tier, band, retention)] = rate
    return fields, cells
