"""costlab's data model.

One Turn is one API call. Messages are stored once per conversation and a turn names the
messages it sent as index ranges, so a prefix flow of n turns stores O(n) rows, not O(n^2)
(design.md 2.5). Usage is kept as received plus non-overlapping buckets (design.md 2.1);
money is Decimal and NULL when no price applies (design.md 2.2).
"""

from __future__ import annotations

import uuid
import zoneinfo
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from .ranges import request_indexes

# Rates are USD per 1M tokens with 6 places ($0.0025 / 1M, gpt-5-nano flex cached, is exact).
# Costs keep 12 places: one cached gpt-4.1-nano token costs $0.000000025.


def default_time_zone() -> str:
    return str(settings.COSTLAB_TIME_ZONE)


def validate_time_zone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not an IANA time zone name (e.g. Europe/Paris).")


class Organization(models.Model):
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    created = models.DateTimeField(default=timezone.now)
    # Where the organization's days start and end: cost by day, date filters and the daily
    # rollups follow it. Changing it needs `manage.py rollups_rebuild --org <slug>`.
    time_zone = models.CharField(
        max_length=64,
        default=default_time_zone,
        validators=[validate_time_zone],
        help_text="IANA name. After changing it, run manage.py rollups_rebuild --org <slug>.",
    )

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    ANALYST = "analyst", "Analyst"
    ADMIN = "admin", "Admin"


class Membership(models.Model):
    # Names a member in the member pages' URLs (never the user's id).
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(Organization, models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role, default=Role.VIEWER)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "organization"], name="membership_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"

    @property
    def can_import(self) -> bool:
        return self.role in (Role.ANALYST, Role.ADMIN)

    @property
    def can_delete(self) -> bool:
        """Deleting conversations is the analysts' and admins' work, like importing them."""
        return self.role in (Role.ANALYST, Role.ADMIN)

    @property
    def can_chat(self) -> bool:
        """Live chats spend the organization's money on its connections: analysts and up."""
        return self.role in (Role.ANALYST, Role.ADMIN)

    @property
    def can_manage_connections(self) -> bool:
        """Provider connections hold the organization's API keys: admins only."""
        return self.role == Role.ADMIN

    @property
    def is_admin(self) -> bool:
        """Admins manage the organization itself: its members, and deleting it."""
        return self.role == Role.ADMIN


class ImportStatus(models.TextChoices):
    PENDING = "pending", "Waiting for a worker"
    RUNNING = "running", "Importing"
    SUCCEEDED = "succeeded", "Done"
    FAILED = "failed", "Failed"
    DUPLICATE = "duplicate", "Already imported"


def import_upload_path(instance: ImportJob, filename: str) -> str:
    return f"imports/{instance.organization_id}/{instance.code}/{filename}"


