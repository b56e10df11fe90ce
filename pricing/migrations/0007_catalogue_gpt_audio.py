"""The gpt-audio family, which real logs use (tests/fixtures/real: mirascope, openai-dotnet,
ruby_llm) and the November 2026 catalogue lacked.

Rates are facts from LiteLLM's model_prices_and_context_window.json (MIT; the copy in
shared/oracles, litellm 1.109.1), its `openai` entries `gpt-audio`, `gpt-audio-mini` and
`gpt-audio-1.5`: no cached-input rate and `supports_prompt_caching: false`, hence the `none`
cache policy. Dated snapshots (gpt-audio-2025-08-28, gpt-audio-mini-2025-12-15) fall back to
their family row. Like 0005, an existing row keeps its rates; only what is missing is set."""

from datetime import UTC, datetime
from decimal import Decimal

from django.db import migrations

EFFECTIVE_FROM = datetime(2020, 1, 1, tzinfo=UTC)

AUDIO = {
    "gpt-audio": {"input": "2.5", "output": "10", "audio_input": "32", "audio_output": "64"},
    "gpt-audio-1.5": {"input": "2.5", "output": "10", "audio_input": "32", "audio_output": "64"},
    "gpt-audio-mini": {"input": "0.6", "output": "2.4", "audio_input": "10", "audio_output": "20"},
}


def load(apps, schema_editor):
    CachePolicy = apps.get_model("pricing", "CachePolicy")
    ModelPrice = apps.get_model("pricing", "ModelPrice")
    none = CachePolicy.objects.filter(name="none").first()
    for model, rates in AUDIO.items():
        if ModelPrice.objects.filter(model=model, organization=None).exists():
            continue
        ModelPrice.objects.create(
            model=model,
            organization=None,
            effective_from=EFFECTIVE_FROM,
            source="catalogue",
            encoding="o200k_base",
            notes="Default catalogue (OpenAI list prices, 2026-11).",
            cache_policy=none,
            context_window=128000,
            max_output_tokens=16384,
            **{f"{bucket}_per_1m": Decimal(rate) for bucket, rate in rates.items()},
        )


class Migration(migrations.Migration):
    dependencies = [("pricing", "0006_recompute_job_state")]
    operations = [migrations.RunPython(load, migrations.RunPython.noop)]
