"""The price book in Django admin: rows with a unit check, read-only once they priced usage,
and the log of re-pricings (which the Organization admin's action starts)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin
from django.core.validators import DecimalValidator

from conversations.models import UsageRecord
from costlab import jobs

from .models import CostRecompute, ModelPrice

PRICED_ROW_FIELDS = [
    f.name for f in ModelPrice._meta.fields if f.name not in ("id", "created", "notes")
]
RATE_FIELDS = [f.name for f in ModelPrice._meta.get_fields() if f.name.endswith("_per_1m")]
# The cheapest real rate is a few tenths of a cent per 1M tokens; anything far below is
# a per-token price typed into a per-1M field (1e6 times too small).
SUSPICIOUSLY_LOW = Decimal("0.001")
SUSPICIOUSLY_HIGH = Decimal("1000")


def rate_unit_warnings(values: dict[str, Any]) -> list[str]:
    warnings = []
    for name in RATE_FIELDS:
        rate = values.get(name)
        if rate is None or rate == 0:
            continue
        label = getattr(ModelPrice._meta.get_field(name), "verbose_name", name)
        if rate < SUSPICIOUSLY_LOW:
            warnings.append(
                f"{label} = {rate} looks like a price per token: rates are USD per 1M tokens "
                f"(a per-token $0.0000025 is $2.50 per 1M)."
            )
        elif rate > SUSPICIOUSLY_HIGH:
            warnings.append(f"{label} = {rate} is above $1,000 per 1M tokens; check the unit.")
    return warnings


class ModelPriceForm(forms.ModelForm):
    confirm_units = forms.BooleanField(
        required=False,
        label="Yes, these rates are right",
        help_text="Needed only when a rate looks a million times off.",
    )

    class Meta:
        model = ModelPrice
        fields = [f.name for f in ModelPrice._meta.fields if f.name not in ("id", "created")]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Accept any number of places here so that a per-token price (2.5e-06) reaches the
        # unit check below and gets a useful message; the model still stores 6 places.
        for name in RATE_FIELDS:
            field = self.fields.get(name)
            if isinstance(field, forms.DecimalField):
                field.decimal_places = field.max_digits = None
                field.validators = [
                    v for v in field.validators if not isinstance(v, DecimalValidator)
                ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        warnings = rate_unit_warnings(cleaned)
        if warnings and not cleaned.get("confirm_units"):
            raise forms.ValidationError(
                [*warnings, "Fix the rates, or tick 'Yes, these rates are right' to save anyway."]
            )
        return cleaned


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    form = ModelPriceForm
    list_display = (
        "model",
        "organization",
        "effective_from",
        "input_per_1m",
        "cached_input_per_1m",
        "output_per_1m",
        "context_window",
        "encoding",
        "source",
    )
    list_filter = ("source", "organization", "encoding")
    search_fields = ("model",)
    date_hierarchy = "effective_from"

    def get_readonly_fields(self, request: Any, obj: ModelPrice | None = None) -> Any:
        # A row that priced usage is history: changing it would silently change what those
        # records mean. A new price is a new row with a later effective_from.
        if obj is not None and UsageRecord.objects.filter(price=obj).exists():
            return PRICED_ROW_FIELDS
        return super().get_readonly_fields(request, obj)

    fieldsets = (
        (None, {"fields": ("model", "organization", "effective_from", "source", "notes")}),
        (
            "Standard rates (USD per 1M tokens)",
            {
                "fields": (
                    "input_per_1m",
                    "cached_input_per_1m",
                    "output_per_1m",
                    "cache_write_per_1m",
                    "reasoning_per_1m",
                    "audio_input_per_1m",
                    "audio_output_per_1m",
                    "confirm_units",
                )
            },
        ),
        (
            "Service tiers (chosen by the response's service_tier)",
            {
                "fields": (
                    "batch_input_per_1m",
                    "batch_output_per_1m",
                    "flex_input_per_1m",
                    "flex_cached_input_per_1m",
                    "flex_output_per_1m",
                    "priority_input_per_1m",
                    "priority_cached_input_per_1m",
                    "priority_output_per_1m",
                )
            },
        ),
        (
            "Long-context tier (applies to the whole request above the threshold)",
            {
                "fields": (
                    "long_context_threshold",
                    "long_input_per_1m",
                    "long_cached_input_per_1m",
                    "long_output_per_1m",
                )
            },
        ),
        (
            "Model facts",
            {
                "fields": (
                    "context_window",
                    "max_output_tokens",
                    "encoding",
                    "tokens_per_message",
                    "tokens_per_name",
                    "reply_priming",
                )
            },
        ),
    )


@admin.action(description="Re-price stored usage with the current price book")
def recompute_costs(modeladmin: admin.ModelAdmin, request: Any, queryset: Any) -> None:
    for organization in queryset:
        jobs.enqueue_on_commit(jobs.COSTS_RECOMPUTE, organization.pk, request.user.pk)
    modeladmin.message_user(
        request, f"Re-pricing queued for {queryset.count()} organization(s); see Cost recomputes."
    )


@admin.register(CostRecompute)
class CostRecomputeAdmin(admin.ModelAdmin):
    list_display = ("created", "organization", "records", "changed", "cost_before", "cost_after")
    readonly_fields = [f.name for f in CostRecompute._meta.fields]

    def has_add_permission(self, request: Any) -> bool:
        return False
