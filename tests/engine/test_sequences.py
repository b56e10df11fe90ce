"""Token sequences: placeholder ids and real ids survive the packed int32 form."""

from __future__ import annotations

from conversations.engine.sequences import START, TOKEN_BYTES, pack, unpack


def test_it_round_trips_placeholders_and_real_ids_through_the_packed_form() -> None:
    # negative placeholders and real ids round-trip through the packed form
    assert unpack(pack([START, 199_999, -(10**6) - 2**30 + 1])) == [
        START,
        199_999,
        -(10**6) - 2**30 + 1,
    ]
    assert len(pack([START, 199_999])) == 2 * TOKEN_BYTES == 8
