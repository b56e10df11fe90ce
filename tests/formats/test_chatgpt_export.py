from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conversations.engine.types import Transcript
from conversations.formats import ParseError

Parse = Callable[..., list[Transcript]]


def test_it_takes_the_active_path_of_the_oracle(oracles: Path, parse: Parse) -> None:
    [transcript] = parse(oracles / "mitkury_example-conversation.json")
    assert len(transcript.messages) == 5
    assert [m["role"] for m in transcript.messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    # msg-5 ("Python instead?") sits on the other branch.
    assert transcript.messages[3]["content"] == "How do I write a function in JavaScript?"
    assert transcript.warnings == ["1 other branch(es) (1 message(s)) not on the active path"]
    assert (transcript.external_id, transcript.model) == ("conv-123", "gpt-4")
    assert transcript.title == "Sample conversation with branch"
    assert transcript.created_at == datetime(2024, 1, 1, tzinfo=UTC)
    assert transcript.message_times is not None
    assert transcript.message_times[-1] == datetime.fromtimestamp(1704067500, tz=UTC)


def test_it_converts_every_content_type_and_says_what_it_left_out(
    samples: Path, parse: Parse
) -> None:
    features, _ = parse(samples / "chatgpt_export_features.json")
    assert [m["role"] for m in features.messages] == [
        "user",  # user_editable_context
        "user",  # multimodal_text
        "assistant",  # code
        "tool",  # execution_output
        "assistant",
        "user",  # tether_quote
        "assistant",
    ]
    assert features.messages[0]["content"] == "I am a chef.\n\nAnswer briefly."
    text, sized, unsized = features.messages[1]["content"]
    assert text == {"type": "text", "text": "What is in this picture?"}
    assert (sized["width"], sized["height"]) == (1024, 768)
    assert sized["image_url"]["url"] == "file-service://file-abc"
    assert (unsized["width"], unsized["height"]) == (None, None)
    assert features.messages[2]["content"] == "print(2 + 2)"
    assert features.messages[3]["content"] == "4"
    assert features.messages[5]["content"] == "Quote title\n\nquoted text"
    assert features.model == "o3"  # the most recent assistant's model_slug
    assert features.warnings == [
        "1 hidden system message(s) skipped",
        "2 image(s) kept as parts pointing at export assets (no pixels in the export); "
        "1 of unknown size, their tokens cannot be counted",
        "mapping['u1'].message.content.parts[3]: unsupported part 'audio_asset_pointer' dropped",
        "mapping['a3'].message.content: content type 'thoughts' has no text; message skipped",
        "2 other branch(es) (3 message(s)) not on the active path",
    ]


def test_it_falls_back_to_the_latest_leaf_without_current_node(samples: Path, parse: Parse) -> None:
    _, fallback = parse(samples / "chatgpt_export_features.json")
    assert [m["content"] for m in fallback.messages] == ["hi", "hey"]
    assert fallback.model == "gpt-4o-mini"  # default_model_slug
    assert fallback.external_id == "conv-no-current"
    assert "no current_node" in fallback.warnings[0]


def test_it_names_an_unknown_author_role(samples: Path, parse: Parse) -> None:
    with pytest.raises(ParseError) as caught:
        parse(samples / "chatgpt_export_bad_role.json")
    assert caught.value.field == "mapping['b'].message.author.role"
    assert "unknown role 'critic'" in caught.value.message


def test_it_refuses_a_parent_cycle(tmp_path: Path, parse: Parse) -> None:
    path = tmp_path / "cycle.json"
    path.write_text(
        '{"current_node": "a", "mapping": {'
        '"a": {"parent": "b", "message": null}, "b": {"parent": "a", "message": null}}}'
    )
    with pytest.raises(ParseError, match="cycle at node 'a'"):
        parse(path)
