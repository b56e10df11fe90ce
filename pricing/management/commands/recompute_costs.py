from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations.management.cli import organization_option, require_migrated
from pricing import services


class Command(BaseCommand):
    help = (
        "Re-price stored usage with the current price book (after adding or correcting a "
        "price). Logged as a CostRecompute; nothing changes without running this."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", help="Organization slug; default every organization.")
        parser.add_argument("--since", help="Only usage on or after this date (YYYY-MM-DD).")

    def handle(self, *args: Any, **options: Any) -> None:
        require_migrated()
        organization = organization_option(options["org"])
        since = None
        if options["since"]:
            try:
                since = datetime.fromisoformat(options["since"]).replace(tzinfo=UTC)
            except ValueError as exc:
                raise CommandError(f"--since {options['since']!r}: use YYYY-MM-DD") from exc
        log = services.costs_recompute(organization=organization, since=since)
        self.stdout.write(
            f"{log.records} usage records re-priced, {log.changed} changed: "
            f"${log.cost_before:.6f} -> ${log.cost_after:.6f} (priced records only)"
        )
