from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from django import forms

from conversations.models import Organization

from .models import HistoryMode, ProviderConnection
from .services.connections import ConnectionSettings

HEADER_HELP = (
    'Optional JSON object of extra request headers, e.g. {"X-Costlab-Fault": "429"} against '
    "costlab's own endpoint. Shown on this page: never put a secret here."
)


class ConnectionForm(forms.Form):
    """A connection's settings. The key field is write-only: it is never filled in when the
    page renders (PasswordInput does not render its value), on an error either."""

    name = forms.CharField(max_length=100)
    base_url = forms.CharField(
        max_length=500, label="Base URL", help_text="The API root, e.g. https://api.openai.com/v1"
    )
    api_key = forms.CharField(
        label="API key", max_length=500, required=False, widget=forms.PasswordInput
    )
    default_model = forms.CharField(max_length=200, initial="gpt-4o-mini")
    openai_organization = forms.CharField(
        max_length=100, required=False, label="OpenAI organization"
    )
    openai_project = forms.CharField(max_length=100, required=False, label="OpenAI project")
    rpm_limit = forms.IntegerField(min_value=1, required=False, label="Requests per minute")
    tpm_limit = forms.IntegerField(min_value=1, required=False, label="Tokens per minute")
    monthly_spend_cap = forms.DecimalField(
        min_value=0,
        max_digits=14,
        decimal_places=2,
        required=False,
        label="Monthly spend cap (USD)",
    )
    extra_headers = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text=HEADER_HELP
    )

    def __init__(self, *args: Any, connection: ProviderConnection | None = None, **kwargs: Any):
        if connection is not None and "initial" not in kwargs:
            kwargs["initial"] = {
                "name": connection.name,
                "base_url": connection.base_url,
                "default_model": connection.default_model,
                "openai_organization": connection.openai_organization,
                "openai_project": connection.openai_project,
                "rpm_limit": connection.rpm_limit,
                "tpm_limit": connection.tpm_limit,
                "monthly_spend_cap": connection.monthly_spend_cap,
                "extra_headers": json.dumps(connection.extra_headers)
                if connection.extra_headers
                else "",
            }
        super().__init__(*args, **kwargs)
        self.connection = connection
        if connection is None:
            self.fields["api_key"].required = True
        else:
            self.fields[
                "api_key"
            ].help_text = f"Now ending in {connection.api_key_last4}. Leave empty to keep it."

    def full_clean(self) -> None:
        super().full_clean()
        if self.is_bound and self.errors and self.data.get(self.add_prefix("api_key")):
            # The form comes back with its errors, and a password field comes back empty:
            # say so, or the key typed is lost without a word (kept, it would be rendered).
            # The bound field copied its help text when cleaning made it: set there too.
            note = "Not shown back: type the key again."
            self.fields["api_key"].help_text = note
            self["api_key"].help_text = note

    def clean_base_url(self) -> str:
        url = str(self.cleaned_data["base_url"]).strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise forms.ValidationError("Enter an http:// or https:// URL.")
        return url.rstrip("/")

    def clean_extra_headers(self) -> dict[str, str]:
        text = str(self.cleaned_data.get("extra_headers") or "").strip()
        if not text:
            return {}
        try:
            headers = json.loads(text)
        except ValueError:
            raise forms.ValidationError("Enter a JSON object.") from None
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise forms.ValidationError('Enter a JSON object of strings: {"Header": "value"}.')
        return headers

    def settings(self) -> ConnectionSettings:
        data = self.cleaned_data
        return ConnectionSettings(
            name=data["name"],
            base_url=data["base_url"],
            default_model=data["default_model"],
            openai_organization=data["openai_organization"],
            openai_project=data["openai_project"],
            rpm_limit=data["rpm_limit"],
            tpm_limit=data["tpm_limit"],
            monthly_spend_cap=data["monthly_spend_cap"],
            extra_headers=data["extra_headers"],
        )


