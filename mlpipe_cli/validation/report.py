"""Validation results: one ``CheckResult`` per check, a ``SourceReport`` per source.

The JSON form (``ValidationReport.to_dict``) is the published ``report.json``; its layout is
versioned by ``ValidationReportDocument.FORMAT_VERSION`` (documents.py) and its check ids are
stable across runs so CI history and dashboards can follow one check over time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mlpipe_cli import __version__

# status of one check
PASS, FAIL, WARN, SKIPPED, ERROR = "pass", "fail", "warn", "skipped", "error"


@dataclass
class CheckResult:
    """The outcome of one check.

    ``status``: pass | fail (error severity, counts as a failure) | warn (warn severity,
    never fails the run) | skipped (could not run because the schema check of its column
    failed) | error (the check itself crashed: a tool error, exit 2).
    """

    id: str
    source: str
    column: str | None
    kind: str
    severity: str
    status: str = PASS
    failures: int | None = None
    rows: int | None = None
    statistic: float | None = None
    threshold: float | None = None
    message: str = ""
    examples: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] | None = None

    @property
    def rate(self) -> float | None:
        if self.failures is None or not self.rows:
            return None
        return self.failures / self.rows

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id,
            "source": self.source,
            "column": self.column,
            "kind": self.kind,
            "severity": self.severity,
            "status": self.status,
            "failures": self.failures,
            "rows": self.rows,
            "rate": _num(self.rate),
            "statistic": _num(self.statistic),
            "threshold": _num(self.threshold),
            "message": self.message,
            "examples": [{"row": e["row"], "value": _jsonable(e["value"])} for e in self.examples],
        }
        if self.details is not None:
            doc["details"] = _jsonable(self.details)
        return doc


@dataclass
class SourceReport:
    """Every check of one source, plus row accounting and the split outputs if requested."""

    source: str
    path: str
    rows: int | None = None
    checks: list[CheckResult] = field(default_factory=list)
    failed_rows: int | None = None  # rows failing at least one error-severity row check
    max_failure_rate: float = 0.0
    quarantine: dict[str, Any] | None = None  # {"path", "rows"}
    out: dict[str, Any] | None = None  # {"path", "rows"}
    reference: str | None = None  # profile artifact version compared against
    profile: str | None = None  # profile artifact version saved from this batch

    @property
    def status(self) -> str:
        """error (a check crashed) > failed > passed."""
        if any(c.status == ERROR for c in self.checks):
            return "error"
        if any(c.status == FAIL for c in self.checks):
            return "failed"
        return "passed"

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def schema_ok(self) -> bool:
        return not any(c.status == FAIL and c.kind in SCHEMA_KINDS for c in self.checks)

    def failing(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status in (FAIL, ERROR)]

    def counts(self) -> dict[str, int]:
        out = {PASS: 0, FAIL: 0, WARN: 0, SKIPPED: 0, ERROR: 0}
        for check in self.checks:
            out[check.status] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "path": self.path,
            "status": self.status,
            "schema_ok": self.schema_ok,
            "rows": self.rows,
            "failed_rows": self.failed_rows,
            "failure_rate": _num(self.failed_rows / self.rows)
            if self.rows and self.failed_rows is not None
            else None,
            "max_failure_rate": self.max_failure_rate,
            "quarantine": self.quarantine,
            "out": self.out,
            "reference_profile": self.reference,
            "saved_profile": self.profile,
            "counts": self.counts(),
            "checks": [c.to_dict() for c in self.checks],
        }


SCHEMA_KINDS = frozenset({"present", "dtype", "unexpected", "forbidden", "required"})


@dataclass
class ValidationReport:
    pipeline: str
    sources: list[SourceReport]

    @property
    def status(self) -> str:
        statuses = {s.status for s in self.sources}
        if "error" in statuses:
            return "error"
        if "failed" in statuses:
            return "failed"
        return "passed"

    @property
    def exit_code(self) -> int:
        return {"passed": 0, "failed": 1, "error": 2}[self.status]

    def to_dict(self) -> dict[str, Any]:
        totals = {PASS: 0, FAIL: 0, WARN: 0, SKIPPED: 0, ERROR: 0}
        for source in self.sources:
            for key, value in source.counts().items():
                totals[key] += value
        return {
            "format_version": _format_version(),
            "mlpipe_version": __version__,
            "pipeline": self.pipeline,
            "status": self.status,
            "exit_code": self.exit_code,
            "counts": totals,
            "sources": [s.to_dict() for s in self.sources],
        }

    def to_junit(self) -> bytes:
        """JUnit XML: one <testsuite> per source, one <testcase> per check."""
        from xml.etree import ElementTree as ET

        suites = ET.Element("testsuites", name=f"mlpipe validate {self.pipeline}")
        for source in self.sources:
            counts = source.counts()
            suite = ET.SubElement(
                suites,
                "testsuite",
                name=source.source,
                tests=str(len(source.checks)),
                failures=str(counts[FAIL]),
                errors=str(counts[ERROR]),
                skipped=str(counts[SKIPPED]),
            )
            for check in source.checks:
                case = ET.SubElement(
                    suite, "testcase", classname=f"{self.pipeline}.{source.source}", name=check.id
                )
                text = summary_line(check)
                if check.status == FAIL:
                    ET.SubElement(
                        case, "failure", message=check.message, type=check.kind
                    ).text = text
                elif check.status == ERROR:
                    ET.SubElement(case, "error", message=check.message, type=check.kind).text = text
                elif check.status == SKIPPED:
                    ET.SubElement(case, "skipped", message=check.message)
                elif check.status == WARN:
                    ET.SubElement(case, "system-out").text = f"warning: {text}"
        ET.indent(suites)
        return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"


def summary_line(check: CheckResult) -> str:
    parts = [check.message] if check.message else []
    if check.examples:
        shown = ", ".join(f"row {e['row']}: {_short(e['value'])}" for e in check.examples)
        parts.append(f"examples: {shown}")
    return "; ".join(parts)


def _short(value: Any) -> str:
    text = repr(_jsonable(value))
    return text if len(text) <= 60 else text[:57] + "..."


def _num(value: float | None) -> float | str | None:
    """JSON has no NaN/inf: spell them as strings so the report stays valid JSON."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if value is None or isinstance(value, (int, str, bool)):
        return value
    return str(value)


def _format_version() -> int:
    # imported here: the documents' pydantic models cost ~10 ms of start-up (#19), and a
    # run with --no-publish and no --json never writes the document
    from mlpipe_cli.documents import ValidationReportDocument

    return ValidationReportDocument.FORMAT_VERSION
