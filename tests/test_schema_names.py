"""schema/names.py: the rename heuristics, against a brute-force edit distance and by hand."""

from __future__ import annotations

from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st

from mlpipe_cli.schema.names import edit_distance, normalise, rename_score, similar


def levenshtein_oracle(a: str, b: str) -> int:
    """The textbook recursive definition (memoised), sharing nothing with the DP table."""

    @cache
    def d(i: int, j: int) -> int:
        if i == 0:
            return j
        if j == 0:
            return i
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))

    return d(len(a), len(b))


names = st.text(alphabet="abcAB_-é ", max_size=8)


@settings(max_examples=200, deadline=None)
@given(names, names)
def test_edit_distance_matches_the_recursive_definition(a: str, b: str) -> None:
    assert edit_distance(a, b) == levenshtein_oracle(a, b)


def test_hand_worked_renames() -> None:
    assert normalise("Order_TS") == normalise("order-ts") == normalise("order ts") == "orderts"
    assert rename_score("order_ts", "OrderTS") == 0  # same name, other spelling
    assert rename_score("revenue", "revenu") == 1
    assert rename_score("revenue", "revnu") == 2  # longer names allow 2 edits
    assert rename_score("revenue", "rvnu") is None  # 3 edits
    assert rename_score("age", "agex") == 1
    assert rename_score("age", "agexy") is None  # names of <= 4 characters allow 1 edit
    assert rename_score("plan", "plane") == 1
    assert similar("user_id", "userid")
    assert not similar("user_id", "order_id")
    assert rename_score("größe", "Grösse") == 2  # ß -> s, + s; case ignored; 5 chars allow 2
    assert rename_score("größe", "gross") is None  # ö -> o, ß -> s, drop e: 3 edits


def test_schema_diff_reports_renames_with_these_rules() -> None:
    from mlpipe_cli.schema.diff import diff_source

    old = {"columns": {"revenue": {"dtype": "float64"}, "plan": {"dtype": "string"}}}
    new = {"columns": {"revenu": {"dtype": "float64"}, "tier": {"dtype": "string"}}}
    changes = {(c.column, c.change) for c in diff_source("orders", old, new)}
    assert changes == {
        ("revenue", "column_renamed"),
        ("plan", "column_removed"),
        ("tier", "column_added"),
    }
