"""ModelPrice and CostRecompute, moved here from `conversations`. The tables already exist
(created by conversations 0001 and 0003, with their old names kept through `db_table`), so
this migration only tells Django's state about them: no SQL runs."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("conversations", "0004_price_book_leaves_state"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    # State only: the tables stay where they are (see the module docstring).
    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="CostRecompute",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        (
                            "since",
                            models.DateTimeField(
                                blank=True, help_text="Only usage at or after this.", null=True
                            ),
                        ),
                        ("records", models.PositiveIntegerField(default=0)),
                        ("changed", models.PositiveIntegerField(default=0)),
                        (
                            "cost_before",
                            models.DecimalField(
                                blank=True, decimal_places=12, max_digits=24, null=True
                            ),
                        ),
                        (
                            "cost_after",
                            models.DecimalField(
                                blank=True, decimal_places=12, max_digits=24, null=True
                            ),
                        ),
                        ("created", models.DateTimeField(default=django.utils.timezone.now)),
                        ("finished", models.DateTimeField(blank=True, null=True)),
                        (
                            "organization",
                            models.ForeignKey(
                                blank=True,
                                help_text="Empty: every organization.",
                                null=True,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="recomputes",
                                to="conversations.organization",
                            ),
                        ),
                        (
                            "requested_by",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "db_table": "conversations_costrecompute",
                    },
                ),
                migrations.CreateModel(
                    name="ModelPrice",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        (
                            "model",
                            models.CharField(
                                help_text="Exact model name (gpt-4o), or a pattern with * (gpt-4o-*). Dated snapshots such as gpt-4o-2024-08-06 fall back to the gpt-4o row when no closer row exists.",
                                max_length=200,
                            ),
                        ),
                        (
                            "effective_from",
                            models.DateTimeField(
                                help_text="Applies to calls at or after this time."
                            ),
                        ),
                        (
                            "source",
                            models.CharField(
                                choices=[
                                    ("catalogue", "Default catalogue"),
                                    ("litellm", "LiteLLM import"),
                                    ("admin", "Entered by an admin"),
                                ],
                                default="admin",
                                max_length=12,
                            ),
                        ),
                        (
                            "input_per_1m",
                            models.DecimalField(
                                decimal_places=6, max_digits=14, verbose_name="input $/1M"
                            ),
                        ),
                        (
                            "cached_input_per_1m",
                            models.DecimalField(
                                blank=True,
                                decimal_places=6,
                                max_digits=14,
                                null=True,
                                verbose_name="cached input $/1M",
                            ),
                        ),
                        (
                            "output_per_1m",
                            models.DecimalField(
                                decimal_places=6, max_digits=14, verbose_name="output $/1M"
                            ),
                        ),
                        (
                            "cache_write_per_1m",
                            models.DecimalField(
                                blank=True,
                                decimal_places=6,
                                max_digits=14,
                                null=True,
                                verbose_name="cache write $/1M",
                            ),
                        ),
                        (
                            "reasoning_per_1m",
                            models.DecimalField(
                                blank=True,
                                decimal_places=6,
                                max_digits=14,
                                null=True,
                                verbose_name="reasoning $/1M",
                            ),
                        ),
                        (
                            "audio_input_per_1m",
                            models.DecimalField(
                                blank=True,
                                decimal_places=6,
                                max_digits=14,
                                null=True,
                                verbose_name="audio input $/1M",
                            ),
                        ),
                        (
                            "audio_output_per_1m",
                            models.DecimalField(
                                blank=True,
                                decimal_places=6,
                                max_digits=14,
                                null=True,
                                verbose_name="audio output $/1M",
                            ),
                        ),
                        (
                            "batch_input_per_1m",
                            models.DecimalField(
                                blank=True,
                                decimal_places=6,
                                max_digits=14,
                                null=True,
                                verbose_name="batch input $/1M",
                            ),
                        ),
                        (
                            "batch_output_per_1m",
                            models.DecimalField(
                                blank=True,
                                decimal_places=6,
                                max_digits=14,
                                null=True,
                                verbose_name="batch output $/1M",
                            ),
                        ),
                        (
                            "flex_input_per_1m",
                            models.DecimalField(
                                blank=True,
                                decimal_places=6,
                                max_digits=14,
                                null=True,
                                verbose_name="flex input $/1M",
                            ),
                        ),
                        (
                            "flex_cached_input_per_1m",
                            models.DecimalField(
                                blank=True,
                                decimal_places=6,
                                max_digits=14,
                                null=True,
                                verbose_name="flex cached $/1M",
                            ),
                        ),
                        (
                            "flex_output_per_1m",
                            models.DecimalField(
                                blank=True,
                                decimal_places=6,
                                max_digits=14,
                                null=True,
                                verbose_name="flex output $/1M",
                            ),
                        ),
                        (
                            "priority_input_per_1m",
                            models.DecimalField(
                                blank=True,
                                decimal_places=6,
                                max_digits=14,
                                null=True,
                                verbose_name="priority input $/1M",
                            ),
                        ),
                        (
                            "priority_cached_input_per_1m",
                            models.DecimalField(
                                blank=True,
                                decimal_places=6,
                                max_digits=14,
                                null=True,
                                verbose_name="priority cached $/1M",
                            ),
                        ),
                        (
                            "priority_output_per_1m",
                            models.DecimalField(
                                blank=True,
                                decimal_places=6,
                                max_digits=14,
                                null=True,
                                verbose_name="priority output $/1M",
                            ),
                        ),
                        (
                            "long_context_threshold",
                            models.PositiveIntegerField(blank=True, null=True),
                        ),
                        (
                            "long_input_per_1m",
                            models.DecimalField(
                                blank=True,
                                decimal_places=6,
                                max_digits=14,
                                null=True,
                                verbose_name="long-context input $/1M",
                            ),
                        ),
                        (
                            "long_cached_input_per_1m",
                            models.DecimalField(
                                blank=True,
                                decimal_places=6,
                                max_digits=14,
                                null=True,
                                verbose_name="long-context cached $/1M",
                            ),
                        ),
                        (
                            "long_output_per_1m",
                            models.DecimalField(
                                blank=True,
                                decimal_places=6,
                                max_digits=14,
                                null=True,
                                verbose_name="long-context output $/1M",
                            ),
                        ),
                        ("context_window", models.PositiveIntegerField(blank=True, null=True)),
                        ("max_output_tokens", models.PositiveIntegerField(blank=True, null=True)),
                        (
                            "encoding",
                            models.CharField(
                                choices=[
                                    ("o200k_base", "o200k_base"),
                                    ("cl100k_base", "cl100k_base"),
                                ],
                                default="o200k_base",
                                max_length=20,
                            ),
                        ),
                        ("tokens_per_message", models.SmallIntegerField(default=3)),
                        ("tokens_per_name", models.SmallIntegerField(default=1)),
                        ("reply_priming", models.SmallIntegerField(default=3)),
                        ("notes", models.TextField(blank=True)),
                        ("created", models.DateTimeField(default=django.utils.timezone.now)),
                        (
                            "organization",
                            models.ForeignKey(
                                blank=True,
                                help_text="Empty for the global price book; set for an organization's negotiated price.",
                                null=True,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="prices",
                                to="conversations.organization",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "conversations_modelprice",
                        "ordering": ["model", "-effective_from"],
                        "indexes": [
                            models.Index(
                                fields=["model", "organization", "-effective_from"],
                                name="price_lookup",
                            )
                        ],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("organization", "model", "effective_from"),
                                name="modelprice_unique_start",
                                nulls_distinct=False,
                            ),
                            models.CheckConstraint(
                                condition=models.Q(
                                    ("input_per_1m__gte", 0), ("output_per_1m__gte", 0)
                                ),
                                name="modelprice_rates_not_negative",
                            ),
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