class ImportJob(models.Model):
    """One uploaded file (or a command-line import) and what became of it."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.ForeignKey(Organization, models.CASCADE, related_name="import_jobs")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    file = models.FileField(upload_to=import_upload_path, max_length=500, blank=True)
    second_file = models.FileField(upload_to=import_upload_path, max_length=500, blank=True)
    original_name = models.CharField(max_length=300)
    # Each file's name as shown, in file order: original_name joins them with " + ", which
    # a name may hold itself, so it cannot be split back.
    file_names = models.JSONField(default=list, blank=True)
    format = models.CharField(max_length=20, blank=True, help_text="Empty: detect.")
    size_bytes = models.BigIntegerField(default=0)
    content_sha256 = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=10, choices=ImportStatus, default=ImportStatus.PENDING)
    bytes_done = models.BigIntegerField(default=0)
    conversations = models.PositiveIntegerField(default=0)
    turns = models.PositiveIntegerField(default=0)
    messages = models.PositiveIntegerField(default=0)
    tokens = models.BigIntegerField(default=0)
    cost = models.DecimalField(max_digits=24, decimal_places=12, null=True, blank=True)
    unpriced_turns = models.PositiveIntegerField(default=0)
    # Conversations of the file already imported from another one, not stored again.
    skipped_conversations = models.PositiveIntegerField(default=0)
    warnings = models.JSONField(default=list, blank=True)
    # How each file was read: [file name, format] (detected, or as asked), in file order.
    read_as = models.JSONField(default=list, blank=True)
    # Tags given with the upload, set on every conversation the import stores.
    tags = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    duplicate_of = models.ForeignKey(
        "self", models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created = models.DateTimeField(default=timezone.now)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    # Crash recovery (costlab/heartbeat.py): the running worker's last sign of life, and how
    # many times a worker took the job.
    heartbeat = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # When the uploaded files were removed: by the sweep past their keeping time, or with a
    # conversation that came from them (conversations/services/deletion.py).
    files_removed = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # The same content imported twice into one org creates nothing new.
            models.UniqueConstraint(
                fields=["organization", "content_sha256"],
                condition=Q(status="succeeded"),
                name="importjob_unique_content",
            ),
        ]
        indexes = [
            # The imports page: an org's jobs, newest first.
            models.Index(fields=["organization", "-created"], name="importjob_org_recent"),
            # The sweep: running jobs by heartbeat, every few seconds.
            models.Index(
                fields=["heartbeat"], condition=Q(status="running"), name="importjob_running"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.original_name} ({self.status})"

    def read_as_groups(self) -> list[tuple[str, list[str]]]:
        """read_as by format, in the order first read; a member named within its upload."""
        prefix = f"{self.original_name}:"
        groups: dict[str, list[str]] = {}
        for name, kind in self.read_as:
            groups.setdefault(kind, []).append(name.removeprefix(prefix))
        return list(groups.items())

    @property
    def is_finished(self) -> bool:
        return self.status in (ImportStatus.SUCCEEDED, ImportStatus.FAILED, ImportStatus.DUPLICATE)

    @property
    def percent(self) -> int:
        if self.is_finished:
            return 100
        if not self.size_bytes:
            return 0
        return min(99, int(100 * self.bytes_done / self.size_bytes))


class ConversationSource(models.TextChoices):
    IMPORT = "import", "Imported transcript"
    API_LOG = "api_log", "Imported API log"
    BATCH = "batch", "Batch API"
    LIVE = "live", "Live conversation"
    REPLAY = "replay", "Replay"


class Conversation(models.Model):
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.ForeignKey(Organization, models.CASCADE, related_name="conversations")
    import_job = models.ForeignKey(
        ImportJob, models.SET_NULL, null=True, blank=True, related_name="conversation_set"
    )
    source = models.CharField(max_length=10, choices=ConversationSource, default="import")
    external_id = models.CharField(max_length=300, blank=True)
    title = models.CharField(max_length=300, blank=True)
    model = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # Transcripts without timestamps are simulated as one continuous session; say so.
    has_timestamps = models.BooleanField(default=False)
    warnings = models.JSONField(default=list, blank=True)
    # What was imported (messages and calls, not the title): an import skips a conversation
    # already stored from another file (hashing.transcript_sha256).
    content_sha256 = models.CharField(max_length=64, blank=True)
    # Free key/value metadata ({"team": "search", "env": "prod"}): set on import and in the
    # page; breakdowns group and filter by any key (conversations/breakdowns.py).
    tags = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            # The overview's conversation list: an org's conversations, newest first.
            models.Index(fields=["organization", "-created"], name="conversation_org_recent"),
            # An import's duplicate check: the org's conversations by content, and by id.
            models.Index(
                fields=["organization", "content_sha256"], name="conversation_org_content"
            ),
            models.Index(fields=["organization", "external_id"], name="conversation_org_external"),
            # The conversation list sorted by title.
            models.Index(fields=["organization", "title", "id"], name="conversation_org_title"),
            # An org's conversations of one source (the overview's replayed calls): without
            # it, finding the replays scanned every organization's conversations.
            models.Index(fields=["organization", "source"], name="conversation_org_source"),
        ]

    def __str__(self) -> str:
        return self.title or str(self.code)


class Message(models.Model):
    """A message as sent to or received from the API, stored once per conversation."""

    conversation = models.ForeignKey(Conversation, models.CASCADE, related_name="messages")
    index = models.PositiveIntegerField()
    role = models.CharField(max_length=20)
    # The OpenAI chat-format dict as sent: content, name, tool_calls... (counted as-is).
    data = models.JSONField()
    tokens = models.PositiveIntegerField(default=0, help_text="Content tokens, no overhead.")
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["conversation", "index"], name="message_unique_index"),
        ]
        ordering = ["conversation", "index"]

    def __str__(self) -> str:
        return f"#{self.index} {self.role}"

    @property
    def text(self) -> str:
        content: Any = self.data.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        return ""


class MissReason(models.TextChoices):
    NOT_SUPPORTED = "not_supported", "Model has no prompt caching"
    BELOW_MINIMUM = "below_minimum", "Below the caching minimum"
    COLD = "cold", "First sight (cold cache)"
    PREFIX_CHANGED = "prefix_changed", "Prefix changed"
    EXPIRED = "expired", "Expired after idle gap"
    OVERFLOW = "overflow", "Overflow (too many requests/min)"
    BATCH = "batch", "Batch API (no caching)"


class Turn(models.Model):
    """One API call: the messages it sent and the assistant message it got back."""

    conversation = models.ForeignKey(Conversation, models.CASCADE, related_name="turns")
    index = models.PositiveIntegerField()
    # Half-open [start, end) ranges of Message.index that the request sent, in order:
    # a prefix flow is one range per turn, which keeps storage linear.
    request_ranges = models.JSONField()
    response = models.ForeignKey(
        Message, models.SET_NULL, null=True, blank=True, related_name="produced_by"
    )
    model = models.CharField(max_length=200, blank=True)
    service_tier = models.CharField(max_length=20, blank=True)
    prompt_cache_key = models.CharField(max_length=300, blank=True)
    # The request's end user (`safety_identifier`, else the older `user`) when logs carry it.
    end_user = models.CharField(max_length=300, blank=True)
    # The API key (its id or name, never the secret) and project when the log names them.
    api_key = models.CharField(max_length=200, blank=True)
    project = models.CharField(max_length=200, blank=True)
    is_batch = models.BooleanField(default=False)
    tools = models.JSONField(null=True, blank=True)
    response_format = models.JSONField(null=True, blank=True)
    # A tool_choice naming one function, or "none" (they cost prompt tokens; engine render.py).
    tool_choice = models.JSONField(null=True, blank=True)
    # A Responses API call: its tools and format count differently (engine render.py).
    responses_api = models.BooleanField(default=False)
    max_output_tokens = models.PositiveIntegerField(null=True, blank=True)
    external_id = models.CharField(max_length=300, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    # What the engine worked out for this call.
    estimated_prompt_tokens = models.PositiveIntegerField(default=0)
    estimated_completion_tokens = models.PositiveIntegerField(default=0)
    simulated_cached_tokens = models.PositiveIntegerField(default=0)
    # The request's prompt_cache_retention ("24h") and prompt_cache_options (breakpoints).
    cache_retention = models.CharField(max_length=20, blank=True)
    cache_options = models.JSONField(null=True, blank=True)
    # Breakpoint models (GPT-5.6 on): the prefix this call would write, billed as a write.
    simulated_cache_write_tokens = models.PositiveIntegerField(default=0)
    miss_reason = models.CharField(max_length=20, choices=MissReason, blank=True)
    miss_detail = models.CharField(max_length=300, blank=True)
    # prefix_changed: the first differing token and the message holding it (None: tools or
    # response format), so prefix breakers group in the database, not by parsing the detail.
    miss_token = models.PositiveIntegerField(null=True, blank=True)
    miss_message = models.PositiveIntegerField(null=True, blank=True)
    over_context = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["conversation", "index"], name="turn_unique_index"),
        ]
        indexes = [
            # The cache page's prefix breakers: the few turns whose prefix changed, without
            # reading every turn (cache_report.prefix_breakers).
            models.Index(
                fields=["id"],
                condition=models.Q(miss_reason="prefix_changed", miss_token__isnull=False),
                name="turn_prefix_changed",
            ),
        ]
        ordering = ["conversation", "index"]

    def __str__(self) -> str:
        return f"turn {self.index} of {self.conversation_id}"

    @property
    def is_pending(self) -> bool:
        return self.response_id is None

    def request_indexes(self) -> list[int]:
        return request_indexes(self.request_ranges)


class UsageSource(models.TextChoices):
    REPORTED = "reported", "Reported by the API"
    ESTIMATED = "estimated", "Estimated by costlab"
    SIMULATED = "simulated", "Simulated"


class UsageRecord(models.Model):
    """Token usage and cost of one turn from one source.

    A turn has an `estimated` record (our tokenizer, cache from the simulator) and, when the
    API reported usage, a `reported` one. Exactly one per turn has is_billing=True: the
    reported one when it exists, since reported usage always wins."""

    turn = models.ForeignKey(Turn, models.CASCADE, related_name="usage_records")
    # Denormalized from the turn so org pages aggregate without joining three tables.
    organization = models.ForeignKey(Organization, models.CASCADE, related_name="+")
    conversation = models.ForeignKey(Conversation, models.CASCADE, related_name="usage_records")
    occurred_at = models.DateTimeField()
    model = models.CharField(max_length=200, blank=True)
    source = models.CharField(max_length=10, choices=UsageSource)
    cache_source = models.CharField(max_length=10, choices=UsageSource, blank=True)
    is_billing = models.BooleanField(default=False)
    raw = models.JSONField(null=True, blank=True, help_text="The usage JSON exactly as received.")

    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    # Non-overlapping buckets: they add up to total_tokens.
    input_uncached = models.PositiveIntegerField(default=0)
    input_cached = models.PositiveIntegerField(default=0)
    input_cache_write = models.PositiveIntegerField(default=0)
    output = models.PositiveIntegerField(default=0)

    # Whether the call could hit: its model caches and its prompt reaches the policy's
    # minimum. Hit rates count eligible calls only (design.md 2.6: gpt-4 is never a miss).
    cache_eligible = models.BooleanField(default=False)
    # The most a cache could have served this call (breakdowns.CACHEABLE): what the
    # simulator had it hold, for a call with no cause of a miss a fix could remove; NULL
    # where one cost it a hit (its prompt to the policy's step counts then). Kept here, not
    # read from the turn: a join to Turn made every raw read of money lost 2-3x slower.
    cache_ceiling = models.PositiveIntegerField(null=True, blank=True)

    price = models.ForeignKey(
        "pricing.ModelPrice", models.PROTECT, null=True, blank=True, related_name="+"
    )
    cost_input_uncached = models.DecimalField(
        max_digits=24, decimal_places=12, null=True, blank=True
    )
    cost_input_cached = models.DecimalField(max_digits=24, decimal_places=12, null=True, blank=True)
    cost_input_cache_write = models.DecimalField(
        max_digits=24, decimal_places=12, null=True, blank=True
    )
    cost_output = models.DecimalField(max_digits=24, decimal_places=12, null=True, blank=True)
    cost_total = models.DecimalField(max_digits=24, decimal_places=12, null=True, blank=True)
    # What the same call would have cost with no cache at all: the base of "cost reduction".
    cost_uncached = models.DecimalField(max_digits=24, decimal_places=12, null=True, blank=True)

    class Meta:
        constraints = [
            # A re-delivered task or a retried import can never double-record a turn.
            models.UniqueConstraint(fields=["turn", "source"], name="usage_unique_turn_source"),
            models.UniqueConstraint(
                fields=["turn"], condition=Q(is_billing=True), name="usage_one_billing_per_turn"
            ),
            models.CheckConstraint(
                condition=Q(cost_total__isnull=True) | Q(price__isnull=False),
                name="usage_priced_has_price_row",
            ),
        ]
        indexes = [
            # Overview totals, cost by day and by model: an org's billing records by time.
            models.Index(
                fields=["organization", "occurred_at"],
                condition=Q(is_billing=True),
                name="usage_org_billing_time",
            ),
            # Conversation list sorted by cost: billing records of one conversation.
            models.Index(
                fields=["conversation"], condition=Q(is_billing=True), name="usage_conv_billing"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.source} usage of {self.turn_id}"

    @property
    def is_priced(self) -> bool:
        return self.cost_total is not None


# Rollups (conversations/services/rollups.py keeps them in the transaction that writes the
# usage they sum; `manage.py rollups_verify` compares them with the raw rows). They sum
# billing records only, as every page does. Cost columns follow SQL's SUM: NULL when none of
# the calls summed is priced, so "unpriced" stays distinct from "$0".


def cost_sum_field() -> models.DecimalField[Decimal | None, Decimal | None]:
    """A sum of costs: room for a million years of calls, the records' 12 places."""
    return models.DecimalField(max_digits=30, decimal_places=12, null=True, blank=True)


