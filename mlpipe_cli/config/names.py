"""How config errors name things: the nearest existing names for a typo, and key paths.

Key paths are written the way users read their YAML: mapping keys joined by dots, list items
counted from 1 and shown with their ``name`` when they have one::

    features[#7 'fare_per_km_30d'].agg      the 7th feature, named fare_per_km_30d
    sources.rides.checks[#2].expr           the 2nd row check, which has no name (yet)

(pydantic's own locations are 0-based positions, ``features.6.agg``.)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_MISSING = object()


def nearest_names(name: str, candidates: Iterable[str], limit: int = 3) -> list[str]:
    """Up to ``limit`` candidates closest to ``name`` (difflib ratio >= 0.6, case ignored),
    closest first."""
    by_folded: dict[str, list[str]] = {}
    for candidate in candidates:
        by_folded.setdefault(candidate.casefold(), []).append(candidate)
    # difflib.get_close_matches' scoring, but ties in name order (it breaks them backwards)
    matcher = difflib.SequenceMatcher()
    matcher.set_seq2(name.casefold())
    scored: list[tuple[float, str]] = []
    for folded, originals in by_folded.items():
        matcher.set_seq1(folded)
        score = matcher.ratio()
        if score >= 0.6:
            scored.extend((-score, original) for original in originals)
    return [original for _, original in sorted(scored)[:limit]]


def did_you_mean(name: str, candidates: Sequence[str], what: str = "columns") -> str:
    """``nearest: 'a', 'b'`` or, with nothing close, the first few ``candidates``."""
    close = nearest_names(name, candidates)
    if close:
        return "nearest: " + ", ".join(repr(c) for c in close)
    if not candidates:
        return f"there are no {what}"
    shown = ", ".join(repr(c) for c in candidates[:8])
    more = f" and {len(candidates) - 8} more" if len(candidates) > 8 else ""
    return f"nothing close; {what}: {shown}{more}"


def list_item(position: int, item: Any) -> str:
    """``[#N 'name']`` for the item at 0-based ``position`` of a list (``[#N]`` unnamed)."""
    name = item.get("name") if isinstance(item, Mapping) else None
    if isinstance(name, str) and name:
        return f"[#{position + 1} {name!r}]"
    return f"[#{position + 1}]"


def render_key_path(parts: Sequence[str | int], data: Any = _MISSING) -> str:
    """A key path such as ``features[#7 'fare_per_km_30d'].agg``.

    ``parts`` are keys and 0-based list positions (a pydantic error location, or the path
    being walked). ``data`` is the config as read from YAML, used to tell list positions
    from integer mapping keys and to name list items; parts it does not hold (a missing key,
    a key of an unknown item) are rendered as given.
    """
    text = ""
    node = data
    for part in parts:
        if isinstance(part, int) and (isinstance(node, list) or node is _MISSING):
            if isinstance(node, list) and 0 <= part < len(node):
                text += list_item(part, node[part])
                node = node[part]
            else:
                text += f"[#{part + 1}]"
                node = _MISSING
            continue
        text += ("." if text else "") + str(part)
        node = node.get(part, _MISSING) if isinstance(node, Mapping) else _MISSING
    return text
