"""The price book (design.md 2.3): dated price rows per model and scope, and the log of
explicit re-pricings.

Both models moved here from `conversations`; their tables kept the old names so that an
existing database migrated forward without copying a row (see migrations/0001_initial.py).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

# Rates are USD per 1M tokens with 6 places ($0.0025 / 1M, gpt-5-nano flex cached, is exact).


class Encoding(models.TextChoices):
    O200K = "o200k_base", "o200k_base"
    CL100K = "cl100k_base", "cl100k_base"


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
    source = models.CharField(max_length=12, choices=PriceSource.choices, default=PriceSource.ADMIN)

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

    # Service tiers, chosen by the RESPONSE's service_tier. Batch has no caching discount.
    batch_input_per_1m = models.DecimalField(
        "batch input $/1M", max_digits=14, decimal_places=6, null=True, blank=True
    )
    batch_output_per_1m = models.DecimalField(
        "batch output $/1M", max_digits=14, decimal_places=6, null=True, blank=True
    )
    flex_input_per_1m = models.DecimalField(
        "flex input $/1M", max_digits=14, decimal_places=6, null=True, blank=True
    )
    flex_cached_input_per_1m = models.DecimalField(
        "flex cached $/1M", max_digits=14, decimal_places=6, null=True, blank=True
    )
    flex_output_per_1m = models.DecimalField(
        "flex output $/1M", max_digits=14, decimal_places=6, null=True, blank=True
    )
    priority_input_per_1m = models.DecimalField(
        "priority input $/1M", max_digits=14, decimal_places=6, null=True, blank=True
    )
    priority_cached_input_per_1m = models.DecimalField(
        "priority cached $/1M", max_digits=14, decimal_places=6, null=True, blank=True
    )
    priority_output_per_1m = models.DecimalField(
        "priority output $/1M", max_digits=14, decimal_places=6, null=True, blank=True
    )

    # Long-context tier: above the threshold its rates apply to the WHOLE request.
    long_context_threshold = models.PositiveIntegerField(null=True, blank=True)
    long_input_per_1m = models.DecimalField(
        "long-context input $/1M", max_digits=14, decimal_places=6, null=True, blank=True
    )
    long_cached_input_per_1m = models.DecimalField(
        "long-context cached $/1M", max_digits=14, decimal_places=6, null=True, blank=True
    )
    long_output_per_1m = models.DecimalField(
        "long-context output $/1M", max_digits=14, decimal_places=6, null=True, blank=True
    )

    # Model facts used by token counting and context-window checks.
    context_window = models.PositiveIntegerField(null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(null=True, blank=True)
    encoding = models.CharField(max_length=20, choices=Encoding.choices, default=Encoding.O200K)
    tokens_per_message = models.SmallIntegerField(default=3)
    tokens_per_name = models.SmallIntegerField(default=1)
    reply_priming = models.SmallIntegerField(default=3)

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


class CostRecompute(models.Model):
    """An explicit re-pricing of stored usage with the current price book. Prices never
    rewrite history silently: each recompute is asked for, and logged here."""

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

    class Meta:
        db_table = "conversations_costrecompute"

    def __str__(self) -> str:
        scope = self.organization.slug if self.organization else "all organizations"
        return f"recompute of {scope} at {self.created:%Y-%m-%d %H:%M}"
