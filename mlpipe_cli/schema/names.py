"""Column-rename heuristics: is a new column probably an old one under another name?

Shared by `schema diff` (a dropped + an added column of a compatible dtype is reported as a
rename) and `validate` (a missing column's error names the likely new spelling). Two names
match when they are equal ignoring case, ``_``, ``-`` and spaces (score 0), or when their
case-insensitive edit distance is at most 1 (names of up to 4 characters) or 2 (longer).
"""

from __future__ import annotations

import re


def normalise(name: str) -> str:
    """``name`` lower-cased without ``_``, ``-`` and whitespace (``Order_TS`` → ``orderts``)."""
    return re.sub(r"[_\-\s]", "", name).lower()


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions each cost 1)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def rename_score(old: str, new: str) -> int | None:
    """How alike ``old`` and ``new`` are as a rename (lower is closer), None if not alike.

    The edit-distance limit is taken from ``old``, the name the contract knows.
    """
    if normalise(old) == normalise(new):
        return 0
    distance = edit_distance(old.lower(), new.lower())
    limit = 1 if len(old) <= 4 else 2
    return distance if distance <= limit else None


def similar(old: str, new: str) -> bool:
    """``new`` is plausibly ``old`` renamed."""
    return rename_score(old, new) is not None
