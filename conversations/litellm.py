"""Read LiteLLM's `model_prices_and_context_window.json` into price-book rows.

LiteLLM prices are USD per token as JSON floats; costlab stores USD per 1M tokens as
Decimal. Going through repr() keeps 2.5e-06 exact: Decimal("2.5e-06") * 1e6 == 2.5.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .engine.profiles import default_profile

ONE_MILLION = Decimal(1_000_000)
RATE_PLACES = Decimal("0.000001")

# costlab field <- LiteLLM key (per token).
FIELD_MAP = {
    "input_per_1m": "input_cost_per_token",
    "cached_input_per_1m": "cache_read_input_token_cost",
    "output_per_1m": "output_cost_per_token",
    "cache_write_per_1m": "cache_creation_input_token_cost",
    "reasoning_per_1m": "output_cost_per_reasoning_token",
    "audio_input_per_1m": "input_cost_per_audio_token",
    "audio_output_per_1m": "output_cost_per_audio_token",
    "batch_input_per_1m": "input_cost_per_token_batches",
    "batch_output_per_1m": "output_cost_per_token_batches",
    "flex_input_per_1m": "input_cost_per_token_flex",
    "flex_cached_input_per_1m": "cache_read_input_token_cost_flex",
    "flex_output_per_1m": "output_cost_per_token_flex",
    "priority_input_per_1m": "input_cost_per_token_priority",
    "priority_cached_input_per_1m": "cache_read_input_token_cost_priority",
    "priority_output_per_1m": "output_cost_per_token_priority",
}
# Long-context tiers are keyed like input_cost_per_token_above_272k_tokens.
_LONG_CONTEXT_KEY = re.compile(r"^input_cost_per_token_above_(\d+)k_tokens$")


class PriceFileError(ValueError):
    pass


@dataclass(frozen=True)
class PriceEntry:
    model: str
    fields: dict[str, Any]


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


def _long_context_thresholds(entry: dict[str, Any]) -> list[int]:
    """Thresholds (in tokens) of the entry's long-context tiers, lowest first: costlab keeps
    one tier per row, the first one a prompt crosses."""
    found = (_LONG_CONTEXT_KEY.match(key) for key in entry)
    return sorted(int(match[1]) * 1000 for match in found if match)


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
        fields: dict[str, Any] = {}
        for name, key in FIELD_MAP.items():
            fields[name] = per_million(entry.get(key), key=key, model=model)
        for threshold in _long_context_thresholds(entry):
            key = f"input_cost_per_token_above_{threshold // 1000}k_tokens"
            if entry.get(key) is not None:
                fields["long_context_threshold"] = threshold
                fields["long_input_per_1m"] = per_million(entry[key], key=key, model=model)
                out_key = f"output_cost_per_token_above_{threshold // 1000}k_tokens"
                fields["long_output_per_1m"] = per_million(
                    entry.get(out_key), key=out_key, model=model
                )
                cached_key = f"cache_read_input_token_cost_above_{threshold // 1000}k_tokens"
                fields["long_cached_input_per_1m"] = per_million(
                    entry.get(cached_key), key=cached_key, model=model
                )
                break
        max_input, max_output = entry.get("max_input_tokens"), entry.get("max_output_tokens")
        fields["context_window"] = max_input if isinstance(max_input, int) else None
        fields["max_output_tokens"] = max_output if isinstance(max_output, int) else None
        profile = default_profile(model)
        fields["encoding"] = profile.encoding
        fields["tokens_per_message"] = profile.tokens_per_message
        fields["tokens_per_name"] = profile.tokens_per_name
        fields["reply_priming"] = profile.reply_priming
        result.append(PriceEntry(model=model, fields=fields))
    return result
