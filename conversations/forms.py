from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from .formats import FORMATS
from .models import Role
from .selectors import CONVERSATION_SORTS, UsageFilter
from .services.imports import shown_name

FORMAT_CHOICES = [("", "Detect automatically")] + [(f, f.replace("_", " ")) for f in FORMATS]


class UsageFilterForm(forms.Form):
    date_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    model = forms.CharField(required=False, max_length=200)
    sort = forms.ChoiceField(required=False, choices=[(s, s) for s in CONVERSATION_SORTS])

    def to_filter(self) -> UsageFilter:
        data = self.cleaned_data if self.is_valid() else {}
        return UsageFilter(
            date_from=data.get("date_from"),
            date_to=data.get("date_to"),
            model=data.get("model") or "",
        )

    @property
    def sort_value(self) -> str:
        return (self.cleaned_data.get("sort") if self.is_valid() else None) or "-cost"


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
