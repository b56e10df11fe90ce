from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from . import breakdowns
from .formats import FORMATS
from .models import ConversationSource, Role
from .selectors import CONVERSATION_SORTS, UsageFilter
from .services.imports import shown_name

SOURCE_CHOICES = list(ConversationSource.choices)
# What each format is, in the words of the files people have (README, "Importing").
FORMAT_LABELS = {
    "chat_json": "Chat JSON: {model, messages}, or a list of them",
    "chat_jsonl": "Chat JSONL: one {messages} per line",
    "api_log": "API log: one call (request, response, usage) per line",
    "batch": "Batch API: the input file, with its output file below",
    "sharegpt": "ShareGPT conversations",
    "chatgpt_export": "ChatGPT data export (conversations.json or its zip)",
    "zip": "A .zip of any of these",
}
# Each format's short name, for sentences ("Read as Chat JSONL (detected).").
FORMAT_NAMES = {
    "chat_json": "Chat JSON",
    "chat_jsonl": "Chat JSONL",
    "api_log": "API log",
    "batch": "Batch API",
    "sharegpt": "ShareGPT",
    "chatgpt_export": "ChatGPT export",
    "zip": "zip",
}
FORMAT_CHOICES = [("", "Detect automatically")] + [
    (f, FORMAT_LABELS.get(f, f.replace("_", " "))) for f in FORMATS
]


def dates_in_order(form: forms.Form, cleaned: dict[str, Any]) -> None:
    """To before From is said, and no end date is applied (the start still is)."""
    start, end = cleaned.get("date_from"), cleaned.get("date_to")
    if start and end and start > end:
        form.add_error("date_to", "it is before From: no end date is applied.")


class UsageFilterForm(forms.Form):
    date_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    model = forms.CharField(required=False, max_length=200)
    sort = forms.ChoiceField(required=False, choices=[(s, s) for s in CONVERSATION_SORTS])

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        dates_in_order(self, cleaned)
        return cleaned

    def to_filter(self) -> UsageFilter:
        """The filter of the fields that are valid: one that is not (a date that is no
        date) is left out, and the page says so (form.errors), the others still apply."""
        self.is_valid()
        data = self.cleaned_data
        return UsageFilter(
            date_from=data.get("date_from"),
            date_to=data.get("date_to"),
            model=data.get("model") or "",
        )

    @property
    def sort_value(self) -> str:
        self.is_valid()  # a valid sort stays when another field is invalid
        return self.cleaned_data.get("sort") or "-cost"


class UploadForm(forms.Form):
    # Empty files are refused in clean(), where the message can name the file.
    file = forms.FileField(
        help_text="JSON, JSONL, gzip-compressed (.gz) or a .zip holding them.",
        allow_empty_file=True,
    )
    second_file = forms.FileField(
        required=False,
        label="Batch output file",
        help_text="Only for the Batch API: the output file that goes with the input file.",
        allow_empty_file=True,
    )
    format = forms.ChoiceField(choices=FORMAT_CHOICES, required=False)
    tags = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Optional: name=value per line, set on every conversation of the file.",
    )

    def clean_tags(self) -> dict[str, str]:
        return parse_tags(self.cleaned_data.get("tags") or "")

    def clean(self) -> dict[str, object]:
        cleaned = super().clean() or {}
        limit = settings.COSTLAB_MAX_UPLOAD_BYTES
        for name in ("file", "second_file"):
            upload = cleaned.get(name)
            if upload is None:
                continue
            shown = shown_name(upload.name or "upload")
            if not upload.size:
                self.add_error(name, f"{shown}: empty file, nothing to import.")
            elif upload.size > limit:
                self.add_error(
                    name,
                    f"{shown} is {upload.size:,} bytes; the limit is {limit:,} bytes "
                    "(COSTLAB_MAX_UPLOAD_BYTES). Split the file, or ask your admin to raise it.",
                )
        return cleaned


