"""Reported `usage` objects, validated at the door.

A token count is billed money: it must be a non-negative integer below MAX_TOKENS. A
string holding such an integer (some proxies re-serialise numbers as strings) is read with
a warning; anything else (a float, NaN, Infinity, a negative or absurd count, any other
type) is an error naming the file, line and field, never a silent 0.

Counts that disagree with each other are stored as reported, with a warning: the buckets
(engine.pricing.buckets_from_usage) are built from prompt and completion tokens and clamp
the overlapping details, so they never count a token twice whatever the report says.

Both spellings are read: chat.completions (`prompt_tokens`, `completion_tokens`,
`*_tokens_details`) and the Responses API (`input_tokens`, `output_tokens`,
`input_tokens_details.cached_tokens`, `output_tokens_details.reasoning_tokens`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from conversations.engine.types import Usage

from .errors import describe
from .records import Record

# A million times a large context window: no real call comes near it, and the database's
# integer columns hold it with room to add up a file's worth.
MAX_TOKENS = 1_000_000_000
_DIGITS = re.compile(r"\s*\d+\s*")

Warn = Callable[[str], None]


class _Reader:
    def __init__(self, raw: dict[str, Any], record: Record, path: str, warn: Warn) -> None:
        self.raw = raw
        self.record = record
        self.path = path
        self.warn = warn

    def details(self, key: str) -> dict[str, Any]:
        value = self.raw.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.record.error(
                f"expected an object, got {describe(value)}", f"{self.path}.{key}"
            )
        return value

    def count(self, holder: dict[str, Any], key: str, field: str) -> int | None:
        """The count at holder[key] (None when absent or null); `field` names it."""
        value = holder.get(key)
        if value is None:
            return None
        where = f"{self.path}.{field}"
        if isinstance(value, str) and _DIGITS.fullmatch(value):
            number = int(value)
            self.warn(f"{where}: token count given as the string {value!r}, read as {number}")
            value = number
        elif isinstance(value, bool) or not isinstance(value, int):
            shown = repr(value) if isinstance(value, (float, str)) else describe(value)
            raise self.record.error(
                f"a token count must be a non-negative integer, got {shown}", where
            )
        if value < 0:
            raise self.record.error(f"a token count cannot be negative, got {value}", where)
        if value >= MAX_TOKENS:
            raise self.record.error(
                f"token count {value:,} is not plausible (limit {MAX_TOKENS:,})", where
            )
        return value


def usage_of(raw: dict[str, Any], *, record: Record, path: str, warn: Warn) -> Usage:
    """A Usage from a response's `usage` object at `path` of `record`."""
    reader = _Reader(raw, record, path, warn)
    responses = "input_tokens" in raw or "output_tokens" in raw
    prompt_key, completion_key = (
        ("input_tokens", "output_tokens") if responses else ("prompt_tokens", "completion_tokens")
    )
    prompt_details_key = f"{prompt_key}_details"
    completion_details_key = f"{completion_key}_details"
    prompt_details = reader.details(prompt_details_key)
    completion_details = reader.details(completion_details_key)

    def detail(holder: dict[str, Any], holder_key: str, key: str) -> int | None:
        return reader.count(holder, key, f"{holder_key}.{key}")

    prompt = reader.count(raw, prompt_key, prompt_key)
    completion = reader.count(raw, completion_key, completion_key)
    total = reader.count(raw, "total_tokens", "total_tokens")
    if prompt is None and completion is None:
        raise record.error(
            f"no {prompt_key} nor {completion_key}: the usage reports no token counts", path
        )
    prompt, completion = prompt or 0, completion or 0
    cached = detail(prompt_details, prompt_details_key, "cached_tokens") or 0
    # GPT-5.6 reports newly written prefixes; some logs carry the older spelling.
    write = detail(prompt_details, prompt_details_key, "cache_write_tokens")
    if write is None:
        write = detail(prompt_details, prompt_details_key, "cache_creation_tokens")
    reasoning = detail(completion_details, completion_details_key, "reasoning_tokens") or 0
    prompt_audio = detail(prompt_details, prompt_details_key, "audio_tokens") or 0
    completion_audio = detail(completion_details, completion_details_key, "audio_tokens") or 0

    if total is not None and total != prompt + completion:
        warn(
            f"{path}.total_tokens: {total:,} reported, but {prompt_key} + {completion_key} = "
            f"{prompt + completion:,}; stored as reported, costs use the parts"
        )
    if cached > prompt:
        warn(
            f"{path}.{prompt_details_key}.cached_tokens: {cached:,} cached of {prompt:,} "
            f"{prompt_key}; stored as reported, at most {prompt:,} priced as cached"
        )
    if reasoning > completion:
        warn(
            f"{path}.{completion_details_key}.reasoning_tokens: {reasoning:,} of {completion:,} "
            f"{completion_key}; stored as reported, the reasoning share capped at the output"
        )
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion if total is None else total,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
        cache_write_tokens=write,
        prompt_audio_tokens=prompt_audio,
        completion_audio_tokens=completion_audio,
        raw=raw,
    )
