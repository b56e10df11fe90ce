from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from pricing.admin import recompute_costs

from .models import Conversation, ImportJob, Membership, Organization
from .services import deletion, rollups


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

    def save_model(self, request: HttpRequest, obj: Organization, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change and "time_zone" in form.changed_data:
            # Its days moved: the daily rollups are regrouped (the admin view is atomic).
            rollups.organization_rebuild(organization=obj)

    # Deleting goes through the service: uploaded files and cache entries go too.
    def delete_model(self, request: HttpRequest, obj: Organization) -> None:
        deletion.organization_delete(organization=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        for organization in queryset:
            deletion.organization_delete(organization=organization)


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin[Conversation]):
    list_display = ("title", "organization", "model", "source", "created")
    list_filter = ("organization", "source")
    search_fields = ("title", "external_id")
    raw_id_fields = ("import_job",)

    def delete_model(self, request: HttpRequest, obj: Conversation) -> None:
        deletion.conversation_delete(conversation=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> None:
        for conversation in queryset:
            deletion.conversation_delete(conversation=conversation)


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin[ImportJob]):
    list_display = ("original_name", "organization", "status", "conversations", "turns", "created")
    list_filter = ("status", "organization")
    readonly_fields = ("content_sha256", "warnings", "error")

    def delete_model(self, request: HttpRequest, obj: ImportJob) -> None:
        self.delete_queryset(request, ImportJob.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ImportJob]) -> None:
        names = deletion.upload_names(queryset)
        queryset.delete()
        transaction.on_commit(lambda: deletion.files_delete(names))
