from __future__ import annotations

import dataclasses
import json
from functools import partial
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from conversations.engine.analysis import analyze_chunked
from conversations.engine.cache import parse_retention
from conversations.engine.levers import compare_levers
from conversations.engine.report import (
    analysis_to_json,
    levers_to_json,
    render_levers,
    render_table,
)
from conversations.engine.strategies import parse_strategy, plan_strategy
from conversations.engine.types import Transcript
from conversations.formats import FORMATS, parse_files
from conversations.formats.errors import ParseError
from conversations.management.cli import organization_option, require_migrated
from pricing.book import PriceBook

# Exit status for input that is not a transcript (argparse uses 2 for bad usage too).
NOT_A_TRANSCRIPT = 2


class Command(BaseCommand):
    help = (
        "Analyse a transcript file (any supported format) without storing anything: tokens, "
        "simulated prompt caching with the reason for each miss, cost per turn."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "files", nargs="+", type=Path, help="A file, or a Batch input + output pair."
        )
        parser.add_argument("--model", help="Price and count every call as this model.")
        parser.add_argument(
            "--retention", default="10m", help="Cache retention scenario: 5m, 10m, 1h or 24h."
        )
        parser.add_argument(
            "--strategy", default="full", help="full, window:K, trim:TOKENS or summarize:TOKENS."
        )
        parser.add_argument("--format", choices=["table", "json"], default="table")
        parser.add_argument(
            "--input-format",
            choices=FORMATS,
            help="Skip format detection (the same option as import_transcripts').",
        )
        parser.add_argument("--org", help="Use this organization's negotiated prices too.")
        parser.add_argument(
            "--levers",
            action="store_true",
            help="Also compare prompt_cache_key choices, extended retention and explicit "
            "breakpoints on the same calls, each priced with its cache writes.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            retention = parse_retention(options["retention"])
            strategy = parse_strategy(options["strategy"])
        except ValueError as exc:
            raise CommandError(str(exc), returncode=NOT_A_TRANSCRIPT) from exc
        # The input is judged first (exit status 2), then the price book is read.
        file_warnings: list[str] = []
        transcripts = self._read(
            options["files"], options["input_format"], options["model"], file_warnings
        )
        require_migrated()
        organization = organization_option(options["org"])
        book = PriceBook.for_organization(organization)
        now = timezone.now()

        if strategy.kind != "full":
            transcripts = [
                plan_strategy(t, strategy, profile_for=book.profile).transcript for t in transcripts
            ]
        # In the import's chunks, so that the figures are the import's (analysis.analyze_chunked).
        analysis = analyze_chunked(
            transcripts,
            profile_for=book.profile,
            policy_for=book.policy,
            rates_for=partial(book.call_rates, now=now),
            retention_seconds=retention,
            default_model=options["model"],
        )
        levers = None
        if options["levers"]:
            levers = compare_levers(
                transcripts,
                profile_for=book.profile,
                policy_for=book.policy,
                rates_for=partial(book.call_rates, now=now),
                retention_seconds=retention,
                default_model=options["model"],
            )
        if options["format"] == "json":
            data = analysis_to_json(analysis, file_warnings)
            if levers is not None:
                data["levers"] = levers_to_json(levers)
            self.stdout.write(json.dumps(data, indent=2))
        else:
            self.stdout.write(render_table(analysis, file_warnings))
            if levers is not None:
                self.stdout.write(render_levers(levers))

    def _read(
        self,
        files: list[Path],
        input_format: str | None,
        model: str | None,
        file_warnings: list[str],
    ) -> list[Transcript]:
        for path in files:
            if not path.is_file():
                raise CommandError(f"{path}: no such file", returncode=NOT_A_TRANSCRIPT)
        try:
            # The same memory limits as an import: analyze holds every transcript at once.
            transcripts = list(
                parse_files(
                    files,
                    format=input_format,
                    max_record_bytes=settings.COSTLAB_MAX_RECORD_BYTES,
                    max_ratio=settings.COSTLAB_MAX_COMPRESSION_RATIO,
                    on_warning=file_warnings.append,
                )
            )
        except ParseError as exc:
            raise CommandError(f"not a transcript: {exc}", returncode=NOT_A_TRANSCRIPT) from exc
        if not transcripts:
            raise CommandError(
                f"not a transcript: no conversations in {', '.join(map(str, files))}",
                returncode=NOT_A_TRANSCRIPT,
            )
        if model:
            transcripts = [_with_model(t, model) for t in transcripts]
        return transcripts


def _with_model(transcript: Transcript, model: str) -> Transcript:
    """What-if: the same requests sent to another model."""
    calls = transcript.calls
    if calls is not None:
        calls = [dataclasses.replace(c, model=model) for c in calls]
    return dataclasses.replace(transcript, model=model, calls=calls)
