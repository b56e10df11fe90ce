"""The default price book: OpenAI list prices (USD per 1M tokens, standard tier) as of
2026-11, cross-checked against LiteLLM's table. Admins add dated or per-organization rows on
top; these global rows are never edited in place.

Moved here from conversations 0002 with the model. A database that ran that migration
already holds these rows: loading is skipped there, so each row exists once."""

from datetime import UTC, datetime
from decimal import Decimal

from django.db import migrations

# Applied to all history until a later dated row says otherwise.
EFFECTIVE_FROM = datetime(2020, 1, 1, tzinfo=UTC)

# model: (input, cached, output, batch in, batch out, flex (in, cached, out) or None,
#         priority (in, cached, out) or None, context window, max output, encoding)
CATALOGUE = {
    "gpt-4o": (
        "2.50",
        "1.25",
        "10.00",
        "1.25",
        "5.00",
        None,
        ("4.25", "2.125", "17.00"),
        128000,
        16384,
        "o200k_base",
    ),
    "gpt-4o-mini": (
        "0.15",
        "0.075",
        "0.60",
        "0.075",
        "0.30",
        None,
        ("0.25", "0.125", "1.00"),
        128000,
        16384,
        "o200k_base",
    ),
    "gpt-4.1": (
        "2.00",
        "0.50",
        "8.00",
        "1.00",
        "4.00",
        None,
        ("3.50", "0.875", "14.00"),
        1047576,
        32768,
        "o200k_base",
    ),
    "gpt-4.1-mini": (
        "0.40",
        "0.10",
        "1.60",
        "0.20",
        "0.80",
        None,
        ("0.70", "0.175", "2.80"),
        1047576,
        32768,
        "o200k_base",
    ),
    "gpt-4.1-nano": (
        "0.10",
        "0.025",
        "0.40",
        "0.05",
        "0.20",
        None,
        ("0.20", "0.05", "0.80"),
        1047576,
        32768,
        "o200k_base",
    ),
    "o3": (
        "2.00",
        "0.50",
        "8.00",
        "1.00",
        "4.00",
        ("1.00", "0.25", "4.00"),
        ("3.50", "0.875", "14.00"),
        200000,
        100000,
        "o200k_base",
    ),
    "o4-mini": (
        "1.10",
        "0.275",
        "4.40",
        "0.55",
        "2.20",
        ("0.55", "0.138", "2.20"),
        ("2.00", "0.50", "8.00"),
        200000,
        100000,
        "o200k_base",
    ),
    "gpt-5": (
        "1.25",
        "0.125",
        "10.00",
        "0.625",
        "5.00",
        ("0.625", "0.0625", "5.00"),
        ("2.50", "0.25", "20.00"),
        400000,
        128000,
        "o200k_base",
    ),
    "gpt-5-mini": (
        "0.25",
        "0.025",
        "2.00",
        "0.125",
        "1.00",
        ("0.125", "0.0125", "1.00"),
        ("0.45", "0.045", "3.60"),
        400000,
        128000,
        "o200k_base",
    ),
    "gpt-5-nano": (
        "0.05",
        "0.005",
        "0.40",
        "0.025",
        "0.20",
        ("0.025", "0.0025", "0.20"),
        None,
        400000,
        128000,
        "o200k_base",
    ),
    "gpt-4-turbo": (
        "10.00",
        None,
        "30.00",
        "5.00",
        "15.00",
        None,
        None,
        128000,
        4096,
        "cl100k_base",
    ),
    "gpt-4": ("30.00", None, "60.00", "15.00", "30.00", None, None, 8192, 8192, "cl100k_base"),
    "gpt-3.5-turbo": ("0.50", None, "1.50", "0.25", "0.75", None, None, 16385, 4096, "cl100k_base"),
}


def _d(value):
    return Decimal(value) if value is not None else None


def load(apps, schema_editor):
    ModelPrice = apps.get_model("pricing", "ModelPrice")
    if ModelPrice.objects.filter(
        source="catalogue", organization=None, effective_from=EFFECTIVE_FROM
    ).exists():
        return
    for model, (
        inp,
        cached,
        out,
        b_in,
        b_out,
        flex,
        prio,
        window,
        max_out,
        enc,
    ) in CATALOGUE.items():
        row = ModelPrice(
            model=model,
            organization=None,
            effective_from=EFFECTIVE_FROM,
            source="catalogue",
            input_per_1m=_d(inp),
            cached_input_per_1m=_d(cached),
            output_per_1m=_d(out),
            batch_input_per_1m=_d(b_in),
            batch_output_per_1m=_d(b_out),
            context_window=window,
            max_output_tokens=max_out,
            encoding=enc,
            notes="Default catalogue (OpenAI list prices, 2026-11).",
        )
        if flex:
            row.flex_input_per_1m, row.flex_cached_input_per_1m, row.flex_output_per_1m = map(
                _d, flex
            )
        if prio:
            (
                row.priority_input_per_1m,
                row.priority_cached_input_per_1m,
                row.priority_output_per_1m,
            ) = map(_d, prio)
        row.save()
    # gpt-3.5-turbo-0301 counted 4 tokens per message and -1 per name (cookbook).
    legacy = ModelPrice.objects.get(
        model="gpt-3.5-turbo", organization=None, effective_from=EFFECTIVE_FROM
    )
    legacy.pk = None
    legacy.model = "gpt-3.5-turbo-0301"
    legacy.tokens_per_message, legacy.tokens_per_name = 4, -1
    legacy.input_per_1m = legacy.output_per_1m = Decimal("2.00")
    legacy.batch_input_per_1m = legacy.batch_output_per_1m = None
    legacy.notes = "Legacy snapshot: 4 tokens per message, -1 per name."
    legacy.save()


def unload(apps, schema_editor):
    apps.get_model("pricing", "ModelPrice").objects.filter(source="catalogue").delete()


class Migration(migrations.Migration):
    dependencies = [("pricing", "0001_initial")]
    operations = [migrations.RunPython(load, unload)]
