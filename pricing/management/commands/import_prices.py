from __future__ import annotations

import json
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from conversations.management.cli import organization_option, require_migrated
from pricing import litellm, services


class Command(BaseCommand):
    help = (
        "Import LiteLLM's model_prices_and_context_window.json as new dated price rows "
        "(USD per token in the file, USD per 1M tokens in costlab). History is never rewritten."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument(
            "--effective-from",
            help="Date (YYYY-MM-DD) or ISO datetime the new rows apply from; default now.",
        )
        parser.add_argument(
            "--provider",
            action="append",
            help="LiteLLM provider to import (repeatable); default openai.",
        )
        parser.add_argument("--all-providers", action="store_true")
        parser.add_argument(
            "--org", help="Organization slug for negotiated prices; default global."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        require_migrated()
        path: Path = options["file"]
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise CommandError(f"{path}: no such file") from exc
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CommandError(f"{path}: not valid JSON: {exc}") from exc
        providers = None if options["all_providers"] else set(options["provider"] or ["openai"])
        try:
            entries = litellm.entries(data, providers=providers)
        except litellm.PriceFileError as exc:
            raise CommandError(f"{path}: {exc}") from exc
        organization = organization_option(options["org"])
        result = services.prices_import(
            entries=entries,
            effective_from=self._when(options["effective_from"]),
            organization=organization,
        )
        self.stdout.write(
            f"{len(entries)} chat models read: {len(result.created)} new rows, "
            f"{len(result.unchanged)} unchanged, {len(result.existing)} already had a row at that date."
        )

    def _when(self, value: str | None) -> datetime:
        if not value:
            return timezone.now()
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise CommandError(
                f"--effective-from {value!r}: use YYYY-MM-DD or an ISO datetime"
            ) from exc
        if len(value) == 10:
            parsed = datetime.combine(parsed.date(), time.min)
        return parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=UTC)
