from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("o/<slug:slug>/", views.org_overview, name="org_overview"),
    path("o/<slug:slug>/conversations/", views.conversation_table, name="conversation_table"),
    path("o/<slug:slug>/c/<uuid:code>/", views.conversation_detail, name="conversation_detail"),
    path(
        "o/<slug:slug>/c/<uuid:code>/what-if/",
        views.conversation_what_if,
        name="conversation_what_if",
    ),
    path(
        "o/<slug:slug>/c/<uuid:code>/delete/",
        views.conversation_delete,
        name="conversation_delete",
    ),
    path("o/<slug:slug>/c/<uuid:code>/tags/", views.conversation_tags, name="conversation_tags"),
    path("o/<slug:slug>/cache/", views.cache_page, name="cache_page"),
    path("o/<slug:slug>/cache/fixes/", views.cache_fixes, name="cache_fixes"),
    path("o/<slug:slug>/breakdown/", views.breakdown_page, name="breakdown_page"),
    path("o/<slug:slug>/export.csv", views.usage_export, name="usage_export"),
    path("o/<slug:slug>/imports/", views.imports, name="imports"),
    path("o/<slug:slug>/imports/<uuid:code>/", views.import_job_detail, name="import_job_detail"),
    path(
        "o/<slug:slug>/imports/<uuid:code>/progress/",
        views.import_job_progress,
        name="import_job_progress",
    ),
    path("o/<slug:slug>/members/", views.members, name="members"),
    path("o/<slug:slug>/members/<uuid:code>/role/", views.member_role, name="member_role"),
    path("o/<slug:slug>/members/<uuid:code>/remove/", views.member_remove, name="member_remove"),
    path("o/<slug:slug>/delete/", views.organization_delete, name="organization_delete"),
]
