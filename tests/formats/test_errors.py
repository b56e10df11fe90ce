import pickle

from conversations.formats.errors import ParseError


def test_it_reads_like_a_sentence_naming_file_line_and_field() -> None:
    err = ParseError(
        "unknown role 'bot' (expected system, developer, user, assistant, tool, function)",
        file="chats.jsonl",
        line=12,
        field="messages[2].role",
    )
    assert str(err) == (
        "chats.jsonl line 12, field messages[2].role: unknown role 'bot' "
        "(expected system, developer, user, assistant, tool, function)"
    )


def test_it_names_records_of_a_json_array_as_records() -> None:
    err = ParseError("no messages", file="chats.json", line=3, field="messages", unit="record")
    assert str(err) == "chats.json record 3, field messages: no messages"


def test_it_leaves_out_what_it_does_not_know() -> None:
    assert str(ParseError("empty file", file="a.jsonl")) == "a.jsonl: empty file"
    assert str(ParseError("unknown format 'x'")) == "unknown format 'x'"


def test_it_survives_pickling_with_its_attributes() -> None:
    err = ParseError("bad", file="a.zip:b.jsonl", line=4, field="messages", byte_offset=9)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.file, copy.line, copy.field, copy.byte_offset) == (
        "a.zip:b.jsonl",
        4,
        "messages",
        9,
    )
    assert str(copy) == str(err)
