"""A static, self-contained HTML drift report: inline CSS and SVG, no scripts, no assets."""

from __future__ import annotations

import math
from html import escape
from typing import Any

_COLORS = {"stable": "#2e7d32", "moderate": "#b26a00", "drifted": "#c62828", "error": "#6a1b9a"}
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#222}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin:0 0 .4rem}
table{border-collapse:collapse;font-size:.85rem}td,th{padding:.15rem .6rem;text-align:left}
th{background:#f3f3f3}.summary td{border-bottom:1px solid #eee}
section.feature{border:1px solid #ddd;border-radius:6px;padding:1rem;margin:1rem 0}
.badge{display:inline-block;color:#fff;border-radius:4px;padding:0 .5rem;font-size:.8rem}
.warn{color:#b26a00;font-size:.85rem}.msg{color:#6a1b9a;font-size:.85rem}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 1rem}
svg text{font-size:10px;fill:#444}
"""


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}g}"
    return str(value)


def _badge(status: str) -> str:
    color = _COLORS.get(status, "#555")
    return f'<span class="badge" style="background:{color}">{escape(status)}</span>'


def histogram_svg(bins: list[dict[str, Any]], width: int = 640, height: int = 180) -> str:
    """Paired bars per bin: reference (grey) and current (blue); labels under each pair."""
    n = max(1, len(bins))
    top = max([b.get("reference") or 0.0 for b in bins] + [b.get("current") or 0.0 for b in bins]
              + [1e-12])
    pad_l, pad_b, pad_t = 34, 46, 8
    plot_w = width - pad_l - 4
    plot_h = height - pad_b - pad_t
    slot = plot_w / n
    bar = max(1.0, slot * 0.38)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="reference vs current histogram">',
        f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{width - 4}" y2="{pad_t + plot_h}" '
        'stroke="#999"/>',
        f'<text x="{pad_l - 4}" y="{pad_t + 8}" text-anchor="end">{top:.0%}</text>',
        f'<text x="{pad_l - 4}" y="{pad_t + plot_h}" text-anchor="end">0</text>',
    ]
    for i, b in enumerate(bins):
        x0 = pad_l + i * slot + slot * 0.1
        for j, (key, color) in enumerate((("reference", "#9e9e9e"), ("current", "#1e88e5"))):
            value = float(b.get(key) or 0.0)
            h = plot_h * value / top
            parts.append(
                f'<rect class="{key}" x="{x0 + j * bar:.1f}" y="{pad_t + plot_h - h:.1f}" '
                f'width="{bar:.1f}" height="{h:.1f}" fill="{color}">'
                f"<title>{escape(str(b.get('bin')))} {key}: {value:.4%}</title></rect>"
            )
        label = str(b.get("bin"))
        if len(label) > 18:
            label = label[:17] + "…"
        cx = pad_l + i * slot + slot / 2
        parts.append(
            f'<text x="{cx:.1f}" y="{pad_t + plot_h + 12}" text-anchor="end" '
            f'transform="rotate(-35 {cx:.1f} {pad_t + plot_h + 12})">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: dict[str, Any], title: str = "mlpipe psi-report") -> str:
    """One page: a summary table, then one <section class="feature"> per feature."""
    features = report.get("features", [])
    profile = report.get("profile", {})
    current = report.get("current", {})
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}: {_badge('drifted' if report.get('status') == 'failed' else 'stable')}"
        f" {escape(str(report.get('status')))}</h1>",
        "<p>Reference: " + escape(_describe(profile)) + "<br>Current: "
        + escape(_describe(current)) + "</p>",
        "<p>PSI = Σ (cur − ref) · ln(cur / ref) over the reference bins; proportions clipped at "
        f"{escape(str(report.get('convention', {}).get('eps', 1e-4)))} without renormalisation. "
        f"Gate: PSI ≥ {escape(_fmt(report.get('threshold')))} drifted, ≥ "
        f"{escape(_fmt(report.get('moderate_threshold')))} moderate.</p>",
        '<table class="summary"><tr><th>feature</th><th>status</th><th>PSI</th>'
        "<th>threshold</th><th>KS p</th><th>rows</th></tr>",
    ]
    for i, f in enumerate(features):
        out.append(
            f'<tr><td><a href="#f{i}">{escape(f["column"])}</a></td><td>{_badge(f["status"])}'
            f"</td><td>{_fmt(f.get('psi'))}</td><td>{_fmt(f.get('threshold'))}</td>"
            f"<td>{_fmt(f.get('ks_pvalue'))}</td><td>{_fmt(f.get('rows'))}</td></tr>"
        )
    out.append("</table>")
    for i, f in enumerate(features):
        out.append(_section(i, f))
    out.append("</body></html>\n")
    return "\n".join(out)


def _describe(info: dict[str, Any]) -> str:
    keys = ("source", "kind", "version", "path", "since", "until", "rows")
    return ", ".join(f"{k} {info[k]}" for k in keys if info.get(k) is not None)


def _section(i: int, f: dict[str, Any]) -> str:
    stats = [
        ("kind", f.get("kind")),
        ("PSI", f.get("psi")),
        ("threshold", f.get("threshold")),
        ("KS statistic", f.get("ks_statistic")),
        ("KS p-value", f.get("ks_pvalue")),
        ("null rate ref → cur", f"{_fmt(f.get('null_rate_ref'))} → {_fmt(f.get('null_rate_cur'))}"),
        ("mean ref → cur", f"{_fmt(f.get('mean_ref'))} → {_fmt(f.get('mean_cur'))}"),
        ("std ref → cur", f"{_fmt(f.get('std_ref'))} → {_fmt(f.get('std_cur'))}"),
        ("current rows", f.get("rows")),
    ]
    parts = [
        f'<section class="feature" id="f{i}" data-feature="{escape(f["column"], quote=True)}" '
        f'data-status="{escape(f["status"])}">',
        f"<h2>{escape(f['column'])} {_badge(f['status'])}</h2>",
    ]
    if f.get("message"):
        parts.append(f'<p class="msg">{escape(f["message"])}</p>')
    for w in f.get("warnings") or []:
        parts.append(f'<p class="warn">warning: {escape(w)}</p>')
    parts.append("<table>" + "".join(
        f"<tr><th>{escape(k)}</th><td>{escape(_fmt(v))}</td></tr>" for k, v in stats
    ) + "</table>")
    bins = f.get("bins") or []
    if bins:
        parts.append('<p class="legend"><span style="background:#9e9e9e"></span>reference'
                     '<span style="background:#1e88e5"></span>current</p>')
        parts.append(histogram_svg(bins))
        parts.append("<details><summary>bins</summary><table><tr><th>bin</th><th>reference</th>"
                     "<th>current</th><th>PSI term</th></tr>" + "".join(
                         f"<tr><td>{escape(str(b['bin']))}</td><td>{_fmt(b['reference'])}</td>"
                         f"<td>{_fmt(b['current'])}</td><td>{_fmt(b['contribution'])}</td></tr>"
                         for b in bins) + "</table></details>")
    parts.append("</section>")
    return "\n".join(parts)
