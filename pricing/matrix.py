"""The rate matrix of one price row, and which cell prices a call (design.md 2.3).

A rate is chosen by bucket (input, cached input, cache write, output, reasoning, audio in,
audio out) x service tier (from the RESPONSE's `service_tier`) x context band (above the
row's long-context threshold, the band's rates apply to the WHOLE request) x, for cache
writes, the retention the request asked for. Pure Python: the admin, the LiteLLM import and
the tests share it without a database.

When a cell is missing, the rate falls back in this order, first found wins:
  1. the call's tier and band (extended retention first, then default, for cache writes);
  2. the same tier, the other band;
  3. the standard tier, the call's band;
  4. the standard tier, base band (the row's plain columns).
One exception, from seed 002: the Batch API gives no caching discount unless the row says
so, so a batch call's cached tokens with no batch cached rate pay the batch input rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from conversations.engine.pricing import Rates

BUCKETS = (
    "input",
    "cached_input",
    "cache_write",
    "output",
    "reasoning",
    "audio_input",
    "audio_output",
)
STANDARD, BATCH = "standard", "batch"
TIERS = (STANDARD, BATCH, "flex", "priority")
BASE, ABOVE = "base", "above"
DEFAULT, EXTENDED = "default", "extended"
# Responses report these for the standard tier.
_STANDARD_ALIASES = {None, "", "default", "auto", "standard", "scale"}

Cell = tuple[str, str, str, str]  # bucket, tier, band, retention


def tier_of(service_tier: str | None, *, batch: bool) -> str:
    """The tier a call is billed at: the Batch API's, else the response's service_tier."""
    if batch:
        return BATCH
    return STANDARD if service_tier in _STANDARD_ALIASES else str(service_tier)


@dataclass(frozen=True)
class RateMatrix:
    cells: Mapping[Cell, Decimal]
    long_context_threshold: int | None = None
    # Rates already chosen, by (tier, band, retention): an import asks twice a call (the
    # engine, then the usage records) with a handful of distinct answers; choosing them
    # afresh was a tenth of a 50 MB import's time (bench/import.py).
    _chosen: dict[tuple[str, str, str], Rates] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def band_of(self, prompt_tokens: int) -> str:
        threshold = self.long_context_threshold
        return ABOVE if threshold is not None and prompt_tokens > threshold else BASE

    def rate(self, bucket: str, tier: str, band: str, retention: str = DEFAULT) -> Decimal | None:
        retentions = (retention, DEFAULT) if retention != DEFAULT else (DEFAULT,)
        other = BASE if band == ABOVE else ABOVE
        for cell_tier, cell_band in ((tier, band), (tier, other), (STANDARD, band)):
            for cell_retention in retentions:
                found = self.cells.get((bucket, cell_tier, cell_band, cell_retention))
                if found is not None:
                    return found
            # Both batch bands tried and no batch cached rate: no caching discount.
            if (bucket, tier, cell_tier, cell_band) == ("cached_input", BATCH, BATCH, other):
                return self.rate("input", BATCH, band)
        for cell_retention in retentions:
            found = self.cells.get((bucket, STANDARD, BASE, cell_retention))
            if found is not None:
                return found
        return None

    def rates(
        self,
        *,
        service_tier: str | None,
        batch: bool,
        prompt_tokens: int,
        extended_retention: bool = False,
    ) -> Rates:
        """Every bucket's rate for one call."""
        tier = tier_of(service_tier, batch=batch)
        band = self.band_of(prompt_tokens)
        retention = EXTENDED if extended_retention else DEFAULT
        chosen = self._chosen.get((tier, band, retention))
        if chosen is not None:
            return chosen
        values = {b: self.rate(b, tier, band, retention) for b in BUCKETS}
        input_rate, output_rate = values.pop("input"), values.pop("output")
        if input_rate is None or output_rate is None:
            raise ValueError("a price row needs standard input and output rates")
        chosen = self._chosen[(tier, band, retention)] = Rates(
            input=input_rate, output=output_rate, **values
        )
        return chosen
