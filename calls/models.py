"""Calling models (design.md 2.9): provider connections and their budgets, keys of costlab's
own endpoint, live chats, and every call and attempt made.

A call is recorded once per (chat, index) by a unique constraint, and its turn once per
(conversation, index) by conversations.Turn's: a re-delivered task changes nothing. Every
attempt has its own row, written before the request leaves, so spend duplicated by a retry
or by a worker killed mid-call stays visible.
"""

from __future__ import annotations

import hashlib
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from conversations.models import Conversation, Organization, Turn


class ProviderConnection(models.Model):
    """An OpenAI-compatible endpoint and the organization's key for it."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.ForeignKey(
        Organization, models.CASCADE, related_name="provider_connections"
    )
    name = models.CharField(max_length=100)
    base_url = models.CharField(
        max_length=500, help_text="The API root, e.g. https://api.openai.com/v1."
    )
    # Fernet token (calls/crypto.py); the plain key is never stored, shown or logged.
    api_key_encrypted = models.TextField()
    api_key_last4 = models.CharField(max_length=4)
    openai_organization = models.CharField(max_length=100, blank=True)
    openai_project = models.CharField(max_length=100, blank=True)
    default_model = models.CharField(max_length=200, blank=True)
    rpm_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests per minute across all workers; empty: none."
    )
    tpm_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Tokens per minute across all workers; empty: none."
    )
    monthly_spend_cap = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True, help_text="USD; empty: none."
    )
    # Sent with every request: a gateway's routing header, or costlab's own endpoint's
    # X-Costlab-Fault for tests. Shown on the pages, so never a secret.
    extra_headers = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created = models.DateTimeField(default=timezone.now)
    updated = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="connection_unique_name"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def masked_key(self) -> str:
        return f"…{self.api_key_last4}"


class RateBudget(models.Model):
    """A connection's token buckets, shared by every worker through the database: requests
    and tokens available now, refilled at rpm/60 and tpm/60 per second since `refreshed`."""

    connection = models.OneToOneField(ProviderConnection, models.CASCADE, related_name="budget")
    requests = models.FloatField()
    tokens = models.FloatField()
    refreshed = models.DateTimeField()

    def __str__(self) -> str:
        return f"budget of {self.connection_id}"


def key_digest(key: str) -> str:
    """How an endpoint key is stored and looked up."""
    return hashlib.sha256(key.encode()).hexdigest()


class EndpointKey(models.Model):
    """A key for costlab's own /v1/ endpoint. Each key is one simulated organization: two
    keys never share a prompt cache. Stored as a SHA-256 (the key is 256 random bits, so a
    plain hash suffices and keeps lookups one indexed query)."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.ForeignKey(Organization, models.CASCADE, related_name="endpoint_keys")
    name = models.CharField(max_length=100, blank=True)
    key_hash = models.CharField(max_length=64, unique=True)
    last4 = models.CharField(max_length=4)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created = models.DateTimeField(default=timezone.now)
    revoked = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name or 'key'} …{self.last4}"


