from __future__ import annotations

from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations import breakdowns
from conversations.csv_export import csv_lines
from conversations.jsonl_export import jsonl_lines
from conversations.management.cli import organization_by_slug, require_migrated

BY = (
    "conversation", "turn", "model", "day", "week", "month", "key", "user", "api_key", "project",
    "source",
)  # fmt: skip


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CommandError(f"{text!r} is not a date: use YYYY-MM-DD") from None


class Command(BaseCommand):
    help = (
        "Write an organization's usage as CSV (or JSON Lines) on standard output, one row per "
        "conversation, turn, model, day, prompt_cache_key or end user. Streams: any size fits "
        "in memory."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, help="The organization's slug.")
        parser.add_argument(
            "--by",
            default="conversation",
            help=f"One of {', '.join(BY)}, or tag:NAME (default: conversation).",
        )
        parser.add_argument(
            "--from",
            dest="date_from",
            help="First day (YYYY-MM-DD, in the organization's time zone).",
        )
        parser.add_argument("--to", dest="date_to", help="Last day, included (YYYY-MM-DD).")
        parser.add_argument(
            "--compare",
            action="store_true",
            help="A breakdown (--by model, day, ...) with the previous period's cost and calls "
            "beside each group (the period of the same length before --from; needs --to).",
        )
        parser.add_argument(
            "--format",
            choices=("csv", "jsonl"),
            default="csv",
            help="csv (default) or jsonl: one JSON object a row, money as exact decimal strings.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        require_migrated()
        organization = organization_by_slug(options["org"])
        by = options["by"]
        date_from = _date(options["date_from"]) if options["date_from"] else None
        date_to = _date(options["date_to"]) if options["date_to"] else None
        if date_from and date_to and date_to < date_from:
            raise CommandError(f"--to {date_to} is before --from {date_from}")
        slice_ = breakdowns.Slice.of_dates(date_from, date_to, zone=organization.time_zone)
        if by == "turn":
            header = [name for name, _ in breakdowns.TURN_COLUMNS]
            rows = breakdowns.turn_export_rows(organization, slice_)
        elif by == "conversation":
            header = list(breakdowns.CONVERSATION_COLUMNS)
            rows = breakdowns.conversation_export_rows(organization, slice_)
        else:
            dimension = breakdowns.dimension_get(by)
            if dimension is None or (by not in BY and not by.startswith(breakdowns.TAG_PREFIX)):
                raise CommandError(f"--by {by!r}: expected one of {', '.join(BY)} or tag:NAME")
            previous = slice_.previous() if options["compare"] else None
            if options["compare"] and previous is None:
                raise CommandError("--compare needs --from and --to")
            header = breakdowns.breakdown_export_header(
                dimension, with_previous=breakdowns.compared(slice_, previous, dimension)
            )
            rows = breakdowns.breakdown_export_rows(organization, slice_, dimension, previous)
        lines = (
            jsonl_lines(header, rows) if options["format"] == "jsonl" else csv_lines(header, rows)
        )
        for line in lines:
            self.stdout.write(line, ending="")  # each line ends itself (csv: \r\n)