class UsageDay(models.Model):
    """An organization's billing usage on one day (in its time zone) with one model: the
    overview's totals, cost by model and cost by day read these (90 days x 8 models is 720
    rows where the raw usage is a million)."""

    organization = models.ForeignKey(Organization, models.CASCADE, related_name="+")
    day = models.DateField()
    model = models.CharField(max_length=200, blank=True)
    calls = models.BigIntegerField(default=0)
    priced_calls = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)
    input_uncached = models.BigIntegerField(default=0)
    input_cached = models.BigIntegerField(default=0)
    input_cache_write = models.BigIntegerField(default=0)
    output = models.BigIntegerField(default=0)
    cost_total = cost_sum_field()
    cost_input_uncached = cost_sum_field()
    cost_input_cached = cost_sum_field()
    cost_input_cache_write = cost_sum_field()
    cost_output = cost_sum_field()
    # What the priced calls would have cost with no cache (the base of "cost reduction").
    cost_uncached = cost_sum_field()
    eligible_calls = models.BigIntegerField(default=0)
    hit_calls = models.BigIntegerField(default=0)
    # Latency averages are sums over counts: calls without a recorded latency count in neither.
    latency_hit_ms = models.BigIntegerField(default=0)
    latency_hit_calls = models.BigIntegerField(default=0)
    latency_miss_ms = models.BigIntegerField(default=0)
    latency_miss_calls = models.BigIntegerField(default=0)
    # Calibration (engine/calibration.py): billing calls the API reported, compared with
    # costlab's estimate and simulation of the same calls.
    reported_calls = models.BigIntegerField(default=0)
    estimate_exact_calls = models.BigIntegerField(default=0)
    # Sum of (estimated - reported) / reported prompt tokens, each rounded to 12 places so
    # that sums added chunk by chunk equal the sum over all rows exactly.
    estimate_gap_sum = cost_sum_field()
    estimate_gap_calls = models.BigIntegerField(default=0)
    cached_exact_calls = models.BigIntegerField(default=0)
    hit_agreement_calls = models.BigIntegerField(default=0)
    simulated_cached = models.BigIntegerField(default=0)
    reported_cached = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # The upsert's conflict target; it also serves the overview's day ranges.
            models.UniqueConstraint(
                fields=["organization", "day", "model"], name="usageday_unique_key"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization_id} {self.day} {self.model}"


