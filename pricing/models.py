"""The price book (design.md 2.3): dated price rows per model and scope, and the log of
explicit re-pricings.

Both models moved here from `conversations`; their tables kept the old names so that an
existing database migrated forward without copying a row (see migrations/0001_initial.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from .matrix import ABOVE, BASE, BUCKETS, DEFAULT, EXTENDED, STANDARD, Cell, RateMatrix

# Rates are USD per 1M tokens with 6 places ($0.0025 / 1M, gpt-5-nano flex cached, is exact).


class Encoding(models.TextChoices):
    O200K = "o200k_base", "o200k_base"
    CL100K = "cl100k_base", "cl100k_base"


class CacheKind(models.TextChoices):
    NONE = "none", "no prompt caching"
    PREFIX = "prefix", "automatic prefix caching in fixed steps (seed 002)"
    BREAKPOINTS = "breakpoints", "breakpoints, exact lengths, paid writes (GPT-5.6 on)"


class CachePolicy(models.Model):
    """How a family of models caches prompts (design.md 2.6). Every number the simulator
    uses is a field here, so the next change of OpenAI's rules is a data change."""

    name = models.SlugField(max_length=40, unique=True)
    kind = models.CharField(max_length=12, choices=CacheKind)
    description = models.TextField(blank=True)
    min_tokens = models.PositiveIntegerField(default=1024, help_text="No hit below this.")
    step_tokens = models.PositiveIntegerField(
        default=128, help_text="Hits come in multiples of this (1: exact lengths)."
    )
    routing_tokens = models.PositiveIntegerField(
        default=256, help_text="Requests route by a hash of this many leading tokens."
    )
    overflow_rpm = models.PositiveIntegerField(
        default=15, help_text="Above this many requests/minute per prefix and key, overflow."
    )
    ttl_seconds = models.PositiveIntegerField(
        default=600, help_text="Idle lifetime of an entry by default."
    )
    max_ttl_seconds = models.PositiveIntegerField(
        default=3600, help_text="Longest lifetime without extended retention (off-peak)."
    )
    extended_ttl_seconds = models.PositiveIntegerField(
        default=86400, help_text="Lifetime when a request asks for extended (24h) retention."
    )
    max_breakpoints = models.PositiveSmallIntegerField(
        default=4, help_text="Explicit breakpoints per request (breakpoints policies)."
    )
    writes_billed = models.BooleanField(
        default=False, help_text="Newly written prefixes are reported and billed as writes."
    )
    requires_cache_key = models.BooleanField(
        default=False, help_text="Flag requests without prompt_cache_key."
    )

    class Meta:
        verbose_name_plural = "cache policies"

    def __str__(self) -> str:
        return self.name


class PriceSource(models.TextChoices):
    CATALOGUE = "catalogue", "Default catalogue"
    LITELLM = "litellm", "LiteLLM import"
    ADMIN = "admin", "Entered by an admin"


