"""Classify contract changes as breaking or compatible (`mlpipe schema diff`).

A change is **breaking** when data that satisfied the old contract may fail the new one, or
when a consumer of the old columns loses something: a column removed or renamed, a dtype
changed other than by lossless widening, nullable -> required, an allowed set narrowed, a
range or length bound narrowed, a new regex/unique/primary key/row check, strict turned on,
a new required column. Everything else (new nullable column, widened range or set, a check
removed, a dtype widened such as int32 -> int64) is **compatible**.

``diff_data`` compares observed data against a contract with the same vocabulary: a
missing column, an incompatible dtype, nulls in a required column, values outside the
range or allowed set, or an unexpected column under strict are breaking.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mlpipe_cli.schema.dtypes import is_widening
from mlpipe_cli.schema.names import similar


@dataclass(frozen=True)
class Change:
    source: str
    column: str | None
    change: str  # stable code, e.g. column_removed, dtype_changed, range_narrowed
    breaking: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["classification"] = "breaking" if self.breaking else "compatible"
        return doc


def diff_contracts(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Compare two contract documents (``contract.json`` form)."""
    changes: list[Change] = []
    old_sources, new_sources = old.get("sources", {}), new.get("sources", {})
    for name in sorted(set(old_sources) | set(new_sources)):
        if name not in new_sources:
            changes.append(Change(name, None, "source_removed", True, f"source {name!r} removed"))
        elif name not in old_sources:
            changes.append(Change(name, None, "source_added", False, f"source {name!r} added"))
        else:
            changes.extend(diff_source(name, old_sources[name], new_sources[name]))
    return changes


