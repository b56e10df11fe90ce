"""Operator views of calls/. Keys are never shown: a connection's key is edited on the
organization's own pages, where it is encrypted on the way in."""

from __future__ import annotations

from django.contrib import admin

from .models import ApiCall, CallAttempt, Chat, EndpointKey, ProviderConnection


@admin.register(ProviderConnection)
class ProviderConnectionAdmin(admin.ModelAdmin[ProviderConnection]):
    list_display = ("name", "organization", "base_url", "masked_key", "default_model")
    list_filter = ("organization",)
    exclude = ("api_key_encrypted",)
    readonly_fields = ("api_key_last4", "created_by")


@admin.register(EndpointKey)
class EndpointKeyAdmin(admin.ModelAdmin[EndpointKey]):
    list_display = ("name", "organization", "last4", "created", "revoked")
    list_filter = ("organization",)
    readonly_fields = ("key_hash", "last4", "created_by")


@admin.register(Chat)
class ChatAdmin(admin.ModelAdmin[Chat]):
    list_display = ("conversation", "organization", "model", "connection", "created")
    list_filter = ("organization",)
    raw_id_fields = ("conversation", "connection", "created_by")


class CallAttemptInline(admin.TabularInline[CallAttempt, ApiCall]):
    model = CallAttempt
    extra = 0
    can_delete = False
    readonly_fields = (
        "number",
        "started_at",
        "outcome",
        "status_code",
        "latency_ms",
        "retry_after_seconds",
        "wait_ms",
        "error",
    )
    fields = readonly_fields


@admin.register(ApiCall)
class ApiCallAdmin(admin.ModelAdmin[ApiCall]):
    list_display = ("code", "purpose", "organization", "model", "status", "requested_at", "cost")
    list_filter = ("status", "purpose", "organization")
    raw_id_fields = ("chat", "turn", "connection")
    inlines = [CallAttemptInline]