class ModelPrice(models.Model):
    """One row of the price book: one model (or pattern), one scope, one start date.

    Rows are never rewritten by imports: a new price is a new row with a later
    effective_from, so history stays explainable (design.md 2.3)."""

    organization = models.ForeignKey(
        "conversations.Organization",
        models.CASCADE,
        null=True,
        blank=True,
        related_name="prices",
        help_text="Empty for the global price book; set for an organization's negotiated price.",
    )
    model = models.CharField(
        max_length=200,
        help_text="Exact model name (gpt-4o), or a pattern with * (gpt-4o-*). Dated snapshots "
        "such as gpt-4o-2024-08-06 fall back to the gpt-4o row when no closer row exists.",
    )
    effective_from = models.DateTimeField(help_text="Applies to calls at or after this time.")
    source = models.CharField(max_length=12, choices=PriceSource, default=PriceSource.ADMIN)

    input_per_1m = models.DecimalField("input $/1M", max_digits=14, decimal_places=6)
    cached_input_per_1m = models.DecimalField(
        "cached input $/1M", max_digits=14, decimal_places=6, null=True, blank=True
    )
    output_per_1m = models.DecimalField("output $/1M", max_digits=14, decimal_places=6)
    cache_write_per_1m = models.DecimalField(
        "cache write $/1M", max_digits=14, decimal_places=6, null=True, blank=True
    )
    reasoning_per_1m = models.DecimalField(
        "reasoning $/1M", max_digits=14, decimal_places=6, null=True, blank=True
    )
    audio_input_per_1m = models.DecimalField(
        "audio input $/1M", max_digits=14, decimal_places=6, null=True, blank=True
    )
    audio_output_per_1m = models.DecimalField(
        "audio output $/1M", max_digits=14, decimal_places=6, null=True, blank=True
    )

    # Above this many prompt tokens the "above" band's rates (PriceRate rows) apply to the
    # WHOLE request; rates of other tiers and bands live in PriceRate (the matrix).
    long_context_threshold = models.PositiveIntegerField(null=True, blank=True)

    # Model facts used by token counting and context-window checks.
    context_window = models.PositiveIntegerField(null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(null=True, blank=True)
    encoding = models.CharField(max_length=20, choices=Encoding, default=Encoding.O200K)
    tokens_per_message = models.SmallIntegerField(default=3)
    tokens_per_name = models.SmallIntegerField(default=1)
    reply_priming = models.SmallIntegerField(default=3)

    cache_policy = models.ForeignKey(
        CachePolicy,
        models.PROTECT,
        null=True,
        blank=True,
        related_name="prices",
        help_text="Empty: no caching when the row has no cached-input rate, else prefix_128.",
    )
    extended_retention = models.BooleanField(
        default=False,
        help_text="The model honours prompt_cache_retention='24h' (extended retention).",
    )

    notes = models.TextField(blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        # The table kept its name when the model moved here from conversations (no copy).
        db_table = "conversations_modelprice"
        constraints = [
            # One row per (scope, model, start); NULLS NOT DISTINCT makes the global scope
            # unique too (PostgreSQL 15+; SQLite ignores the option).
            models.UniqueConstraint(
                fields=["organization", "model", "effective_from"],
                name="modelprice_unique_start",
                nulls_distinct=False,
            ),
            models.CheckConstraint(
                condition=Q(input_per_1m__gte=0) & Q(output_per_1m__gte=0),
                name="modelprice_rates_not_negative",
            ),
        ]
        indexes = [
            # Price resolution: rows of a scope for a model, newest start first.
            models.Index(fields=["model", "organization", "-effective_from"], name="price_lookup"),
        ]
        ordering = ["model", "-effective_from"]

    def __str__(self) -> str:
        scope = self.organization.slug if self.organization else "global"
        return f"{self.model} [{scope}] from {self.effective_from:%Y-%m-%d}"

    @property
    def is_pattern(self) -> bool:
        return "*" in self.model

    def base_cells(self) -> dict[Cell, Decimal]:
        """The plain columns: the standard tier, base band, default retention."""
        cells = {}
        for bucket in BUCKETS:
            value = getattr(self, f"{bucket}_per_1m")
            if value is not None:
                cells[(bucket, STANDARD, BASE, DEFAULT)] = value
        return cells

    def matrix(self, rates: Iterable[PriceRate] | None = None) -> RateMatrix:
        """The row's whole matrix; `rates` saves a query when they are loaded already."""
        cells = self.base_cells()
        for cell in rates if rates is not None else self.rates.all():
            cells[cell.key] = cell.rate_per_1m
        return RateMatrix(cells=cells, long_context_threshold=self.long_context_threshold)


class Tier(models.TextChoices):
    STANDARD = STANDARD, "standard"
    BATCH = "batch", "batch (Batch API)"
    FLEX = "flex", "flex"
    PRIORITY = "priority", "priority"


class Band(models.TextChoices):
    BASE = BASE, "up to the long-context threshold"
    ABOVE = ABOVE, "above the long-context threshold"


class Retention(models.TextChoices):
    DEFAULT = DEFAULT, "default"
    EXTENDED = EXTENDED, "extended (24h)"


class Bucket(models.TextChoices):
    INPUT = "input", "input"
    CACHED_INPUT = "cached_input", "cached input"
    CACHE_WRITE = "cache_write", "cache write"
    OUTPUT = "output", "output"
    REASONING = "reasoning", "reasoning"
    AUDIO_INPUT = "audio_input", "audio input"
    AUDIO_OUTPUT = "audio_output", "audio output"


class PriceRate(models.Model):
    """One cell of a price row's matrix beyond its plain (standard, base) columns: a bucket's
    rate for one service tier, context band and, for cache writes, retention."""

    price = models.ForeignKey(ModelPrice, models.CASCADE, related_name="rates")
    bucket = models.CharField(max_length=20, choices=Bucket)
    # Tier names are data: LiteLLM lists tiers beyond the four OpenAI documents.
    tier = models.CharField(max_length=20, default=Tier.STANDARD)
    band = models.CharField(max_length=10, choices=Band, default=Band.BASE)
    retention = models.CharField(max_length=10, choices=Retention, default=DEFAULT)
    rate_per_1m = models.DecimalField("$/1M", max_digits=14, decimal_places=6)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["price", "bucket", "tier", "band", "retention"], name="pricerate_unique"
            ),
            models.CheckConstraint(condition=Q(rate_per_1m__gte=0), name="pricerate_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.bucket} {self.tier}/{self.band}/{self.retention}: {self.rate_per_1m}"

    @property
    def key(self) -> Cell:
        return (self.bucket, self.tier, self.band, self.retention)


class RecomputeStatus(models.TextChoices):
    PENDING = "pending", "Waiting for a worker"
    RUNNING = "running", "Re-pricing"
    SUCCEEDED = "succeeded", "Done"
    FAILED = "failed", "Failed"


class CostRecompute(models.Model):
    """An explicit re-pricing of stored usage with the current price book. Prices never
    rewrite history silently: each recompute is asked for, and logged here. It is a job
    like an import (costlab/heartbeat.py): claimed, beating while it runs, run again when
    its worker dies."""

    organization = models.ForeignKey(
        "conversations.Organization",
        models.CASCADE,
        null=True,
        blank=True,
        related_name="recomputes",
        help_text="Empty: every organization.",
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    since = models.DateTimeField(null=True, blank=True, help_text="Only usage at or after this.")
    records = models.PositiveIntegerField(default=0)
    changed = models.PositiveIntegerField(default=0)
    cost_before = models.DecimalField(max_digits=24, decimal_places=12, null=True, blank=True)
    cost_after = models.DecimalField(max_digits=24, decimal_places=12, null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)
    finished = models.DateTimeField(null=True, blank=True)
    status = models.CharField(
        max_length=10, choices=RecomputeStatus.choices, default=RecomputeStatus.PENDING
    )
    error = models.TextField(blank=True)
    started = models.DateTimeField(null=True, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        db_table = "conversations_costrecompute"

    def __str__(self) -> str:
        scope = self.organization.slug if self.organization else "all organizations"
        return f"recompute of {scope} at {self.created:%Y-%m-%d %H:%M}"
