from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from calls import endpoint
from costlab.auth import ThrottledAuthenticationForm

urlpatterns = [
    path("admin/", admin.site.urls),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(authentication_form=ThrottledAuthenticationForm),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # costlab's own OpenAI-compatible endpoint (calls/endpoint.py): base_url .../v1
    path("v1/chat/completions", endpoint.chat_completions, name="endpoint_chat_completions"),
    path("v1/models", endpoint.models, name="endpoint_models"),
    path("", include("conversations.urls")),
    path("", include("calls.urls")),
]