class Chat(models.Model):
    """A live conversation: its settings here, its messages and turns in `conversation`
    (source "live"), like any imported one."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.ForeignKey(Organization, models.CASCADE, related_name="chats")
    conversation = models.OneToOneField(Conversation, models.CASCADE, related_name="chat")
    connection = models.ForeignKey(
        ProviderConnection, models.SET_NULL, null=True, blank=True, related_name="chats"
    )
    model = models.CharField(max_length=200)
    system_prompt = models.TextField(blank=True)
    use_cache_key = models.BooleanField(
        default=True, help_text="Send prompt_cache_key (the chat's id) with every call."
    )
    stream = models.BooleanField(default=True)
    max_completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return str(self.conversation)

    @property
    def prompt_cache_key(self) -> str | None:
        return str(self.code) if self.use_cache_key else None


class CallPurpose(models.TextChoices):
    CHAT = "chat", "Live chat turn"
    TEST = "test", "Connection test"
    REPLAY = "replay", "Experiment replay turn"


class ExperimentStatus(models.TextChoices):
    DRAFT = "draft", "Predicted, not started"
    PENDING = "pending", "Waiting for a worker"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Finished"
    CANCELLED = "cancelled", "Cancelled"
    CAPPED = "capped", "Stopped at the spend cap"
    FAILED = "failed", "Failed"


class HistoryMode(models.TextChoices):
    RECORDED = "recorded", "Recorded replies (same prefix as the original)"
    FRESH = "fresh", "Fresh replies (the model's new replies enter the history)"


class Experiment(models.Model):
    """Stored conversations re-run under one or more variants, measured beside costlab's
    prediction (design.md 2.9). A long job (costlab/heartbeat.py): claimed, beating, swept;
    its turns are written as they are made, each once (ApiCall's unique (replay, index)), so
    a run taken over after its worker died goes on where the last one stopped."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.ForeignKey(Organization, models.CASCADE, related_name="experiments")
    name = models.CharField(max_length=200, blank=True)
    conversations = models.ManyToManyField(Conversation, related_name="+")
    history_mode = models.CharField(
        max_length=10, choices=HistoryMode.choices, default=HistoryMode.RECORDED
    )
    status = models.CharField(
        max_length=10, choices=ExperimentStatus.choices, default=ExperimentStatus.DRAFT
    )
    # USD; the run stops once its measured spend reaches it. Empty: no cap.
    cap = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    # costlab's estimate of the spend, all variants; None: some model is unpriced.
    predicted_spend = models.DecimalField(max_digits=24, decimal_places=12, null=True, blank=True)
    turns_total = models.PositiveIntegerField(default=0, help_text="Calls planned, all variants.")
    cancel_requested = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, help_text="Why it stopped, when not by finishing.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created = models.DateTimeField(default=timezone.now)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        indexes = [
            # The experiments page: an organization's experiments, newest first.
            models.Index(fields=["organization", "-created"], name="experiment_org_recent"),
        ]

    def __str__(self) -> str:
        return self.name or f"experiment {self.code}"

    @property
    def title(self) -> str:
        """Its name, or when it was made: a list of unnamed experiments read as UUIDs."""
        return self.name or f"Experiment of {timezone.localtime(self.created):%Y-%m-%d %H:%M}"

    @property
    def is_finished(self) -> bool:
        return self.status in (
            ExperimentStatus.SUCCEEDED,
            ExperimentStatus.CANCELLED,
            ExperimentStatus.CAPPED,
            ExperimentStatus.FAILED,
        )


class CacheKeyPolicy(models.TextChoices):
    NONE = "none", "No prompt_cache_key"
    CONVERSATION = "conversation", "One key per replayed conversation"
    EXPERIMENT = "experiment", "One key for the whole experiment"


class Pacing(models.TextChoices):
    FIXED = "fixed", "A fixed gap between turns (0: as fast as budgets allow)"
    RECORDED = "recorded", "The recorded gaps, divided by a factor"


class Variant(models.Model):
    """One way of re-running the experiment's conversations, and its prediction."""

    experiment = models.ForeignKey(Experiment, models.CASCADE, related_name="variants")
    position = models.PositiveSmallIntegerField()
    label = models.CharField(max_length=200)
    connection = models.ForeignKey(
        ProviderConnection, models.SET_NULL, null=True, blank=True, related_name="variants"
    )
    model = models.CharField(max_length=200)
    strategy = models.CharField(max_length=50, default="full")
    cache_key = models.CharField(
        max_length=12, choices=CacheKeyPolicy.choices, default=CacheKeyPolicy.CONVERSATION
    )
    # prompt_cache_retention sent with every call ("24h"); empty: the provider's default.
    retention = models.CharField(max_length=10, blank=True)
    # Breakpoint models: prompt_cache_options sent ({"mode": "explicit", "ttl": "1h"}).
    cache_options = models.JSONField(null=True, blank=True)
    pacing = models.CharField(max_length=10, choices=Pacing.choices, default=Pacing.FIXED)
    # fixed: seconds between turns; recorded: the factor the recorded gaps are divided by.
    pacing_value = models.FloatField(default=0)
    stream = models.BooleanField(default=False)
    # costlab's prediction, all conversations: {"cost", "cached_share", "peak_prompt_tokens",
    # "calls", ...} (costs as decimal strings, None when unpriced).
    prediction = models.JSONField(default=dict)

    class Meta:
        ordering = ["experiment", "position"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "position"], name="variant_position"),
        ]

    def __str__(self) -> str:
        return self.label


