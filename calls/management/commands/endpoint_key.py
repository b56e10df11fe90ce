from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from calls.services.connections import endpoint_key_issue
from conversations.models import Organization


class Command(BaseCommand):
    help = (
        "Issue a key for costlab's own OpenAI-compatible endpoint (/v1/) in an organization "
        "and print it. It is shown this once: only its hash is stored."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, help="The organization's slug.")
        parser.add_argument("--name", default="", help="What the key is for.")

    def handle(self, *args: Any, **options: Any) -> None:
        organization = Organization.objects.filter(slug=options["org"]).first()
        if organization is None:
            raise CommandError(f"no organization with slug {options['org']!r}")
        _, plain = endpoint_key_issue(organization=organization, name=options["name"])
        self.stdout.write(plain)
