"""Tool definitions as the namespace text the API shows the model (schemas.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conversations.engine.profiles import default_profile
from conversations.engine.render import count_request
from conversations.engine.schemas import open_parameters, tools_text, undescribed_first_properties
from conversations.engine.types import ChatMessage

REAL = Path(__file__).resolve().parent.parent / "fixtures" / "real"


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
            "//",
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
    assert "steps?: Array<\n// a single step\n{\n// A brief description" in tools_text(tools)
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
    # a titled item ($ref to a pydantic model) shows its title; an item object with neither
    # is still written `Array<...>` while its properties carry comments, `{...}[]` without
    # them; items that are no object stay `T[]`
    titled = {**step, "title": "Step"}
    del titled["description"]
    bare = {key: value for key, value in step.items() if key != "description"}
    plain = {**bare, "properties": {"command": {"type": "string"}}}
    shown = (
        (titled, "s?: Array<\n// Step\n{\n"),
        (bare, "s?: Array<\n{\n// A brief description"),
        (plain, "s?: {\ncommand: string,\n}[],"),
        ({"type": "string"}, "s?: string[],"),
    )
    for items, text in shown:
        schema = {"type": "object", "properties": {"s": {"type": "array", "items": items}}}
        found = [{"type": "function", "function": {**function, "parameters": schema}}]
        assert text in tools_text(found)


def test_it_writes_unlabelled_item_objects_with_comments_inside_array() -> None:
    # tests/fixtures/real/instructor-rb.jsonl line 1: gpt-3.5-turbo-0125 reported 525 prompt
    # tokens for `items` (first, undescribed) and its `subtasks`, arrays of unlabelled objects
    # whose properties are described: 4 short as `{...}[]`.
    record = json.loads((REAL / "instructor-rb.jsonl").read_text().splitlines()[0])
    request = record["request"]
    text = tools_text(request["tools"])
    assert "items: Array<\n{\n// Unique identifier for the ticket\n" in text
    assert " | Array<\n{\n// Unique identifier for the subtask\n" in text
    # an array of objects as the undescribed first property keeps its token
    assert undescribed_first_properties(request["tools"]) == 0
    profile = default_profile(record["response"]["model"])
    assert count_request(request["messages"], profile=profile, tools=request["tools"]) == 525


def _forced(name: str, parameters: dict[str, Any]) -> tuple[list[dict[str, Any]], object]:
    description = (
        f"Correctly extracted `{name}` with all the required parameters with correct types"
    )
    function = {"name": name, "description": description, "parameters": parameters}
    return [{"type": "function", "function": function}], {
        "type": "function",
        "function": {"name": name},
    }


def test_it_writes_constraints_enum_arrays_and_nullable_item_arrays_as_the_api_does() -> None:
    # tests/fixtures/real/adala.jsonl line 296: gpt-4o-mini reported 175 prompt tokens
    # (157 before these rules: 18 short).
    entity = {
        "properties": {
            "start": {"minimum": 0, "title": "Start", "type": "integer"},
            "end": {"minimum": 0, "title": "End", "type": "integer"},
            "labels": {
                "items": {"enum": ["Organization", "Product", "Version"], "type": "string"},
                "title": "Labels",
                "type": "array",
            },
            "text": {
                "anyOf": [{"type": "string"}, {"type": "null"}],
                "default": None,
                "title": "Text",
            },
        },
        "required": ["start", "end", "labels"],
        "title": "Entity",
        "type": "object",
    }
    entities = {
        "anyOf": [{"items": {"$ref": "#/$defs/Entity"}, "type": "array"}, {"type": "null"}],
        "default": None,
        "description": "Labels and span indices for input",
        "title": "Entities",
    }
    parameters = {
        "$defs": {"Entity": entity},
        "properties": {"entities": entities},
        "type": "object",
        "required": [],
    }
    tools, forced = _forced("MyModel", parameters)
    assert "\n".join(
        [
            "// Entities",
            "//",
            "// Labels and span indices for input",
            "// default: null",
            "entities?:",
            " | Array<",
            "// Entity",
            "{",
            "// Start",
            "start: number, // minimum: 0",
            "// End",
            "end: number, // minimum: 0",
            "// Labels",
            'labels: Array<"Organization" | "Product" | "Version">,',
            "// Text",
            "text?: string | null, // default: null",
            "}",
            ">",
            " | null",
            ",",
            "}) => any;",
        ]
    ) in tools_text(tools)
    text = (
        "Extract entities from the input text:\nThe MacBook Pro is a line of Macintosh portable "
        "computers introduced in January 2006 by Apple Inc."
    )
    messages: list[ChatMessage] = [{"role": "user", "content": text}]
    profile = default_profile("gpt-4o-mini-2024-07-18")
    assert count_request(messages, profile=profile, tools=tools, tool_choice=forced) == 175


def test_it_writes_a_maximum_after_the_minimum_and_after_a_default() -> None:
    # adala.jsonl lines 47-50: `evaluation: number, // minimum: 0, maximum: 5`, exact (11
    # short without); a default comes first (unseen with a constraint: one comment for both).
    rating = {"description": "Rating (0 to 5)", "maximum": 5, "minimum": 0, "type": "integer"}
    with_default = {**rating, "default": 3}
    parameters = {"properties": {"a": rating, "b": with_default}, "type": "object"}
    text = tools_text(_forced("M", parameters)[0])
    assert "a?: number, // minimum: 0, maximum: 5\n" in text
    assert "b?: number, // default: 3, minimum: 0, maximum: 5\n" in text
    # a lone one-value enum item is no union: `[]` is not ambiguous after it
    one = {"properties": {"c": {"type": "array", "items": {"enum": ["x"]}}}, "type": "object"}
    assert 'c?: "x"[],' in tools_text(_forced("M", one)[0])


def test_it_separates_a_title_from_a_description_by_a_blank_comment_line() -> None:
    # adala.jsonl line 19: gpt-3.5-turbo-0125 (cl100k) reported 78 prompt tokens, 77 without
    # the bare `//` line; on o200k models that line costs nothing (see schemas._comments).
    parameters = {
        "properties": {"1->2": {"description": "Output:", "title": "1->2", "type": "string"}},
        "required": ["1->2"],
        "type": "object",
    }
    tools, forced = _forced("Output", parameters)
    assert "(_: {\n// 1->2\n//\n// Output:\n1->2: string,\n}" in tools_text(tools)
    messages: list[ChatMessage] = [
        {"role": "system", "content": "..."},
        {"role": "user", "content": "Text: Hello World"},
    ]
    profile = default_profile("gpt-3.5-turbo-0125")
    assert count_request(messages, profile=profile, tools=tools, tool_choice=forced) == 78


def test_it_merges_an_all_of_into_the_type_it_names() -> None:
    # adala.jsonl line 2 (pydantic's described `$ref` to an enum): `any` before, 12 short.
    parameters = {
        "$defs": {"Labels": {"enum": ["class_A", "class_B"], "title": "Labels", "type": "string"}},
        "properties": {
            "output": {
                "allOf": [{"$ref": "#/$defs/Labels"}],
                "description": "The classification label",
            }
        },
        "required": ["output"],
        "type": "object",
    }
    text = tools_text(_forced("Output", parameters)[0])
    assert '// Labels\n//\n// The classification label\noutput: "class_A" | "class_B",' in text


def test_it_lays_out_a_union_with_a_described_variant_over_several_lines() -> None:
    # instructor-rb.jsonl line 1: the variant's description follows it; one-line undescribed
    # unions stay inline.
    ids = {"type": "array", "items": {"type": "integer"}, "description": "Ticket IDs"}
    parameters = {
        "type": "object",
        "properties": {
            "dependencies": {"anyOf": [ids, {"type": "null"}]},
            "tag": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
    }
    text = tools_text(_forced("M", parameters)[0])
    assert "dependencies?:\n | number[] // Ticket IDs\n | null\n,\ntag?: string | null,\n" in text


def test_it_lays_out_a_described_type_list_as_described_alternatives() -> None:
    # crewai.jsonl's create_reasoning_plan (11 calls): `tool_to_use` was 32 tokens short
    # inline, 1 short laid out so. A type list without a description stays inline.
    described = {"type": ["string", "null"], "description": "Tool, or null"}
    parameters = {
        "type": "object",
        "properties": {"tool": described, "note": {"type": ["string", "null"]}},
        "required": ["tool", "note"],
    }
    text = tools_text(_forced("M", parameters)[0])
    expected = "// Tool, or null\ntool:\n | string // Tool, or null\n | null // Tool, or null\n,\n"
    assert expected + "note: string | null,\n" in text


def test_an_open_parameters_object_counts_seven_tokens_more() -> None:
    # tests/fixtures/real/openai-dotnet.jsonl lines 133 and 135: one function, gpt-4o, 95
    # prompt tokens with `additionalProperties: true` and 88 with `false`.
    def tool(open_: bool) -> dict[str, Any]:
        parameters = {
            "type": "object",
            "properties": {"the_day_of_the_week": {"type": "string"}},
            "required": ["the_day_of_the_week"],
            "additionalProperties": open_,
        }
        description = (
            "Given a weekday name like Tuesday, gets the favorite color of the user on that day."
        )
        function = {
            "description": description,
            "name": "get_favorite_color_for_day_of_week",
            "parameters": parameters,
        }
        return {"type": "function", "function": function}

    messages: list[ChatMessage] = [
        {
            "role": "system",
            "content": "Call applicable tools when the user asks a question. "
            "Prefer JSON output when possible.",
        },
        {"role": "user", "content": "What's my favorite color on Tuesday?"},
    ]
    profile = default_profile("gpt-4o-2024-08-06")
    assert [open_parameters([tool(True)]), open_parameters([tool(False)])] == [1, 0]
    assert count_request(messages, profile=profile, tools=[tool(True)]) == 95
    assert count_request(messages, profile=profile, tools=[tool(False)]) == 88
    # the text does not change: the 7 tokens are a count, not a rendering
    assert tools_text([tool(True)]) == tools_text([tool(False)])