class ChatForm(forms.Form):
    connection = forms.ModelChoiceField(queryset=ProviderConnection.objects.none())
    model = forms.CharField(
        max_length=200,
        required=False,
        help_text="Empty: the connection's default. The models priced here are suggested.",
        widget=forms.TextInput(attrs={"list": "priced-models", "autocomplete": "off"}),
    )
    system_prompt = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 5}))
    use_cache_key = forms.BooleanField(
        required=False, initial=True, label="Send prompt_cache_key (the chat's id)"
    )
    stream = forms.BooleanField(required=False, initial=True, label="Stream the reply")
    max_completion_tokens = forms.IntegerField(
        min_value=1, max_value=100_000, required=False, label="Max completion tokens"
    )

    def __init__(self, *args: Any, connections: list[ProviderConnection], **kwargs: Any):
        super().__init__(*args, **kwargs)
        field = self.fields["connection"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = ProviderConnection.objects.filter(pk__in=[c.pk for c in connections])
        if connections:
            field.initial = connections[0].pk


class MessageForm(forms.Form):
    text = forms.CharField(
        max_length=100_000, widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Your message"})
    )


class EndpointKeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the key is for.")
    # A token per form shown: the same form sent again (a reload of the page that showed the
    # new key re-posts it) issues no second key (views.endpoint_keys).
    once = forms.CharField(max_length=32, required=False, widget=forms.HiddenInput)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial["once"] = uuid.uuid4().hex


VARIANTS_HELP = (
    "One variant per line: model=gpt-4o-mini,strategy=window:8 (fields: model, strategy "
    "full|window:K|trim:TOKENS|summarize:TOKENS, connection, label, cache_key "
    "none|conversation|experiment, retention, breakpoints implicit|explicit, ttl, pacing "
    "fast|fixed:SECONDS|recorded[/FACTOR], stream true|false)."
)


class ExperimentForm(forms.Form):
    """A new experiment: which conversations (the overview's filtered ones are offered), the
    variants in the command's syntax, the default connection, the history mode and a cap."""

    name = forms.CharField(
        max_length=200,
        required=False,
        help_text="Empty: named by when it was made.",
        widget=forms.TextInput(attrs={"placeholder": "e.g. window:8 on support chats"}),
    )
    conversations = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple)
    variants = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=VARIANTS_HELP,
        initial="model=gpt-4o-mini,strategy=full\nmodel=gpt-4o-mini,strategy=window:8",
    )
    # With several connections none is picked (an experiment spends on it): the empty
    # choice says so, where "---------" left a walk's user guessing why Predict was refused.
    connection = forms.ModelChoiceField(
        queryset=ProviderConnection.objects.none(), empty_label="Choose a connection…"
    )
    history_mode = forms.ChoiceField(choices=HistoryMode.choices, initial=HistoryMode.RECORDED)
    cap = forms.DecimalField(
        min_value=Decimal("0.0001"),
        max_digits=14,
        decimal_places=4,
        required=False,
        label="Spend cap (USD)",
        help_text="The run stops once its measured spend reaches it. Empty: twice the estimate.",
    )

    def __init__(
        self,
        *args: Any,
        organization: Organization,
        candidates: list[tuple[str, str]],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        chosen = self.fields["conversations"]
        assert isinstance(chosen, forms.MultipleChoiceField)
        chosen.choices = candidates
        field = self.fields["connection"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = organization.provider_connections.order_by("name")
        if not self.is_bound:
            self.initial["conversations"] = [code for code, _ in candidates]
            # As the chat form does: with a single connection (make run's "built-in") there
            # is nothing to choose, and an empty select only made the browser refuse the form.
            only = list(field.queryset[:2])
            if len(only) == 1:
                self.initial["connection"] = only[0].pk


class ExperimentStartForm(forms.Form):
    cap = forms.DecimalField(
        min_value=Decimal("0.0001"),
        max_digits=14,
        decimal_places=4,
        required=False,
        label="Spend cap (USD)",
    )
    confirm = forms.BooleanField(required=False, label="I confirm this spend")