class InviteForm(forms.Form):
    identifier = forms.CharField(
        label="Username or email address", max_length=254, help_text="An existing account."
    )
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class OrganizationDeleteForm(forms.Form):
    """Deleting an organization is typed out: its slug, as a check that it is this one."""

    confirm = forms.CharField(label="Type the organization's short name to confirm")

    def __init__(self, *args: Any, slug: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slug = slug

    def clean_confirm(self) -> str:
        value = str(self.cleaned_data["confirm"]).strip()
        if value != self.slug:
            raise forms.ValidationError(f"Type {self.slug} to delete this organization.")
        return value


AUTO_APPLY = {"class": "auto-apply"}  # the filters that apply on change (see the template)


class BreakdownForm(forms.Form):
    """The filters of the breakdown, cache and export pages: they combine, and all live in
    the URL's query string so that a link, Back and an export see the same slice."""

    date_from = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date", **AUTO_APPLY})
    )
    date_to = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date", **AUTO_APPLY})
    )
    model = forms.CharField(required=False, max_length=200)
    source = forms.ChoiceField(
        required=False,
        choices=[("", "All sources"), *SOURCE_CHOICES],
        widget=forms.Select(attrs=AUTO_APPLY),
    )
    key = forms.CharField(required=False, max_length=300, label="prompt_cache_key")
    user = forms.CharField(required=False, max_length=300, label="End user")
    tag = forms.CharField(required=False, max_length=300, help_text="name=value")
    by = forms.CharField(required=False, max_length=120)
    compare = forms.BooleanField(required=False)

    def clean_tag(self) -> tuple[str, str] | None:
        text = (self.cleaned_data.get("tag") or "").strip()
        if not text:
            return None
        name, sep, value = text.partition("=")
        if not sep or not name.strip():
            raise forms.ValidationError("Write a tag filter as name=value.")
        return name.strip(), value.strip()

    def clean_by(self) -> str:
        by = self.cleaned_data.get("by") or "model"
        if breakdowns.dimension_get(by) is None:
            raise forms.ValidationError(f"Unknown grouping {by!r}.")
        return by

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        dates_in_order(self, cleaned)
        return cleaned

    def _data(self) -> dict[str, Any]:
        """The fields that are valid: one bad filter (shown as an error) drops itself only."""
        self.is_valid()
        return self.cleaned_data

    def to_slice(self, zone: str = "UTC") -> breakdowns.Slice:
        """The filters as a slice; dates are days in `zone` (the organization's)."""
        data = self._data()
        tag = data.get("tag")
        return breakdowns.Slice.of_dates(
            data.get("date_from"),
            data.get("date_to"),
            zone=zone,
            model=data.get("model") or "",
            source=data.get("source") or "",
            # A key filter of "-" selects the calls sent without a key.
            prompt_cache_key=_none_or(data.get("key")),
            end_user=_none_or(data.get("user")),
            tag_key=tag[0] if tag else "",
            tag_value=tag[1] if tag else "",
        )

    @property
    def dimension(self) -> breakdowns.Dimension:
        by = self._data().get("by") or "model"
        return breakdowns.dimension_get(by) or breakdowns.DIMENSIONS["model"]

    @property
    def compare_value(self) -> bool:
        return bool(self._data().get("compare"))


NO_VALUE = "-"


def _none_or(text: str | None) -> str | None:
    """A filter text: None when empty (no filter), "" for NO_VALUE (calls without one)."""
    if not text:
        return None
    return "" if text == NO_VALUE else text


MAX_TAGS = 50


def parse_tags(text: str) -> dict[str, str]:
    """Lines of name=value (blank lines skipped) -> tags; a bad line names its number."""
    tags: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise forms.ValidationError(f"Line {number}: write a tag as name=value.")
        if len(name.strip()) > 100 or len(value.strip()) > 300:
            raise forms.ValidationError(
                f"Line {number}: names up to 100 characters, values up to 300."
            )
        tags[name.strip()] = value.strip()
    if len(tags) > MAX_TAGS:
        raise forms.ValidationError(f"At most {MAX_TAGS} tags per conversation.")
    return tags


def tags_text(tags: dict[str, str]) -> str:
    return "\n".join(f"{name}={value}" for name, value in sorted(tags.items()))


class TagsForm(forms.Form):
    """A conversation's tags as lines of name=value."""

    tags = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4}))

    def clean_tags(self) -> dict[str, str]:
        return parse_tags(self.cleaned_data.get("tags") or "")
