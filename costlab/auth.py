"""Logging in: the throttled log-in forms, and the admin site that only superusers enter."""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from . import throttle
from .security import client_address


def login_limits() -> tuple[throttle.Limit, throttle.Limit]:
    window = settings.COSTLAB_LOGIN_WINDOW_SECONDS
    return (
        throttle.Limit("login-user", settings.COSTLAB_LOGIN_FAILURES_PER_USER, window),
        throttle.Limit("login-address", settings.COSTLAB_LOGIN_FAILURES_PER_ADDRESS, window),
    )


class ThrottledAuthenticationForm(AuthenticationForm):
    """Refuses to check a password for a username, or from an address, that failed too
    often lately; a refused attempt checks nothing, so it teaches a guesser nothing."""

    def clean(self) -> dict[str, Any]:
        by_user, by_address = login_limits()
        # Usernames are matched exactly, but counting "Demo" apart from "demo" helps no one.
        username = str(self.cleaned_data.get("username") or "").strip().lower()
        address = client_address(self.request) if self.request else ""
        wait = max(
            throttle.retry_after(limit=by_user, subject=username),
            throttle.retry_after(limit=by_address, subject=address),
        )
        if wait:
            minutes = math.ceil(wait / 60)
            raise ValidationError(
                "Too many failed log-in attempts for this account or from this address. "
                f"Try again in {minutes} minute{'s' if minutes != 1 else ''}.",
                code="throttled",
            )
        try:
            cleaned = super().clean()
        except ValidationError:
            # Only a wrong password counts, not a right one for an account that may not enter.
            if self.get_user() is None:
                throttle.failure_record(limit=by_user, subject=username)
                throttle.failure_record(limit=by_address, subject=address)
            raise
        # The address count stays: an attacker's own good log-in must not reset it.
        throttle.failures_clear(limit=by_user, subject=username)
        return cleaned


class OperatorAuthenticationForm(ThrottledAuthenticationForm, AdminAuthenticationForm):
    def confirm_login_allowed(self, user: Any) -> None:
        super().confirm_login_allowed(user)
        if not user.is_superuser:
            raise ValidationError(
                "Django admin is for site operators (superusers) only; "
                "organizations are managed in costlab itself.",
                code="not_superuser",
            )


class OperatorAdminSite(admin.AdminSite):
    """Django admin sees every organization's data, so only superusers enter: a staff
    flag or model permissions alone are not enough."""

    login_form = OperatorAuthenticationForm

    def has_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)