class CacheDay(models.Model):
    """An organization's billing usage on one day (in its time zone) with one model and one
    miss reason (the turn's, "" for a hit or no reason): what the cache page's summary and its
    money lost by reason, day and model read (cache_report.py), and the breakdowns by model
    and by period (breakdowns.py). `lost` and `missed_tokens`
    follow breakdowns.LOST and MISSED_TOKENS; `missed_*` count only the eligible calls that
    got less than their cacheable prefix, the misses that cost."""

    organization = models.ForeignKey(Organization, models.CASCADE, related_name="+")
    day = models.DateField()
    model = models.CharField(max_length=200, blank=True)
    miss_reason = models.CharField(max_length=20, blank=True)
    calls = models.BigIntegerField(default=0)
    priced_calls = models.BigIntegerField(default=0)
    eligible_calls = models.BigIntegerField(default=0)
    hit_calls = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    input_cached = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cost_total = cost_sum_field()
    cost_uncached = cost_sum_field()
    # LOST over every call (0 for a call that missed nothing) and over the missed ones: the
    # two differ in whether the sum is NULL, as the raw sums do.
    lost = cost_sum_field()
    missed_tokens = models.BigIntegerField(default=0)
    missed_calls = models.BigIntegerField(default=0)
    missed_lost = cost_sum_field()
    # The misses a prompt_cache_key caused or could have avoided (cache_report.key_problems):
    # cold misses on a prefix cached under another key, and misses of calls sent without one.
    other_key_calls = models.BigIntegerField(default=0)
    other_key_lost = cost_sum_field()
    no_key_calls = models.BigIntegerField(default=0)
    no_key_lost = cost_sum_field()
    latency_hit_ms = models.BigIntegerField(default=0)
    latency_hit_calls = models.BigIntegerField(default=0)
    latency_miss_ms = models.BigIntegerField(default=0)
    latency_miss_calls = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # The upsert's conflict target; it also serves the cache page's day ranges.
            models.UniqueConstraint(
                fields=["organization", "day", "model", "miss_reason"],
                name="cacheday_unique_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization_id} {self.day} {self.model} {self.miss_reason}"


class DimensionDay(models.Model):
    """An organization's billing usage on one day (in its time zone) with one model, grouped
    by one other dimension: `kind` names it (source, key for prompt_cache_key, end_user,
    api_key, project, or tag:<name>) and `value` is the group's value ("" for calls without
    one). A record is counted once per kind; under tag:<name> only if its conversation has
    that tag. What the breakdowns by those dimensions, and the breakdowns and totals under
    one such filter, sum (breakdowns.py); services/dimension_rollups.py keeps it."""

    organization = models.ForeignKey(Organization, models.CASCADE, related_name="+")
    kind = models.TextField()
    day = models.DateField()
    model = models.CharField(max_length=200, blank=True)
    value = models.TextField(blank=True)
    calls = models.BigIntegerField(default=0)
    priced_calls = models.BigIntegerField(default=0)
    eligible_calls = models.BigIntegerField(default=0)
    hit_calls = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    input_cached = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cost_total = cost_sum_field()
    cost_uncached = cost_sum_field()
    lost = cost_sum_field()  # breakdowns.LOST, as CacheDay.lost

    class Meta:
        constraints = [
            # The upsert's conflict target; it also serves the pages' reads, which name the
            # organization and a kind, then a day range.
            models.UniqueConstraint(
                fields=["organization", "kind", "day", "model", "value"],
                name="dimensionday_unique_key",
            ),
        ]
        indexes = [
            # A breakdown by a dimension of many values (end users, keys): its rows come
            # grouped by value, so the sums stream out without sorting every row first.
            # Keys only, so that adding to a row's sums stays a HOT update.
            models.Index(fields=["organization", "kind", "value"], name="dimensionday_org_value"),
        ]

    def __str__(self) -> str:
        return f"{self.organization_id} {self.kind}={self.value} {self.day} {self.model}"


class BreakerDay(models.Model):
    """A conversation's calls on one day (in the organization's time zone) with one model
    whose prefix changed at one place: message position (-1: the tools or the response
    format) and 128-token block, as cache_report.prefix_breakers groups them. Per
    conversation so that the page can count the conversations a breaker reaches; only the
    conversations with such calls have rows."""

    organization = models.ForeignKey(Organization, models.CASCADE, related_name="+")
    conversation = models.ForeignKey(Conversation, models.CASCADE, related_name="+")
    day = models.DateField()
    model = models.CharField(max_length=200, blank=True)
    message = models.IntegerField()
    block = models.IntegerField()
    calls = models.BigIntegerField(default=0)
    lost = cost_sum_field()  # breakdowns.LOST
    first_token = models.IntegerField()  # the lowest and highest token the prefix broke at
    last_token = models.IntegerField()
    first_turn = models.BigIntegerField()  # the lowest and highest turn id, for the
    last_turn = models.BigIntegerField()  # side-by-side of two requests

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "day", "model", "message", "block"],
                name="breakerday_unique_key",
            ),
        ]
        indexes = [models.Index(fields=["organization", "day"], name="breakerday_org_day")]

    def __str__(self) -> str:
        return f"{self.conversation_id} {self.day} {self.model} {self.message}/{self.block}"


