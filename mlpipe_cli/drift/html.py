"""A static, self-contained HTML drift report: inline CSS and SVG, no scripts, no assets.

Layout (what a reader needs first comes first):

* a header: overall status, counts per status, generation time, the reference (profile
  version, rows) and the current data (path, window, rows, transform versions seen);
* an overview table of features, drifted first;
* one card per feature *group*: the raw input and every output derived from it
  (``raw.country``, ``vec.country__US``, ...) share a card with one row per view, and
  histograms open for the views that drifted, moderated or failed (the stable ones folded);
* the features not compared (excluded) and why.

Paths are shown relative to the report's directory (or the working directory), never as
absolute machine paths.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from datetime import datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any

from mlpipe_cli.drift.compare import format_number

STATUS_ORDER = ("drifted", "error", "moderate", "stable", "excluded")
_COLORS = {
    "drifted": "#c62828",
    "error": "#6a1b9a",
    "moderate": "#b26a00",
    "stable": "#2e7d32",
    "excluded": "#757575",
}
_REF_COLOR = "#9e9e9e"
_CUR_COLOR = "#1e88e5"
MAX_BARS = 24  # histogram bars shown; beyond, the smaller bins are summed into one bar

_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
margin:0;padding:1.5rem 2rem;color:#1f2328;background:#f6f8fa;line-height:1.4}
h1{font-size:1.5rem;margin:0 0 .5rem;display:flex;align-items:center;gap:.6rem}
h2{font-size:1.15rem;margin:0;display:flex;align-items:center;gap:.5rem}
h3{font-size:.95rem;margin:.8rem 0 .2rem}
header,section.card,.overview,.excluded{background:#fff;border:1px solid #d0d7de;
border-radius:8px;padding:1rem 1.2rem;margin:0 0 1rem}
.counts{display:flex;gap:.5rem;flex-wrap:wrap;margin:.4rem 0 .8rem}
.count{border-radius:6px;padding:.3rem .7rem;color:#fff;font-weight:600;font-size:.95rem}
.count b{font-size:1.2rem;margin-right:.3rem}
.count.zero{opacity:.35}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:0;
font-size:.9rem}
dl.meta dt{color:#57606a}dl.meta dd{margin:0}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85em}
table{border-collapse:collapse;font-size:.85rem;width:100%}
td,th{padding:.25rem .6rem;text-align:left;border-bottom:1px solid #eaeef2;
vertical-align:top}
th{background:#f6f8fa;font-weight:600;color:#57606a}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;color:#fff;border-radius:10px;padding:0 .55rem;
font-size:.78rem;font-weight:600;white-space:nowrap}
.note{color:#57606a;font-size:.8rem}
.warn{color:#9a6700;font-size:.85rem;margin:.3rem 0}
.msg{color:#6a1b9a}
.card-head{display:flex;justify-content:space-between;align-items:baseline;gap:1rem}
.card-head .views{color:#57606a;font-size:.85rem}
.charts{display:flex;flex-wrap:wrap;gap:.5rem 1.5rem}
figure{margin:.4rem 0}figcaption{font-size:.85rem;font-weight:600;margin-bottom:.2rem}
.legend{font-size:.8rem;color:#57606a;margin:.2rem 0}
.legend i{display:inline-block;width:.75rem;height:.75rem;margin:0 .3rem 0 .8rem;
vertical-align:-1px;border-radius:2px}
details{margin:.4rem 0}summary{cursor:pointer;color:#0969da;font-size:.85rem}
svg text{font-size:10px;fill:#57606a}
.convention{font-size:.8rem;color:#57606a;margin:.6rem 0 0}
"""


# ----------------------------------------------------------------------------- formatting


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return format_number(value, digits)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _pvalue(value: Any) -> str:
    if value is None:
        return "–"
    if value < 1e-16:
        return "&lt;1e-16"
    return escape(format_number(float(value), 2))


def _arrow(a: Any, b: Any) -> str:
    return f"{_fmt(a)} → {_fmt(b)}"


