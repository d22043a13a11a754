"""The serving-log contract: `serve` writes it, `psi-report` reads it (docs/architecture.md §5).

Parquet segments under the log directory, one file each, named
``segment-<UTC yyyymmddTHHMMSS>-<pid>-<seq>.parquet`` and published atomically. Columns:
``served_at`` (Datetime us UTC), ``endpoint``, ``entity`` (JSON of the key values),
``transform_version``, ``store_version``, ``cold_start``, ``raw.<col>`` per transform input,
``vec.<col>`` (Float64) per transform output, ``prediction``. A server running a shadow
transform (``serve --shadow``) adds, in the same row: ``shadow.vec.<col>`` (Float64) per shadow
output, ``shadow.prediction`` and ``shadow.transform_version`` (and ``raw.<col>`` for shadow
inputs the live transform does not read). Each segment's Parquet key-value metadata ``mlpipe``
holds its header (``documents.ServingLogHeader``: ``{"format_version": 1, "kind":
"mlpipe.serving_log"}``); readers refuse a segment of a format_version they do not read, and
read a segment without a header (written before headers existed) as version 1.

Every name of that contract, and the reading of a ``--since``/``--until`` window over it,
lives here so the writer (``serving.featurelog``) and the readers (``drift``, ``ops``) cannot
drift apart. No heavy imports: the CLI imports this module at start-up.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from mlpipe_cli.argnames import arg_name, given
from mlpipe_cli.errors import UsageError

RAW_PREFIX = "raw."  # a transform input column as the request carried it
VEC_PREFIX = "vec."  # a transform output column as served
PREFIXES = (RAW_PREFIX, VEC_PREFIX)
SERVED_AT = "served_at"
SEGMENT_GLOB = "segment-*.parquet"
TRANSFORM_VERSION = "transform_version"
PREDICTION = "prediction"
# Shadow serving: what a second transform (and model) computed from the same raw values, off
# the request path; never served, only logged for `psi-report --compare --serving-log`.
SHADOW_VEC_PREFIX = "shadow.vec."
SHADOW_PREDICTION = "shadow.prediction"
SHADOW_TRANSFORM_VERSION = "shadow.transform_version"


def raw_column(name: str) -> str:
    """The log column of transform input ``name``."""
    return f"{RAW_PREFIX}{name}"


def vec_column(name: str) -> str:
    """The log column of transform output ``name``."""
    return f"{VEC_PREFIX}{name}"


def shadow_vec_column(name: str) -> str:
    """The log column of shadow transform output ``name``."""
    return f"{SHADOW_VEC_PREFIX}{name}"


def segment_name(first_served_at: datetime, pid: int, seq: int) -> str:
    """File name of a segment whose first row was served at ``first_served_at`` (UTC)."""
    return f"segment-{first_served_at.strftime('%Y%m%dT%H%M%S')}-{pid}-{seq:06d}.parquet"


def segment_metadata() -> dict[str, str]:
    """The Parquet key-value metadata every segment is written with (its header)."""
    from mlpipe_cli.documents import ServingLogHeader

    header = {"format_version": ServingLogHeader.FORMAT_VERSION, "kind": ServingLogHeader.KIND}
    return {ServingLogHeader.PARQUET_KEY: json.dumps(header, sort_keys=True)}


def check_segment_metadata(metadata: Mapping[str, str] | None, origin: str) -> None:
    """Refuse (ArtifactError, exit 3) a segment whose header this mlpipe does not read."""
    from mlpipe_cli.documents import ServingLogHeader, check
    from mlpipe_cli.errors import InputError

    raw = (metadata or {}).get(ServingLogHeader.PARQUET_KEY)
    if raw is None:
        return  # written before segments had a header: the version-1 layout
    try:
        header = json.loads(raw)
    except ValueError:
        raise InputError(f"{origin}: unreadable serving-log header {raw[:60]!r}") from None
    check(ServingLogHeader, header, origin, invalid=InputError)


# The accepted forms, in every --since/--until error (a new user typed `--since 24x`).
_DURATION_FORMS = "such as 30m, 24h, 7d or 2w (units us, ms, s, m, h, d, w)"
_TIME_FORMS = "an ISO-8601 date or time such as 2026-07-01 or 2026-07-01T06:00:00Z (naive = UTC)"


def parse_instant(text: str, flag: str | None = None) -> datetime:
    """'now' or an ISO-8601 date/time (naive = UTC) → aware UTC datetime; UsageError naming
    ``flag`` (the option it came from) and the accepted forms otherwise."""
    text = text.strip()
    if text.lower() == "now":
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        where = f" for {flag}" if flag else ""
        raise UsageError(
            f"cannot parse time {text!r}{where}: expected {_TIME_FORMS}, or now"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_since(text: str) -> timedelta | datetime:
    """A --since value: a duration (back from --until) or an instant; UsageError naming the
    value and both accepted forms otherwise."""
    from mlpipe_cli.config.base import parse_duration

    try:
        return parse_duration(text)
    except ValueError:
        pass
    try:
        return parse_instant(text)
    except UsageError:
        raise UsageError(
            f"{given('since', repr(text))} is neither a duration back from "
            f"{arg_name('until')} {_DURATION_FORMS} nor {_TIME_FORMS}"
        ) from None


def check_window_flags(since: str | None, until: str | None) -> None:
    """Refuse (UsageError, exit 2) a --since or --until that ``parse_window`` cannot read,
    before any other work: a bad value is named even when other flags are wrong too."""
    if since is not None:
        parse_since(since)
    if until is not None:
        parse_instant(until, arg_name("until"))


def parse_window(
    since: str | None, until: str | None, default: timedelta
) -> tuple[datetime, datetime]:
    """--since (a duration back from --until, or an instant) and --until (default now)."""
    end = parse_instant(until, arg_name("until")) if until else datetime.now(UTC)
    if since is None:
        start = end - default
    else:
        back = parse_since(since)
        start = end - back if isinstance(back, timedelta) else back
    if start >= end:
        raise UsageError(
            f"empty time window: {given('since', start.isoformat())} is not before "
            f"{given('until', end.isoformat())}"
        )
    return start, end
