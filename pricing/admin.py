"""The price book in Django admin: rows with a unit check, read-only once they priced usage,
and the log of re-pricings (which the Organization admin's action starts)."""

from __future__ import annotations

from datetime import UTC, datetime, time
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin
from django.core.validators import DecimalValidator
from django.http import HttpRequest
from django.utils.dateparse import parse_date
from django.utils.html import format_html, format_html_join

from conversations.models import UsageRecord

from . import services
from .matrix import BASE, BUCKETS, EXTENDED, STANDARD
from .models import CachePolicy, CostRecompute, ModelPrice, PriceRate

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


class PriceRateForm(forms.ModelForm[PriceRate]):
    class Meta:
        model = PriceRate
        fields = ["bucket", "tier", "band", "retention", "rate_per_1m"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        warnings = rate_unit_warnings({"rate_per_1m": cleaned.get("rate_per_1m")})
        if warnings:
            raise forms.ValidationError(warnings)
        return cleaned


class PriceRateInline(admin.TabularInline[PriceRate, ModelPrice]):
    model = PriceRate
    form = PriceRateForm
    extra = 0
    verbose_name = "matrix cell"
    verbose_name_plural = (
        "Other tiers, the long-context band and extended-retention writes (USD per 1M)"
    )

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return not _priced(obj) and super().has_change_permission(request, obj)

    def has_add_permission(self, request: Any, obj: ModelPrice | None = None) -> bool:
        return not _priced(obj) and super().has_add_permission(request, obj)

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return not _priced(obj) and super().has_delete_permission(request, obj)


def _priced(obj: ModelPrice | None) -> bool:
    # A row that priced usage is history: changing it would silently change what those
    # records mean. A new price is a new row with a later effective_from.
    return obj is not None and UsageRecord.objects.filter(price=obj).exists()


def matrix_rows(row: ModelPrice) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The matrix as a table: one column per (tier, band, retention) that has a cell, one
    line per bucket; each cell shows the rate a call there pays, fallbacks applied."""
    matrix = row.matrix()
    columns = sorted(
        {(t, b, r) for (_, t, b, r) in matrix.cells},
        key=lambda c: (c[0] != STANDARD, c[0], c[1] != BASE, c[2]),
    )
    headers = [f"{t} / {b}" + (" / 24h" if r == EXTENDED else "") for t, b, r in columns]
    lines = []
    for bucket in BUCKETS:
        cells = [matrix.rate(bucket, t, b, r) for t, b, r in columns]
        if any(c is not None for c in cells):
            lines.append((bucket, ["" if c is None else f"{c.normalize():f}" for c in cells]))
    return headers, lines


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin[ModelPrice]):
    form = ModelPriceForm
    inlines = [PriceRateInline]
    readonly_fields = ("matrix_table",)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        """The query's fields, as the admin takes them; `effective_from` given as a day (the
        overview's link to price an unpriced model) becomes that day's start in UTC (the
        date and time widgets take a datetime, not its text)."""
        initial: dict[str, Any] = dict(super().get_changeform_initial_data(request))
        start = initial.get("effective_from")
        if isinstance(start, str):
            day = parse_date(start)
            if day is None:
                del initial["effective_from"]
            else:
                initial["effective_from"] = datetime.combine(day, time.min, tzinfo=UTC)
        return initial

    @admin.display(description="rates a call pays, by tier / band")
    def matrix_table(self, obj: ModelPrice | None) -> str:
        if obj is None or obj.pk is None:
            return "Save the row to see its matrix."
        headers, lines = matrix_rows(obj)
        head = format_html_join("", "<th>{}</th>", ((h,) for h in headers))
        body = format_html_join(
            "",
            "<tr><th>{}</th>{}</tr>",
            (
                (bucket, format_html_join("", "<td>{}</td>", ((c,) for c in cells)))
                for bucket, cells in lines
            ),
        )
        return format_html("<table><tr><th>bucket</th>{}</tr>{}</table>", head, body)

    list_display = (
        "model",
        "organization",
        "effective_from",
        "input_per_1m",
        "cached_input_per_1m",
        "output_per_1m",
        "context_window",
        "cache_policy",
        "encoding",
        "source",
    )
    list_filter = ("source", "organization", "encoding")
    search_fields = ("model",)
    date_hierarchy = "effective_from"

    def get_readonly_fields(self, request: Any, obj: ModelPrice | None = None) -> Any:
        if _priced(obj):
            return [*PRICED_ROW_FIELDS, "matrix_table"]
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
            "The whole matrix (read-only summary; edit cells below)",
            {"fields": ("long_context_threshold", "matrix_table")},
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
        (
            "Prompt caching (design.md 2.6)",
            {"fields": ("cache_policy", "extended_retention")},
        ),
    )


@admin.action(description="Re-price stored usage with the current price book")
def recompute_costs(modeladmin: admin.ModelAdmin[Any], request: Any, queryset: Any) -> None:
    for organization in queryset:
        services.costs_recompute_request(organization=organization, user=request.user)
    modeladmin.message_user(
        request, f"Re-pricing queued for {queryset.count()} organization(s); see Cost recomputes."
    )


@admin.register(CostRecompute)
class CostRecomputeAdmin(admin.ModelAdmin[CostRecompute]):
    list_display = (
        "created",
        "organization",
        "status",
        "records",
        "changed",
        "cost_before",
        "cost_after",
    )
    readonly_fields = [f.name for f in CostRecompute._meta.fields]

    def has_add_permission(self, request: Any) -> bool:
        return False


@admin.register(CachePolicy)
class CachePolicyAdmin(admin.ModelAdmin[CachePolicy]):
    """Every number the simulator uses: a change of OpenAI's rules is an edit here."""

    list_display = (
        "name",
        "kind",
        "min_tokens",
        "step_tokens",
        "ttl_seconds",
        "max_ttl_seconds",
        "writes_billed",
        "requires_cache_key",
    )