class CalibrationGap(models.Model):
    """How many reported calls of a day and model were estimated `gap_permille` thousandths
    off (|estimated - reported| / reported prompt tokens, rounded): the histogram the
    calibration table's 95th percentile is read from, to the 0.1 % the page shows."""

    organization = models.ForeignKey(Organization, models.CASCADE, related_name="+")
    day = models.DateField()
    model = models.CharField(max_length=200, blank=True)
    gap_permille = models.BigIntegerField()
    calls = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "day", "model", "gap_permille"],
                name="calibrationgap_unique_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization_id} {self.day} {self.model} {self.gap_permille}"


class ConversationDay(models.Model):
    """A conversation's billing usage on one day with one model: the conversation list
    under a date or model filter sums these (about one row per conversation)."""

    organization = models.ForeignKey(Organization, models.CASCADE, related_name="+")
    conversation = models.ForeignKey(Conversation, models.CASCADE, related_name="+")
    day = models.DateField()
    model = models.CharField(max_length=200, blank=True)
    calls = models.BigIntegerField(default=0)
    priced_calls = models.BigIntegerField(default=0)
    cost_total = cost_sum_field()
    total_tokens = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    input_cached = models.BigIntegerField(default=0)
    # The rest of a breakdown row's figures, for the breakdown by conversation over part of
    # the time (ConversationTotals carries them too, for the whole period).
    cost_uncached = cost_sum_field()
    completion_tokens = models.BigIntegerField(default=0)
    eligible_calls = models.BigIntegerField(default=0)
    hit_calls = models.BigIntegerField(default=0)
    lost = cost_sum_field()  # breakdowns.LOST, as CacheDay.lost

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "day", "model"], name="conversationday_unique_key"
            ),
        ]
        indexes = [
            # The filtered conversation list: an org's rows by day, and by model and day.
            models.Index(fields=["organization", "day"], name="conversationday_org_day"),
            models.Index(fields=["organization", "model", "day"], name="conversationday_org_model"),
        ]

    def __str__(self) -> str:
        return f"{self.conversation_id} {self.day} {self.model}"


