"""Tool definitions as the namespace text the API shows the model (schemas.py)."""

from __future__ import annotations

from typing import Any

from conversations.engine.schemas import tools_text, undescribed_first_properties


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