def diff_source(name: str, old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    out: list[Change] = []
    old_cols, new_cols = old.get("columns", {}), new.get("columns", {})
    added = [c for c in new_cols if c not in old_cols]
    renamed_to: dict[str, str] = {}
    for column in old_cols:
        if column in new_cols:
            continue
        target = _rename_target(column, old_cols[column], added, new_cols)
        if target is not None:
            renamed_to[column] = target
            out.append(Change(name, column, "column_renamed", True,
                              f"column {column!r} renamed to {target!r}?"))  # fmt: skip
        else:
            out.append(Change(name, column, "column_removed", True, f"column {column!r} removed"))
    for column in added:
        if column in renamed_to.values():
            continue
        nullable = new_cols[column].get("nullable", False)
        out.append(
            Change(
                name,
                column,
                "column_added",
                not nullable,
                f"column {column!r} added as "
                + ("nullable" if nullable else "required (old data lacks it)"),
            )
        )
    for column in old_cols:
        if column in new_cols:
            out.extend(_diff_column(name, column, old_cols[column], new_cols[column]))
    out.extend(_diff_table(name, old, new))
    return out


def _rename_target(
    column: str, old: dict[str, Any], added: list[str], new_cols: dict[str, Any]
) -> str | None:
    for candidate in added:
        dtype_ok = is_widening(old["dtype"], new_cols[candidate]["dtype"])
        if dtype_ok and _similar(column, candidate):
            return candidate
    return None


def _similar(a: str, b: str) -> bool:
    return similar(a, b)


def _bound(spec: dict[str, Any], inclusive: str, exclusive: str) -> tuple[float, bool] | None:
    """(value, exclusive?) of the tighter of an inclusive and an exclusive bound."""
    values = []
    if spec.get(inclusive) is not None:
        values.append((float(spec[inclusive]), False))
    if spec.get(exclusive) is not None:
        values.append((float(spec[exclusive]), True))
    if not values:
        return None
    lower = inclusive == "min"
    return (max if lower else min)(
        values, key=lambda v: (v[0], v[1]) if lower else (v[0], not v[1])
    )


def _narrower(old: tuple[float, bool] | None, new: tuple[float, bool] | None, lower: bool) -> int:
    """1 if new is narrower, -1 if wider, 0 if equal."""
    if old == new:
        return 0
    if old is None:
        return 1
    if new is None:
        return -1
    if old[0] != new[0]:
        tighter = new[0] > old[0] if lower else new[0] < old[0]
        return 1 if tighter else -1
    return 1 if new[1] and not old[1] else -1


def _diff_column(
    source: str, column: str, old: dict[str, Any], new: dict[str, Any]
) -> list[Change]:
    out: list[Change] = []

    def add(code: str, breaking: bool, detail: str) -> None:
        out.append(Change(source, column, code, breaking, f"column {column!r}: {detail}"))

    if old["dtype"] != new["dtype"]:
        widening = is_widening(old["dtype"], new["dtype"])
        add("dtype_widened" if widening else "dtype_changed", not widening,
            f"dtype {old['dtype']} -> {new['dtype']}")  # fmt: skip
    if old.get("timezone") != new.get("timezone") and "datetime" in (old["dtype"], new["dtype"]):
        add("timezone_changed", True,
            f"timezone {old.get('timezone') or 'naive'} -> {new.get('timezone') or 'naive'}")  # fmt: skip
    if old.get("nullable", False) != new.get("nullable", False):
        if new.get("nullable", False):
            add("nullable_allowed", False, "required -> nullable")
        else:
            add("nullable_removed", True, "nullable -> required")
    if old.get("unique", False) != new.get("unique", False):
        add("unique_added" if new.get("unique") else "unique_removed", bool(new.get("unique")),
            "unique " + ("added" if new.get("unique") else "removed"))  # fmt: skip
    for lower, inc, exc in ((True, "min", "gt"), (False, "max", "lt")):
        before, after = _bound(old, inc, exc), _bound(new, inc, exc)
        verdict = _narrower(before, after, lower)
        if verdict:
            side = "lower" if lower else "upper"
            add("range_narrowed" if verdict > 0 else "range_widened", verdict > 0,
                f"{side} bound {_show(before)} -> {_show(after)}")  # fmt: skip
    for key, lower in (("min_length", True), ("max_length", False)):
        before = (float(old[key]), False) if old.get(key) is not None else None
        after = (float(new[key]), False) if new.get(key) is not None else None
        verdict = _narrower(before, after, lower)
        if verdict:
            add("length_narrowed" if verdict > 0 else "length_widened", verdict > 0,
                f"{key} {_show(before)} -> {_show(after)}")  # fmt: skip
    old_allowed, new_allowed = old.get("allowed"), new.get("allowed")
    if old_allowed != new_allowed:
        if new_allowed is None:
            add("allowed_widened", False, "allowed set removed")
        elif old_allowed is None:
            add("allowed_narrowed", True, f"allowed set {new_allowed} added")
        else:
            removed = [v for v in old_allowed if v not in new_allowed]
            gained = [v for v in new_allowed if v not in old_allowed]
            if removed:
                add("allowed_narrowed", True, f"allowed values removed: {removed}")
            elif gained:
                add("allowed_widened", False, f"allowed values added: {gained}")
    if old.get("regex") != new.get("regex"):
        if new.get("regex") is None:
            add("regex_removed", False, "regex removed")
        else:
            add("regex_changed", True, f"regex {old.get('regex')!r} -> {new.get('regex')!r}")
    if old.get("severity", "error") != new.get("severity", "error"):
        stricter = new.get("severity", "error") == "error"
        add("severity_changed", stricter,
            f"severity {old.get('severity', 'error')} -> {new.get('severity', 'error')}")  # fmt: skip
    return out


def _diff_table(source: str, old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    out: list[Change] = []

    def add(code: str, breaking: bool, detail: str) -> None:
        out.append(Change(source, None, code, breaking, detail))

    if old.get("strict", False) != new.get("strict", False):
        add("strict_changed", bool(new.get("strict")),
            f"strict {old.get('strict', False)} -> {new.get('strict', False)}")  # fmt: skip
    if old.get("primary_key") != new.get("primary_key"):
        add("primary_key_changed", new.get("primary_key") is not None,
            f"primary key {old.get('primary_key')} -> {new.get('primary_key')}")  # fmt: skip
    for key, lower in (("min_rows", True), ("max_rows", False)):
        before = (float(old[key]), False) if old.get(key) is not None else None
        after = (float(new[key]), False) if new.get(key) is not None else None
        verdict = _narrower(before, after, lower)
        if verdict:
            add(f"{key}_changed", verdict > 0, f"{key} {_show(before)} -> {_show(after)}")
    for key, breaking_when_added in (("required_columns", True), ("forbidden_columns", True)):
        old_names, new_names = set(old.get(key) or []), set(new.get(key) or [])
        if new_names - old_names:
            add(
                f"{key}_added", breaking_when_added, f"{key} added: {sorted(new_names - old_names)}"
            )
        if old_names - new_names:
            add(f"{key}_removed", False, f"{key} removed: {sorted(old_names - new_names)}")
    old_checks = {c["name"]: c for c in old.get("checks") or []}
    new_checks = {c["name"]: c for c in new.get("checks") or []}
    for check in sorted(set(old_checks) | set(new_checks)):
        if check not in new_checks:
            add("check_removed", False, f"row check {check!r} removed")
        elif check not in old_checks:
            add("check_added", True, f"row check {check!r} added: {new_checks[check]['expr']}")
        elif old_checks[check]["expr"] != new_checks[check]["expr"]:
            add("check_changed", True, f"row check {check!r}: {old_checks[check]['expr']!r} -> "
                f"{new_checks[check]['expr']!r}")  # fmt: skip
    return out


def _show(bound: tuple[float, bool] | None) -> str:
    if bound is None:
        return "none"
    value = int(bound[0]) if float(bound[0]).is_integer() else bound[0]
    return f"{'>' if bound[1] else ''}{value}"


def diff_data(source: str, contract: dict[str, Any], facts: dict[str, Any]) -> list[Change]:
    """Compare observed data (``infer.observe``) with one source's contract."""
    out: list[Change] = []
    columns = contract.get("columns", {})
    observed = facts["columns"]
    extra = [c for c in observed if c not in columns]
    renamed: set[str] = set()
    for column, spec in columns.items():
        if column not in observed:
            target = next(
                (c for c in extra if _similar(column, c)
                 and observed[c]["dtype"] is not None
                 and (is_widening(observed[c]["dtype"], spec["dtype"])
                      or is_widening(spec["dtype"], observed[c]["dtype"]))),
                None,
            )  # fmt: skip
            if target:
                renamed.add(target)
                out.append(Change(source, column, "column_renamed", True,
                                  f"column {column!r} missing; found {target!r} — renamed upstream?"))  # fmt: skip
            else:
                out.append(Change(source, column, "column_removed", True,
                                  f"column {column!r} missing from the data"))  # fmt: skip
            continue
        fact = observed[column]
        out.extend(_diff_observed(source, column, spec, fact))
    for column in extra:
        if column in renamed:
            continue
        strict = bool(contract.get("strict"))
        out.append(Change(source, column, "column_added", strict,
                          f"column {column!r} not in the contract"
                          + (" (strict: true)" if strict else "")))  # fmt: skip
    return out


def _diff_observed(
    source: str, column: str, spec: dict[str, Any], fact: dict[str, Any]
) -> list[Change]:
    out: list[Change] = []

    def add(code: str, breaking: bool, detail: str) -> None:
        out.append(Change(source, column, code, breaking, f"column {column!r}: {detail}"))

    if fact["dtype"] != spec["dtype"]:
        narrower = fact["dtype"] is not None and is_widening(fact["dtype"], spec["dtype"])
        add("dtype_widened" if narrower else "dtype_changed", not narrower,
            f"data dtype {fact['dtype'] or fact['polars_dtype']}, contract {spec['dtype']}")  # fmt: skip
        return out
    if "timezone" in fact and fact["timezone"] != spec.get("timezone"):
        add("timezone_changed", True,
            f"data timezone {fact['timezone'] or 'naive'}, contract {spec.get('timezone') or 'naive'}")  # fmt: skip
    if fact["nulls"] and not spec.get("nullable", False):
        add("nullable_removed", True, f"{fact['nulls']} nulls in a required column")
    low, high = _bound(spec, "min", "gt"), _bound(spec, "max", "lt")
    if fact.get("nonfinite") and (low or high):
        add("range_narrowed", True, f"{fact['nonfinite']} NaN/inf values in a bounded column")
    if fact.get("min") is not None and low is not None:
        value = fact["min"]
        if value < low[0] or (low[1] and value == low[0]):
            add("range_narrowed", True, f"minimum {value:g} is below the contract's {_show(low)}")
    if fact.get("max") is not None and high is not None:
        value = fact["max"]
        if value > high[0] or (high[1] and value == high[0]):
            add("range_narrowed", True, f"maximum {value:g} is above the contract's {_show(high)}")
    allowed = spec.get("allowed")
    if allowed is not None and "values" in fact:
        outside = [v for v in fact["values"] if v not in {str(a) for a in allowed}]
        if outside:
            add("allowed_narrowed", True, f"values outside the allowed set: {outside[:5]}")
    elif allowed is not None and fact.get("nunique", 0) > len(allowed) + (
        1 if fact["nulls"] else 0
    ):
        add("allowed_narrowed", True,
            f"{fact['nunique']} distinct values; the allowed set has {len(allowed)}")  # fmt: skip
    return out
