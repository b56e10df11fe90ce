from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations.formats import FORMATS
from conversations.forms import parse_tags
from conversations.management.cli import organization_by_slug, require_migrated
from conversations.models import ImportStatus
from conversations.services import imports


class Command(BaseCommand):
    help = (
        "Import transcripts or API logs into an organization, all or nothing. "
        "Two files are a Batch API input file and its output file."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", type=Path)
        parser.add_argument("--org", required=True, help="Organization slug.")
        # --format was this option's first name; analyze's --format is its output format.
        parser.add_argument(
            "--input-format",
            "--format",
            dest="input_format",
            choices=FORMATS,
            help="Skip format detection (the same option as analyze's).",
        )
        parser.add_argument(
            "--tag",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="A tag set on every conversation of the files (repeatable).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        require_migrated()
        organization = organization_by_slug(options["org"])
        paths: list[Path] = options["files"]
        for path in paths:
            if not path.is_file():
                raise CommandError(f"{path}: no such file")
        try:
            tags = parse_tags("\n".join(options["tag"]))
        except ValidationError as exc:
            raise CommandError(f"--tag: {' '.join(exc.messages)}") from None
        job = imports.import_path(
            organization=organization,
            paths=paths,
            format=options["input_format"] or "",
            tags=tags,
        )
        if job.status == ImportStatus.DUPLICATE:
            self.stdout.write(f"{job.original_name}: already imported, nothing new created.")
            return
        if job.status != ImportStatus.SUCCEEDED:
            raise CommandError(f"{job.error}\nNothing was stored.")
        cost = f"${job.cost:.6f}" if job.cost is not None else "unpriced"
        self.stdout.write(
            f"{job.original_name}: {job.conversations} conversations, {job.turns} turns, "
            f"{job.messages} messages, {job.tokens:,} tokens, {cost}"
            + (f" ({job.unpriced_turns} unpriced turns)" if job.unpriced_turns else "")
            + (
                f"; {job.skipped_conversations} conversations already imported, skipped"
                if job.skipped_conversations
                else ""
            )
        )
        for warning in job.warnings[:20]:
            self.stdout.write(f"  warning: {warning}")
