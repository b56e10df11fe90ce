from __future__ import annotations

from django.contrib import admin

from pricing.admin import recompute_costs

from .models import Conversation, ImportJob, Membership, Organization


class MembershipInline(admin.TabularInline[Membership, Organization]):
    model = Membership
    extra = 1
    raw_id_fields = ("user",)


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin[Organization]):
    list_display = ("name", "slug", "created")
    prepopulated_fields = {"slug": ("name",)}
    inlines = [MembershipInline]
    actions = [recompute_costs]


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin[Conversation]):
    list_display = ("title", "organization", "model", "source", "created")
    list_filter = ("organization", "source")
    search_fields = ("title", "external_id")
    raw_id_fields = ("import_job",)


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin[ImportJob]):
    list_display = ("original_name", "organization", "status", "conversations", "turns", "created")
    list_filter = ("status", "organization")
    readonly_fields = ("content_sha256", "warnings", "error")
