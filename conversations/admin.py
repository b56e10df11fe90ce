from __future__ import annotations

from decimal import Decimal
from functools import partial
from typing import Any

from django import forms
from django.contrib import admin
from django.core.validators import DecimalValidator
from django.db import transaction

from .models import (
    Conversation,
    CostRecompute,
    ImportJob,
    Membership,
    ModelPrice,
    Organization,
    UsageRecord,
)

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


class ModelPriceForm(forms.ModelForm[ModelPrice]):
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
class ModelPriceAdmin(admin.ModelAdmin[ModelPrice]):
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


class MembershipInline(admin.TabularInline[Membership, Organization]):
    model = Membership
    extra = 1
    raw_id_fields = ("user",)


@admin.action(description="Re-price stored usage with the current price book")
def recompute_costs(
    modeladmin: admin.ModelAdmin[Organization], request: Any, queryset: Any
) -> None:
    from .tasks import costs_recompute_run

    for organization in queryset:
        transaction.on_commit(partial(costs_recompute_run.delay, organization.pk, request.user.pk))
    modeladmin.message_user(
        request, f"Re-pricing queued for {queryset.count()} organization(s); see Cost recomputes."
    )


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin[Organization]):
    list_display = ("name", "slug", "created")
    prepopulated_fields = {"slug": ("name",)}
    inlines = [MembershipInline]
    actions = [recompute_costs]


@admin.register(CostRecompute)
class CostRecomputeAdmin(admin.ModelAdmin[CostRecompute]):
    list_display = ("created", "organization", "records", "changed", "cost_before", "cost_after")
    readonly_fields = [f.name for f in CostRecompute._meta.fields]

    def has_add_permission(self, request: Any) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin[Conversation]):
    list_display = ("title", "organization", "model", "source", "created")
    list_filter = ("organization", "source")
    search_fields = ("title", "external_id")
    raw_id_fields = ("import_job",)


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin[ImportJob]):
    list_display = ("original_name", "organization", "status", "conversations", "turns", "created")
    list_filter = ("status", "organization")
    readonly_fields = ("content_sha256", "warnings", "error")
