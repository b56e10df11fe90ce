from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from conversations.management.cli import organization_option, require_migrated
from conversations.models import Organization
from conversations.services.rollups import organization_rebuild


class Command(BaseCommand):
    help = (
        "Rebuild the rollups pages read from the raw usage rows, one organization per "
        "transaction (after changing an organization's time zone, or when rollups_verify "
        "reports drift)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", help="Only this organization (its slug); default: all.")

    def handle(self, *args: Any, **options: Any) -> None:
        require_migrated()
        chosen = organization_option(options["org"])
        organizations = [chosen] if chosen else list(Organization.objects.order_by("slug"))
        for organization in organizations:
            started = time.perf_counter()
            with transaction.atomic():
                organization_rebuild(organization=organization)
            seconds = time.perf_counter() - started
            self.stdout.write(f"{organization.slug}: rollups rebuilt in {seconds:.1f} s")