class Replay(models.Model):
    """One original conversation under one variant: its plan (the calls to make, each with
    costlab's prediction) and, once started, the stored conversation (source "replay") its
    turns are recorded in."""

    experiment = models.ForeignKey(Experiment, models.CASCADE, related_name="replays")
    variant = models.ForeignKey(Variant, models.CASCADE, related_name="replays")
    original = models.ForeignKey(
        Conversation, models.SET_NULL, null=True, blank=True, related_name="replays_of"
    )
    conversation = models.OneToOneField(
        Conversation, models.SET_NULL, null=True, blank=True, related_name="replay"
    )
    # The messages the replay sends: the original's (and the strategy's summaries), each
    # with whether the run produces it (a summary; a reply in fresh-replies mode).
    messages = models.JSONField(default=list)
    # Per call: request (message indices), response index, max tokens, gap, prediction.
    plan = models.JSONField(default=list)

    class Meta:
        ordering = ["variant", "id"]
        constraints = [
            models.UniqueConstraint(fields=["variant", "original"], name="replay_one_per_original"),
        ]

    def __str__(self) -> str:
        return f"replay {self.pk} of {self.original_id}"


class CallStatus(models.TextChoices):
    PENDING = "pending", "Waiting for a worker"
    RUNNING = "running", "Calling"
    SUCCEEDED = "succeeded", "Done"
    FAILED = "failed", "Failed"


class ApiCall(models.Model):
    """One logical call (a chat turn, a connection test) and what became of it."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.ForeignKey(Organization, models.CASCADE, related_name="api_calls")
    # A deleted connection keeps its calls: they are spend history.
    connection = models.ForeignKey(
        ProviderConnection, models.SET_NULL, null=True, blank=True, related_name="calls"
    )
    purpose = models.CharField(max_length=10, choices=CallPurpose.choices)
    chat = models.ForeignKey(Chat, models.CASCADE, null=True, blank=True, related_name="calls")
    replay = models.ForeignKey(Replay, models.CASCADE, null=True, blank=True, related_name="calls")
    index = models.PositiveIntegerField(
        null=True, blank=True, help_text="Turn index in the chat or replay."
    )
    # The request sends messages [0, request_end) of the chat's conversation.
    request_end = models.PositiveIntegerField(default=0)
    model = models.CharField(max_length=200)
    stream = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=CallStatus.choices, default=CallStatus.PENDING)
    error = models.TextField(blank=True)
    requested_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    attempt_count = models.PositiveSmallIntegerField(default=0)
    usage = models.JSONField(null=True, blank=True, help_text="Reported usage, as received.")
    service_tier = models.CharField(max_length=20, blank=True)
    cost = models.DecimalField(max_digits=24, decimal_places=12, null=True, blank=True)
    reply = models.TextField(blank=True, help_text="Connection tests: the reply received.")
    turn = models.OneToOneField(
        Turn, models.SET_NULL, null=True, blank=True, related_name="api_call"
    )

    class Meta:
        constraints = [
            # The guard of idempotency: one call per chat turn, however often it is sent.
            models.UniqueConstraint(
                fields=["chat", "index"],
                condition=Q(chat__isnull=False),
                name="apicall_one_per_chat_turn",
            ),
            # The same guard for experiments: one call per replayed turn.
            models.UniqueConstraint(
                fields=["replay", "index"],
                condition=Q(replay__isnull=False),
                name="apicall_one_per_replay_turn",
            ),
        ]
        indexes = [
            # Monthly spend cap: a connection's calls since the first of the month.
            models.Index(fields=["connection", "requested_at"], name="apicall_connection_time"),
            # A send's check of the chat's calls still waiting (and lost), and the sweep's
            # look for stale ones: the few calls not finished, not every call ever made.
            models.Index(
                fields=["chat"],
                condition=Q(status__in=["pending", "running"]),
                name="apicall_waiting",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.purpose} call {self.code} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in (CallStatus.SUCCEEDED, CallStatus.FAILED)


class AttemptOutcome(models.TextChoices):
    SENT = "sent", "Sent, no answer recorded (worker stopped?)"
    OK = "ok", "Answered"
    RATE_LIMITED = "rate_limited", "Rate limited (429)"
    SERVER_ERROR = "server_error", "Server error (5xx)"
    TIMEOUT = "timeout", "Timed out"
    CONNECTION_ERROR = "connection_error", "Connection failed"
    CLIENT_ERROR = "client_error", "Refused (4xx)"


class CallAttempt(models.Model):
    """One HTTP request of a call. Written as `sent` before it leaves, then completed."""

    call = models.ForeignKey(ApiCall, models.CASCADE, related_name="attempts")
    number = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    outcome = models.CharField(
        max_length=20, choices=AttemptOutcome.choices, default=AttemptOutcome.SENT
    )
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    retry_after_seconds = models.FloatField(null=True, blank=True)
    wait_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="How long the service waited before the next attempt."
    )
    usage = models.JSONField(null=True, blank=True)
    response_id = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["call", "number", "id"]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.call_id}: {self.outcome}"
