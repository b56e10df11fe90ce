"""How each model family caches prompts (design.md 2.6): one policy per model.

Owns: the cache rules as data (CachePolicy) and the engine's default policy for a model name.

Seed 002 describes the rules of its time (1024-token minimum, 128-token steps, free writes);
models before gpt-4o have no caching at all, and GPT-5.6 (announced 2026-06-27) caches at
breakpoints with exact lengths and billed writes. The simulator takes every number from the
policy, and the Django layer overrides the defaults below from the price book, so a change of
OpenAI's rules is a data change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

CacheKind = Literal["none", "prefix", "breakpoints"]


@dataclass(frozen=True, slots=True)
class CachePolicy:
    name: str
    kind: CacheKind
    min_tokens: int = 1024  # no hit below this
    step_tokens: int = 128  # hits in multiples of this (breakpoints: exact, 1)
    routing_tokens: int = 256  # requests route by a hash of this many leading tokens
    overflow_rpm: int = 15  # above this per (prefix, key) and minute, requests overflow
    ttl_seconds: int = 600  # idle lifetime by default
    max_ttl_seconds: int = 3600  # longest lifetime without extended retention
    extended_ttl_seconds: int = 86400  # with prompt_cache_retention "24h" where offered
    max_breakpoints: int = 4  # explicit breakpoints honoured per request
    writes_billed: bool = False  # new prefixes reported as cache_write_tokens
    requires_cache_key: bool = False  # the improved matching needs prompt_cache_key
    extended_retention: bool = False  # the MODEL offers prompt_cache_retention "24h"

    @property
    def caches(self) -> bool:
        return self.kind != "none"

    def eligible(self, prompt_tokens: int) -> bool:
        return self.caches and prompt_tokens >= self.min_tokens

    def ttl_for(self, retention: str | None, options: dict[str, object] | None) -> int | None:
        """A request's entry lifetime: extended where asked for and offered, the request's
        own `prompt_cache_options.ttl` (breakpoints), else None (the scenario's)."""
        extended = retention is not None and retention not in ("in_memory", "in-memory", "default")
        if extended and self.extended_retention:
            return self.extended_ttl_seconds
        ttl = (options or {}).get("ttl")
        if self.kind == "breakpoints" and isinstance(ttl, (int, float, str)):
            seconds = _seconds(ttl)
            if seconds is not None:
                return max(seconds, self.ttl_seconds)  # entries live at least the minimum
        return None


NO_CACHE = CachePolicy("none", "none")
PREFIX_128 = CachePolicy("prefix_128", "prefix")
BREAKPOINTS = CachePolicy(
    "breakpoints",
    "breakpoints",
    step_tokens=1,
    ttl_seconds=1800,
    max_ttl_seconds=1800,
    writes_billed=True,
    requires_cache_key=True,
)

# Models without prompt caching (OpenAI's caching docs: gpt-4o and newer; the first gpt-4o
# snapshot and chatgpt-4o-latest never report cached tokens), and GPT-5.6 on.
_NO_CACHE = re.compile(
    r"^(gpt-4(?=$|-)|gpt-3\.5|gpt-35|gpt-4o-2024-05-13|chatgpt-4o-latest"
    r"|gpt-4o(-mini)?-audio-preview|gpt-audio)"
)
_BREAKPOINTS = re.compile(r"^(gpt-5\.([6-9]|\d\d)|gpt-([6-9]|\d\d))(?=$|[-.])")


def _seconds(value: int | float | str) -> int | None:
    if isinstance(value, (int, float)):
        return int(value)
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", value.lower())
    if not match:
        return None
    return int(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def default_policy(model: str | None) -> CachePolicy:
    """The engine's policy for a model name, when the price book says nothing."""
    name = (model or "").lower()
    if name.startswith("ft:"):
        name = name[3:]
    if _BREAKPOINTS.match(name):
        return BREAKPOINTS
    if _NO_CACHE.match(name):
        return NO_CACHE
    return PREFIX_128
