"""Naming why two requests' prefixes part (engine/divergence.py)."""

from __future__ import annotations

from typing import Any

from conversations.engine.divergence import RequestView, compare_requests
from conversations.engine.profiles import default_profile

PROFILE = default_profile("gpt-4o")
RULES = "You are a helpful assistant. Follow the rules."


def tool(name: str, description: str = "d") -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": {"type": "object"}},
    }


def view(system: str, **kwargs: Any) -> RequestView:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "hi"}]
    return RequestView(messages=messages, **kwargs)


def test_it_names_a_timestamp_and_shows_the_framing_around_it() -> None:
    left = view(f"Now: 2026-11-02 09:00. {RULES}", prompt_cache_key="k")
    right = view(f"Now: 2026-11-02 10:30. {RULES}", prompt_cache_key="k")

    divergence = compare_requests(left, right, profile=PROFILE)

    assert divergence.causes == ["volatile_system"]
    assert divergence.message == 0
    # The chat framing before the text is shown as markers, never decoded as a token.
    assert divergence.left.before == "system<|message|>Now: 2026-11-02 "  # 12 tokens
    assert divergence.left.differing.startswith("09")
    assert divergence.right.differing.startswith("10")
    # Only what differs is marked: the rules after the time are the same on both sides.
    assert (divergence.left.differing, divergence.right.differing) == ("09:00", "10:30")
    assert divergence.left.after == divergence.right.after
    assert divergence.left.after.startswith(". ") and RULES.startswith(divergence.left.after[2:])


def test_it_names_tool_order_schema_format_and_keys() -> None:
    a, b = tool("search"), tool("fetch")
    base = view(RULES, tools=[a, b], prompt_cache_key="k")
    assert compare_requests(base, view(RULES, tools=[b, a], prompt_cache_key="k"),
                            profile=PROFILE).causes == ["tools_order"]  # fmt: skip
    changed = view(RULES, tools=[a, tool("fetch", "other")], prompt_cache_key="k")
    assert compare_requests(base, changed, profile=PROFILE).causes == ["tool_schema"]
    other = view(RULES, tools=[a], prompt_cache_key="k")
    assert compare_requests(base, other, profile=PROFILE).causes == ["tools_changed"]
    formatted = view(
        RULES, tools=[a, b], prompt_cache_key="k", response_format={"type": "json_object"}
    )
    assert compare_requests(base, formatted, profile=PROFILE).causes == ["response_format"]
    rekeyed = view(RULES, tools=[a, b], prompt_cache_key="k2")
    assert compare_requests(base, rekeyed, profile=PROFILE).causes == ["cache_key"]
    unkeyed = compare_requests(view("A. " + RULES), view("B. " + RULES), profile=PROFILE)
    assert unkeyed.causes == ["system_changed", "missing_cache_key"]
    assert unkeyed.token is not None
