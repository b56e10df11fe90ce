from django.urls import path

from . import views

urlpatterns = [
    path("o/<slug:slug>/connections/", views.connections, name="connections"),
    path("o/<slug:slug>/connections/new/", views.connection_new, name="connection_new"),
    path(
        "o/<slug:slug>/connections/<uuid:code>/",
        views.connection_detail,
        name="connection_detail",
    ),
    path(
        "o/<slug:slug>/connections/<uuid:code>/edit/",
        views.connection_edit,
        name="connection_edit",
    ),
    path(
        "o/<slug:slug>/connections/<uuid:code>/delete/",
        views.connection_delete,
        name="connection_delete",
    ),
    path(
        "o/<slug:slug>/connections/<uuid:code>/test/",
        views.connection_test,
        name="connection_test",
    ),
    path("o/<slug:slug>/calls/<uuid:code>/", views.call_detail, name="call_detail"),
    path("o/<slug:slug>/endpoint-keys/", views.endpoint_keys, name="endpoint_keys"),
    path(
        "o/<slug:slug>/endpoint-keys/<uuid:code>/revoke/",
        views.endpoint_key_revoke,
        name="endpoint_key_revoke",
    ),
    path("o/<slug:slug>/chats/", views.chats, name="chats"),
    path("o/<slug:slug>/chats/new/", views.chat_new, name="chat_new"),
    path("o/<slug:slug>/chats/<uuid:code>/", views.chat_detail, name="chat_detail"),
    path("o/<slug:slug>/chats/<uuid:code>/send/", views.chat_send, name="chat_send"),
    path("o/<slug:slug>/chats/<uuid:code>/streaming/", views.chat_streaming, name="chat_streaming"),
    path("o/<slug:slug>/experiments/", views.experiments, name="experiments"),
    path("o/<slug:slug>/experiments/new/", views.experiment_new, name="experiment_new"),
    path(
        "o/<slug:slug>/experiments/<uuid:code>/",
        views.experiment_detail,
        name="experiment_detail",
    ),
    path(
        "o/<slug:slug>/experiments/<uuid:code>/start/",
        views.experiment_start,
        name="experiment_start",
    ),
    path(
        "o/<slug:slug>/experiments/<uuid:code>/cancel/",
        views.experiment_cancel,
        name="experiment_cancel",
    ),
    path(
        "o/<slug:slug>/experiments/<uuid:code>/turns.csv",
        views.experiment_csv,
        name="experiment_csv",
    ),
]
