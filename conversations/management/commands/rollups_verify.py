from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations.management.cli import organization_option, require_migrated
from conversations.models import Organization
from conversations.services.rollups import organization_drift

# Lines of drift printed per organization: the count says how many there are in all.
SHOWN = 50


class Command(BaseCommand):
    help = (
        "Compare the rollups pages read (per day x model, per conversation) with the raw "
        "usage rows; print every difference and exit 1 when there is one."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", help="Only this organization (its slug); default: all.")

    def handle(self, *args: Any, **options: Any) -> None:
        require_migrated()
        chosen = organization_option(options["org"])
        organizations = [chosen] if chosen else list(Organization.objects.order_by("slug"))
        drifted = 0
        for organization in organizations:
            drift = organization_drift(organization=organization)
            if not drift:
                self.stdout.write(f"{organization.slug}: rollups match the raw rows")
                continue
            drifted += 1
            self.stdout.write(f"{organization.slug}: {len(drift)} rollup row(s) drifted")
            for line in drift[:SHOWN]:
                self.stdout.write(f"  {line}")
        if drifted:
            raise CommandError(
                f"rollups drifted in {drifted} organization(s): "
                "`python manage.py rollups_rebuild` rebuilds them"
            )
