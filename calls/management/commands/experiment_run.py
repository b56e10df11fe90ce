from __future__ import annotations

import json
import time
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from calls import selectors
from calls.models import HistoryMode, ProviderConnection
from calls.services.experiments import (
    ExperimentInvalid,
    ExperimentRefused,
    experiment_create,
    experiment_start,
    parse_cap,
    variant_parse,
)
from conversations.models import Conversation, Organization

POLL_SECONDS = 0.5


class Command(BaseCommand):
    help = (
        "Re-run stored conversations under one or more variants through the workers and "
        "print costlab's prediction beside the measurement. Example: --variant "
        '"model=gpt-4o-mini,strategy=window:8" (fields: model, strategy, connection, label, '
        "cache_key, retention, breakpoints, ttl, pacing, stream; README, Experiments)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, help="The organization's slug.")
        parser.add_argument(
            "--conversations", required=True, help="Conversation codes, comma-separated."
        )
        parser.add_argument("--variant", action="append", required=True, help="A variant.")
        parser.add_argument(
            "--connection", help="The connection of variants that name none (its name)."
        )
        parser.add_argument("--cap", help="Stop once the measured spend reaches this (USD).")
        parser.add_argument("--history", choices=HistoryMode.values, default=HistoryMode.RECORDED)
        parser.add_argument("--name", default="")
        parser.add_argument(
            "--yes", action="store_true", help="Confirm a spend above the threshold."
        )
        parser.add_argument("--wait", action="store_true", help="Wait for the workers.")
        parser.add_argument("--timeout", type=float, default=3600, help="With --wait (s).")
        parser.add_argument("--format", choices=("text", "json"), default="text")

    def handle(self, *args: Any, **options: Any) -> None:
        organization = Organization.objects.filter(slug=options["org"]).first()
        if organization is None:
            raise CommandError(f"no organization with slug {options['org']!r}")
        codes = [c.strip() for c in options["conversations"].split(",") if c.strip()]
        conversations = []
        for code in codes:
            try:
                found = Conversation.objects.filter(
                    organization=organization, code=uuid.UUID(code)
                ).first()
            except ValueError:  # not a code at all
                found = None
            if found is None:
                raise CommandError(f"--conversations: no conversation {code!r} in this org")
            conversations.append(found)
        connection = None
        if options["connection"]:
            connection = ProviderConnection.objects.filter(
                organization=organization, name=options["connection"]
            ).first()
            if connection is None:
                raise CommandError(f"--connection: no connection named {options['connection']!r}")
        try:
            experiment = experiment_create(
                organization=organization,
                user=None,
                conversations=conversations,
                variants=[variant_parse(text) for text in options["variant"]],
                connection=connection,
                history_mode=options["history"],
                cap=parse_cap(options["cap"]),
                name=options["name"],
            )
            experiment = experiment_start(
                experiment=experiment, membership=None, confirmed=options["yes"]
            )
        except (ExperimentInvalid, ExperimentRefused) as error:
            raise CommandError(str(error)) from None
        if options["wait"]:
            deadline = time.monotonic() + options["timeout"]
            while not experiment.is_finished:
                if time.monotonic() > deadline:
                    raise CommandError(
                        f"experiment {experiment.code} still {experiment.status} after "
                        f"{options['timeout']:.0f} s (is a worker running?)"
                    )
                time.sleep(POLL_SECONDS)
                experiment.refresh_from_db()
        report = selectors.experiment_report(experiment)
        if options["format"] == "json":
            self.stdout.write(json.dumps(report, indent=2))
            return
        self._text(report)

    def _text(self, report: dict[str, Any]) -> None:
        write = self.stdout.write
        write(f"experiment {report['experiment']}: {report['status']}")
        if report["error"]:
            write(f"  {report['error']}")
        write(
            f"  turns {report['turns_done']}/{report['turns_total']}, spent ${report['spent']}"
            f" (estimated ${report['predicted_spend']}, cap ${report['cap']})"
        )
        for variant in report["variants"]:
            predicted, measured = variant["predicted"], variant["measured"]
            write(f"- {variant['label']}")
            write(
                f"    predicted: cost ${predicted['cost']}, cached "
                f"{predicted['cached_tokens']:,}/{predicted['prompt_tokens']:,} tokens, "
                f"peak prompt {predicted['peak_prompt_tokens']:,}, {predicted['calls']} calls"
            )
            write(
                f"    measured:  cost ${measured['cost']}, cached "
                f"{measured['cached_tokens']:,}/{measured['prompt_tokens']:,} tokens, "
                f"{measured['calls']} calls, {measured['failed_calls']} failed"
            )
