from __future__ import annotations

from functools import partial
from typing import Any

from django.http import HttpRequest

from .selectors import user_organizations


def organizations(request: HttpRequest) -> dict[str, Any]:
    """The organization switcher in the header lists the user's organizations only."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"my_organizations": []}
    # A callable, which the template calls where it lists them: a partial (an HTMX swap of
    # a table) renders no header and makes no query for it.
    return {"my_organizations": partial(user_organizations, user)}