def _badge(status: str) -> str:
    color = _COLORS.get(status, "#555")
    return f'<span class="badge" style="background:{color}">{escape(status)}</span>'


def relative_path(path: str, base: Path) -> str:
    """``path`` relative to ``base`` when it is absolute (never a machine path in a report)."""
    if not os.path.isabs(path):
        return path
    try:
        return os.path.relpath(path, base)
    except ValueError:  # another drive on Windows: the file name is all we can say
        return Path(path).name


# ----------------------------------------------------------------------------- histogram


def _bars(bins: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At most MAX_BARS bars: the largest bins (by max of both sides) in their order, the
    rest summed into one "N more" bar — a 1000-category feature stays readable."""
    if len(bins) <= MAX_BARS:
        return bins
    weight = sorted(
        range(len(bins)),
        key=lambda i: -max(bins[i].get("reference") or 0.0, bins[i].get("current") or 0.0),
    )
    keep = set(weight[: MAX_BARS - 1])
    shown = [b for i, b in enumerate(bins) if i in keep]
    rest = [b for i, b in enumerate(bins) if i not in keep]
    shown.append(
        {
            "bin": f"{len(rest)} more",
            "reference": math.fsum(b.get("reference") or 0.0 for b in rest),
            "current": math.fsum(b.get("current") or 0.0 for b in rest),
        }
    )
    return shown


def histogram_svg(bins: list[dict[str, Any]], width: int = 560, height: int = 200) -> str:
    """Paired bars per bin, reference (grey) then current (blue), on a percentage axis."""
    bins = _bars(bins)
    n = max(1, len(bins))
    top = max(
        [b.get("reference") or 0.0 for b in bins]
        + [b.get("current") or 0.0 for b in bins]
        + [1e-12]
    )
    step = _nice_step(top)
    top = max(step, math.ceil(top / step - 1e-9) * step)
    labels = [_bin_name(b.get("bin")) for b in bins]
    longest = max(len(label) for label in labels)
    rotate = n > 6 or longest * 6 > (width - 44) / n
    pad_l, pad_t, pad_r = 40, 8, 6
    pad_b = 16 + (min(longest, 16) * 5 if rotate else 0)
    plot_w = width - pad_l - pad_r
    plot_h = height - pad_b - pad_t
    slot = plot_w / n
    bar = max(1.0, slot * 0.38)
    base = pad_t + plot_h
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" '
        'aria-label="reference vs current proportions per bin">',
    ]
    ticks = round(top / step)
    for k in range(ticks + 1):
        y = base - plot_h * (k * step) / top
        parts.append(
            f'<line x1="{pad_l}" y1="{y:.1f}" x2="{width - pad_r}" y2="{y:.1f}" '
            f'stroke="{"#8c959f" if k == 0 else "#eaeef2"}"/>'
        )
        parts.append(
            f'<text x="{pad_l - 4}" y="{y + 3:.1f}" text-anchor="end">{_percent(k * step)}</text>'
        )
    for i, b in enumerate(bins):
        x0 = pad_l + i * slot + (slot - 2 * bar) / 2
        for j, (key, color) in enumerate((("reference", _REF_COLOR), ("current", _CUR_COLOR))):
            value = float(b.get(key) or 0.0)
            h = plot_h * value / top
            parts.append(
                f'<rect class="{key}" x="{x0 + j * bar:.1f}" y="{base - h:.1f}" '
                f'width="{bar:.1f}" height="{h:.1f}" fill="{color}">'
                f"<title>{escape(labels[i])} {key}: {value:.2%}</title></rect>"
            )
        label = labels[i] if len(labels[i]) <= 18 else labels[i][:17] + "…"
        cx = pad_l + i * slot + slot / 2
        if rotate:
            parts.append(
                f'<text x="{cx + 3:.1f}" y="{base + 10}" text-anchor="end" '
                f'transform="rotate(-40 {cx + 3:.1f} {base + 10})">{escape(label)}'
                "</text>"
            )
        else:
            parts.append(
                f'<text x="{cx:.1f}" y="{base + 12}" text-anchor="middle">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _bin_name(name: Any) -> str:
    """``__missing__`` → "missing", ``__other__`` → "other"; every other label as is."""
    return {"__missing__": "missing", "__other__": "other"}.get(str(name), str(name))


def _nice_step(top: float) -> float:
    """A tick step of 1, 2 or 5 × 10^k giving 2-5 ticks up to ``top``."""
    raw = top / 4
    power = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if mult * power >= raw:
            return mult * power
    return 10 * power


def _percent(p: float) -> str:
    return f"{format_number(p * 100, 2)}%"


# ----------------------------------------------------------------------------- page


def _rank(status: str) -> int:
    return STATUS_ORDER.index(status) if status in STATUS_ORDER else len(STATUS_ORDER)


def group_features(features: Sequence[dict[str, Any]]) -> list[tuple[str, list[dict]]]:
    """Features grouped by their ``group`` (raw and transformed views of one input), groups
    ordered drifted → error → moderate → stable → excluded, then by highest PSI, then name;
    inside a group the raw view first, then the others in the same order."""
    groups: dict[str, list[dict]] = {}
    for f in features:
        groups.setdefault(f.get("group") or f["column"], []).append(f)

    def member_key(f: dict) -> tuple:
        return (
            not f["column"].startswith("raw."),
            _rank(f["status"]),
            -(f.get("psi") or 0.0),
            f["column"],
        )

    def group_key(item: tuple[str, list[dict]]) -> tuple:
        name, members = item
        return (
            min(_rank(f["status"]) for f in members),
            -max((f.get("psi") or 0.0) for f in members),
            name,
        )

    return sorted(
        ((name, sorted(members, key=member_key)) for name, members in groups.items()), key=group_key
    )


def _worst(members: list[dict]) -> str:
    return min((f["status"] for f in members), key=_rank)


def render_html(
    report: dict[str, Any], title: str = "Drift report", *, relative_to: Path | str | None = None
) -> str:
    """The report document (``DriftReport.to_dict()``) as one HTML page.

    ``relative_to``: the directory paths are shown relative to — pass the HTML file's
    directory (default: the working directory)."""
    base = Path(relative_to) if relative_to is not None else Path.cwd()
    features = list(report.get("features", []))
    compared = [f for f in features if f["status"] != "excluded"]
    excluded = [f for f in features if f["status"] == "excluded"]
    groups = group_features(compared)
    summary = report.get("summary") or {}
    failed = report.get("status") == "failed"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<header>",
        f"<h1>{escape(title)} {_badge('drifted' if failed else 'stable')}"
        f'<span class="note">{"failed" if failed else "passed"}</span></h1>',
        '<div class="counts">',
    ]
    for status in STATUS_ORDER:
        count = int(summary.get(status, 0))
        out.append(
            f'<span class="count{"" if count else " zero"}" data-status="{status}" '
            f'style="background:{_COLORS[status]}"><b>{count}</b>{status}</span>'
        )
    out.append("</div>")
    out.append(_meta(report, base))
    for warning in report.get("warnings") or []:
        out.append(f'<p class="warn">warning: {escape(warning)}</p>')
    out.append("</header>")

    out.append(
        '<div class="overview"><table><tr><th>feature</th><th>status</th>'
        '<th class="num">views</th><th class="num">max PSI</th><th>views not stable</th>'
        "</tr>"
    )
    for i, (name, members) in enumerate(groups):
        noisy = [f["column"] for f in members if f["status"] != "stable"]
        psis = [f["psi"] for f in members if f.get("psi") is not None]
        out.append(
            f'<tr><td><a href="#g{i}">{escape(name)}</a></td><td>{_badge(_worst(members))}</td>'
            f'<td class="num">{len(members)}</td>'
            f'<td class="num">{_fmt(max(psis)) if psis else "–"}</td>'
            f'<td class="note">{escape(", ".join(noisy[:4]))}'
            f"{' …' if len(noisy) > 4 else ''}</td></tr>"
        )
    out.append("</table></div>")
    for i, (name, members) in enumerate(groups):
        out.append(_card(i, name, members))
    if excluded:
        out.append(
            '<div class="excluded"><h2>Not compared</h2><table><tr><th>feature</th>'
            "<th>reason</th></tr>"
        )
        for f in sorted(excluded, key=lambda f: f["column"]):
            out.append(
                f'<tr data-feature="{escape(f["column"], quote=True)}"><td><code>'
                f"{escape(f['column'])}</code></td><td>{escape(f.get('message') or '')}"
                "</td></tr>"
            )
        out.append("</table></div>")
    out.append("</body></html>\n")
    return "\n".join(out)


def _meta(report: dict[str, Any], base: Path) -> str:
    profile = report.get("profile") or {}
    current = report.get("current") or {}
    ref = []
    if profile.get("version"):
        ref.append(
            f"{escape(str(profile.get('kind') or 'artifact'))} <code>"
            f"{escape(str(profile['version']))}</code>"
        )
    if profile.get("data_source"):
        ref.append(f"source <code>{escape(str(profile['data_source']))}</code>")
    if profile.get("path"):
        ref.append(f"<code>{escape(relative_path(str(profile['path']), base))}</code>")
    if profile.get("rows") is not None:
        ref.append(f"{_fmt(profile['rows'])} rows")
    cur = []
    if current.get("source"):
        cur.append(escape(str(current["source"])))
    if current.get("path"):
        cur.append(f"<code>{escape(relative_path(str(current['path']), base))}</code>")
    if current.get("rows") is not None:
        cur.append(f"{_fmt(current['rows'])} rows")
    versions = current.get("versions") or {}
    rows = [
        ("generated", escape(_when(report.get("generated_at")))),
        ("reference", " · ".join(ref) or "–"),
        ("current", " · ".join(cur) or "–"),
    ]
    if versions:
        rows.append(
            (
                "current versions",
                ", ".join(
                    f"<code>{escape(str(v))}</code> ({_fmt(n)} rows)" for v, n in versions.items()
                ),
            )
        )
    if current.get("since") or current.get("until"):
        rows.append(("window", escape(_window(current.get("since"), current.get("until")))))
    rows.append(
        (
            "gate",
            f"PSI ≥ {escape(_fmt(report.get('threshold')))} drifted, ≥ "
            f"{escape(_fmt(report.get('moderate_threshold')))} moderate; fewer than "
            f"{escape(_fmt(report.get('min_rows')))} rows warn",
        )
    )
    eps = (report.get("convention") or {}).get("eps", 1e-4)
    return (
        '<dl class="meta">'
        + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
        + '</dl><p class="convention">PSI = Σ (cur − ref) · ln(cur / ref) over the '
        f"reference's bins, proportions of all rows clipped at {escape(str(eps))} without "
        "renormalisation (docs/psi-report.md).</p>"
    )


def _parse(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def _when(value: Any) -> str:
    """An ISO time as 'YYYY-MM-DD HH:MM:SS UTC' (other zones keep their offset)."""
    moment = _parse(value)
    if moment is None:
        return str(value) if value else "–"
    if moment.utcoffset() == timedelta(0):
        return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return moment.isoformat(sep=" ")


def _window(since: Any, until: Any) -> str:
    start, end = _parse(since), _parse(until)
    text = f"{_when(since) if since else '…'} → {_when(until) if until else '…'}"
    if start is not None and end is not None and end > start:
        seconds = (end - start).total_seconds()
        unit = next(
            (u for u in ((86400, "day"), (3600, "hour"), (60, "minute")) if seconds >= u[0]),
            (1, "second"),
        )
        count = seconds / unit[0]
        text += f" ({format_number(count, 3)} {unit[1]}{'s' if count != 1 else ''})"
    return text


def _card(i: int, name: str, members: list[dict]) -> str:
    worst = _worst(members)
    counts: dict[str, int] = {}
    for f in members:
        counts[f["status"]] = counts.get(f["status"], 0) + 1
    views = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: _rank(kv[0])))
    parts = [
        f'<section class="card" id="g{i}" data-group="{escape(name, quote=True)}" '
        f'data-status="{escape(worst)}">',
        f'<div class="card-head"><h2>{escape(name)} {_badge(worst)}</h2>'
        f'<span class="views">{len(members)} view{"s" if len(members) != 1 else ""}: '
        f"{escape(views)}</span></div>",
        '<table><tr><th>view</th><th>status</th><th class="num">PSI</th>'
        '<th class="num">KS p</th><th>null rate ref → cur</th><th>mean ref → cur</th>'
        '<th class="num">rows</th><th>note</th></tr>',
    ]
    for f in members:
        note = f.get("message") or "; ".join(f.get("warnings") or [])
        parts.append(
            f'<tr class="feature" data-feature="{escape(f["column"], quote=True)}" '
            f'data-status="{escape(f["status"])}"><td><code>{escape(f["column"])}</code></td>'
            f'<td>{_badge(f["status"])}</td><td class="num">{_fmt(f.get("psi"))}</td>'
            f'<td class="num">{_pvalue(f.get("ks_pvalue"))}</td>'
            f"<td>{escape(_arrow(f.get('null_rate_ref'), f.get('null_rate_cur')))}</td>"
            f"<td>{escape(_arrow(f.get('mean_ref'), f.get('mean_cur')))}</td>"
            f'<td class="num">{_fmt(f.get("rows"))}</td>'
            f'<td class="note{" msg" if f["status"] == "error" else ""}">{escape(note)}</td>'
            "</tr>"
        )
    parts.append("</table>")
    loud = [f for f in members if f["status"] != "stable" and f.get("bins")]
    quiet = [f for f in members if f["status"] == "stable" and f.get("bins")]
    if loud or quiet:
        parts.append(
            f'<p class="legend"><i style="background:{_REF_COLOR}"></i>reference'
            f'<i style="background:{_CUR_COLOR}"></i>current</p>'
        )
    if loud:
        parts.append('<div class="charts">' + "".join(_figure(f) for f in loud) + "</div>")
    if quiet:
        label = f"histograms of {len(quiet)} stable view{'s' if len(quiet) != 1 else ''}"
        parts.append(
            f'<details><summary>{label}</summary><div class="charts">'
            + "".join(_figure(f) for f in quiet)
            + "</div></details>"
        )
    parts.append("</section>")
    return "\n".join(parts)


def _figure(f: dict[str, Any]) -> str:
    bins = f.get("bins") or []
    table = (
        "<details><summary>bins</summary><table><tr><th>bin</th>"
        '<th class="num">reference</th><th class="num">current</th>'
        '<th class="num">PSI term</th></tr>'
        + "".join(
            f"<tr><td>{escape(_bin_name(b['bin']))}</td>"
            f'<td class="num">{_percent(b.get("reference") or 0.0)}</td>'
            f'<td class="num">{_percent(b.get("current") or 0.0)}</td>'
            f'<td class="num">{_fmt(b.get("contribution"))}</td></tr>'
            for b in bins
        )
        + "</table></details>"
    )
    caption = f"{escape(f['column'])} · PSI {_fmt(f.get('psi'))}"
    return f"<figure><figcaption>{caption}</figcaption>{histogram_svg(bins)}{table}</figure>"


def write_html(report: dict[str, Any], path: Path | str, title: str = "Drift report") -> None:
    """Render ``report`` and write it atomically to ``path``, with paths shown relative to
    the page's own directory."""
    from mlpipe_cli.drift.profile import atomic_write_text

    path = Path(path)
    atomic_write_text(path, render_html(report, title, relative_to=path.absolute().parent))
