from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from .selectors import user_organizations


def organizations(request: HttpRequest) -> dict[str, Any]:
    """The organization switcher in the header lists the user's organizations only."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"my_organizations": []}
    return {"my_organizations": user_organizations(user)}