class ConversationTotals(models.Model):
    """A conversation's billing usage over all time: the unfiltered conversation list and
    the whole-period breakdown by conversation read their top rows straight off one index
    per sort. Summed from the conversation's ConversationDay rows by every write path
    (services/rollups.py, _totals_insert_sql), so it carries the same columns."""

    conversation = models.OneToOneField(
        Conversation, models.CASCADE, primary_key=True, related_name="totals"
    )
    organization = models.ForeignKey(Organization, models.CASCADE, related_name="+")
    calls = models.BigIntegerField(default=0)
    priced_calls = models.BigIntegerField(default=0)
    cost_total = cost_sum_field()
    total_tokens = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    input_cached = models.BigIntegerField(default=0)
    # The rest of a breakdown row's figures: the breakdown by conversation over the whole
    # period reads its top rows here instead of summing every ConversationDay row.
    cost_uncached = cost_sum_field()
    completion_tokens = models.BigIntegerField(default=0)
    eligible_calls = models.BigIntegerField(default=0)
    hit_calls = models.BigIntegerField(default=0)
    lost = cost_sum_field()  # breakdowns.LOST, as CacheDay.lost
    # priced_calls > 0, kept as a column so the cost sort has a plain index: an unpriced
    # conversation (cost NULL) sorts below every priced one both ways, as it did before.
    is_priced = models.BooleanField(default=False)

    class Meta:
        indexes = [
            # One per sort of the list; a descending sort walks its index backwards, which
            # is why the tie-breaker (conversation) follows the sort's direction.
            models.Index(
                fields=["organization", "is_priced", "cost_total", "conversation"],
                name="convtotals_org_cost",
            ),
            models.Index(
                fields=["organization", "is_priced", "lost", "conversation"],
                name="convtotals_org_lost",
            ),
            models.Index(
                fields=["organization", "calls", "conversation"], name="convtotals_org_calls"
            ),
            models.Index(
                fields=["organization", "total_tokens", "conversation"],
                name="convtotals_org_tokens",
            ),
            # A conversation's row found from the organization's conversations (the list
            # sorted by the conversation's own columns): one row per probe, never the scan
            # of every totals row of the organization per conversation.
            models.Index(
                fields=["organization", "conversation"], name="convtotals_org_conversation"
            ),
        ]

    def __str__(self) -> str:
        return f"totals of {self.conversation_id}"
