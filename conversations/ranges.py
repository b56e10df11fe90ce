"""How a turn stores the messages it sent: index ranges, so that a prefix flow of n turns
is one range per turn rather than n^2 message links (design.md 2.5)."""

from __future__ import annotations


def request_ranges(indexes: list[int]) -> list[list[int]]:
    """[0, 1, 2, 5, 6] -> [[0, 3], [5, 7]]: a prefix flow is one range per turn."""
    ranges: list[list[int]] = []
    for i in indexes:
        if ranges and ranges[-1][1] == i:
            ranges[-1][1] = i + 1
        else:
            ranges.append([i, i + 1])
    return ranges


def request_indexes(ranges: list[list[int]]) -> list[int]:
    """The inverse of request_ranges."""
    return [i for start, end in ranges for i in range(start, end)]
