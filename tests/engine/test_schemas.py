"""Tool definitions as the namespace text the API shows the model (schemas.py)."""

from __future__ import annotations

from typing import Any

from conversations.engine.profiles import default_profile
from conversations.engine.render import count_request
from conversations.engine.schemas import (
    labelled_item_objects,
    tools_text,
    undescribed_first_properties,
)
from conversations.engine.types import ChatMessage


def test_it_renders_pydantic_schemas_as_commented_types() -> None:
    # The shapes of crewai's and mirascope's tools: titles, defaults, a $ref, a docstring.
    parameters: dict[str, Any] = {
        "$defs": {
            "Author": {
                "properties": {"name": {"title": "Name", "type": "string"}},
                "required": ["name"],
                "title": "Author",
                "type": "object",
            }
        },
        "properties": {
            "query": {"description": "Search query", "title": "Query", "type": "string"},
            "limit": {"default": 10, "title": "Limit", "type": "integer"},
            "order": {"default": "asc", "enum": ["asc", "desc"], "type": "string"},
            "author": {"$ref": "#/$defs/Author"},
            "tag": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        },
        "required": ["query", "author"],
        "title": "search_input",
        "type": "object",
    }
    function = {
        "name": "search",
        "description": "Search the books.\n\n    Args:\n        query: what to find\n    ",
        "parameters": parameters,
    }
    assert tools_text([{"type": "function", "function": function}]) == "\n".join(
        [
            "namespace functions {",
            "",
            "// Search the books.",
            "//",
            "// Args:",
            "// query: what to find",
            "type search = (_: {",
            "// search_input",
            "// Query",
            "// Search query",
            "query: string,",
            "// Limit",
            "limit?: number, // default: 10",
            'order?: "asc" | "desc", // default: asc',
            "// Author",
            "author: {",
            "// Name",
            "name: string,",
            "},",
            "tag?: string | null, // default: null",
            "}) => any;",
            "",
            "} // namespace functions",
        ]
    )


def test_it_takes_a_token_off_only_for_an_undescribed_first_property_that_is_no_object() -> None:
    # tests/fixtures/real/activeagent.jsonl lines 123-134: `params: {...}` first, exact as text.
    def function(first: dict[str, Any]) -> dict[str, Any]:
        parameters = {"type": "object", "properties": {"first": first}}
        return {"type": "function", "function": {"name": "f", "parameters": parameters}}

    nested: dict[str, Any] = {"type": "object", "properties": {"id": {"type": "string"}}}
    listed: dict[str, Any] = {"type": "array", "items": nested}
    described: dict[str, Any] = {"type": "string", "description": "an id"}
    tools = [function({"type": "string"}), function(nested), function(listed), function(described)]
    assert [undescribed_first_properties([tool]) for tool in tools] == [1, 0, 0, 0]


def test_it_shows_the_label_of_an_array_item_object() -> None:
    # tests/fixtures/real/sublayer.jsonl line 17: gpt-4o reported 212 prompt tokens.
    step = {
        "type": "object",
        "description": "a single step",
        "properties": {
            "description": {"type": "string", "description": "A brief description of the step"},
            "command": {"type": "string", "description": "The command to execute for this step"},
        },
        "required": ["description", "command"],
    }
    steps = {"type": "array", "description": "List of steps to complete a task", "items": step}
    function = {
        "name": "steps",
        "description": "List of steps to complete a task",
        "parameters": {"type": "object", "properties": {"steps": steps}},
        "required": ["steps"],
    }
    tools = [{"type": "function", "function": function}]
    assert "steps?: // a single step\n{\n// A brief description" in tools_text(tools)
    assert labelled_item_objects(tools) == 2
    task = (
        "    You are an expert at breaking down tasks into step-by-step instructions with "
        "associated commands.\n    Please generate a list of steps to complete the following "
        "task:\n\n    Set up a new Ruby on Rails project\n\n    For each step, provide:\n    "
        "- description: A brief description of what the step accomplishes\n    - command: The "
        'exact command to execute for this step (if applicable; use "N/A" if no command is '
        "needed)\n\n    Provide your response as a list of objects, each containing the above "
        "attributes.\n    Ensure the steps are in the correct order to complete the task "
        "successfully.\n"
    )
    messages: list[ChatMessage] = [{"role": "user", "content": task}]
    forced = {"type": "function", "function": {"name": "steps"}}
    profile = default_profile("gpt-4o-2024-05-13")
    assert count_request(messages, profile=profile, tools=tools, tool_choice=forced) == 212
    # a titled item ($ref to a pydantic model) shows its title; an item object with neither,
    # or items that are no object, show nothing
    titled = {**step, "title": "Step"}
    del titled["description"]
    bare = {key: value for key, value in step.items() if key != "description"}
    shown = ((titled, "s?: // Step\n{\n"), (bare, "s?: {\n"), ({"type": "string"}, "s?: string[],"))
    for items, text in shown:
        schema = {"type": "object", "properties": {"s": {"type": "array", "items": items}}}
        found = [{"type": "function", "function": {**function, "parameters": schema}}]
        assert text in tools_text(found)
        assert labelled_item_objects(found) == (2 if items is titled else 0)
