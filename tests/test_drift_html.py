"""The HTML drift report: its content (header counts, relative paths, order, groups, labels)
and how it renders in a real browser (headless Chromium screenshot, decoded and inspected)."""

from __future__ import annotations

import importlib.util
import re
import struct
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mlpipe_cli.drift import build_profile
from mlpipe_cli.drift.html import render_html, write_html
from mlpipe_cli.drift.report import drift_report, scan_parts

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "drift_report_screenshot", ROOT / "scripts" / "drift_report_screenshot.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report_doc(tmp_path_factory):
    """A real report: a profile of reference data, current data in a Parquet file."""
    tmp = tmp_path_factory.mktemp("html")
    rng = np.random.default_rng(4)
    n = 4000
    ref = pl.DataFrame(
        {
            "raw.amount": rng.lognormal(3, 1, n),
            "vec.amount": rng.normal(0, 1, n),
            "raw.country": rng.choice(["US", "DE", "JP"], n, p=[0.6, 0.35, 0.05]),
            "vec.country__JP": (rng.random(n) < 0.05).astype(float),
            "vec.country__US": (rng.random(n) < 0.6).astype(float),
            "raw.age": rng.integers(18, 80, n).astype(float),
            "raw.tenure": np.linspace(0, 10, n),
            "raw.score": rng.normal(0, 1, n),
            "vec.label_ts__hour_sin": np.sin(rng.uniform(0, 6.28, n)),
        }
    )
    cur_n = 1000
    cur = pl.DataFrame(
        {
            "raw.amount": rng.lognormal(4.5, 1, cur_n),  # drifted
            "vec.amount": rng.normal(1.5, 1, cur_n),  # drifted
            "raw.country": rng.choice(["US", "DE", "JP"], cur_n, p=[0.6, 0.35, 0.05]),
            "vec.country__JP": (rng.random(cur_n) < 0.30).astype(float),  # drifted, 5% → 30%
            "vec.country__US": (rng.random(cur_n) < 0.6).astype(float),
            "raw.age": rng.integers(18, 80, cur_n).astype(float),
            "raw.tenure": np.linspace(0.7, 10.7, cur_n),  # moderate: PSI 0.121
            # raw.score missing: an error
            "vec.label_ts__hour_sin": np.full(cur_n, 0.5),
        }
    )
    profile_path = tmp / "profiles" / "profile.json"
    profile_path.parent.mkdir()
    (tmp / "data").mkdir()
    cur.write_parquet(tmp / "data" / "today.parquet")
    report = drift_report(
        build_profile(ref),
        scan_parts([tmp / "data" / "today.parquet"]),
        exclude={"vec.label_ts__hour_sin": "request-time feature"},
        profile_info={
            "source": "artifact",
            "kind": "transform",
            "version": "0007-abcdef012345",
            "path": str(profile_path),
        },
        current_info={
            "source": "file",
            "path": str(tmp / "data" / "today.parquet"),
            "since": "2026-06-30T00:00:00+00:00",
            "until": "2026-07-01T00:00:00+00:00",
        },
    )
    return {"tmp": tmp, "doc": report.to_dict()}


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cards: list[dict[str, str | None]] = []
        self.rows: list[dict[str, str | None]] = []
        self.counts: dict[str, str] = {}
        self.tags: list[str] = []
        self.refs: list[str] = []
        self._count: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "section" and a.get("class") == "card":
            self.cards.append({**a, "rows": []})
        if tag == "tr" and a.get("class") == "feature":
            self.rows.append(a)
            self.cards[-1]["rows"].append(a["data-feature"])
        if tag == "span" and (a.get("class") or "").startswith("count"):
            self._count = a["data-status"]
        for key in ("src", "href"):
            if a.get(key):
                self.refs.append(a[key])

    def handle_data(self, data):
        if self._count is not None and data.strip():
            self.counts[self._count] = data.strip()
            self._count = None


def test_report_content_header_groups_order_and_labels(report_doc):
    doc, tmp = report_doc["doc"], report_doc["tmp"]
    assert doc["summary"] == {"stable": 3, "moderate": 1, "drifted": 3, "error": 1, "excluded": 1}
    html = render_html(doc, relative_to=tmp / "reports")
    page = Page()
    page.feed(html)
    page.close()
    # header: counts per status, generation time, reference and current versions, window
    assert page.counts == {
        "drifted": "3",
        "error": "1",
        "moderate": "1",
        "stable": "3",
        "excluded": "1",
    }
    assert re.search(r"<dt>generated</dt><dd>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</dd>", html)
    assert "transform <code>0007-abcdef012345</code>" in html
    assert "<code>../profiles/profile.json</code>" in html
    assert "<code>../data/today.parquet</code> · 1,000 rows" in html
    assert "2026-06-30 00:00:00 UTC → 2026-07-01 00:00:00 UTC (1 day)" in html
    # relative paths only
    assert str(tmp) not in html
    # raw and transformed views of one feature share a card; the drifted cards first, then
    # the error, the moderate and the stable ones; within a status by highest PSI
    cards = {c["data-group"]: c for c in page.cards}
    assert cards["amount"]["rows"] == ["raw.amount", "vec.amount"]
    assert cards["country"]["rows"][0] == "raw.country"
    assert set(cards["country"]["rows"]) == {"raw.country", "vec.country__JP", "vec.country__US"}
    assert [c["data-status"] for c in page.cards] == [
        "drifted",
        "drifted",
        "error",
        "moderate",
        "stable",
    ]
    psi = {f["column"]: f["psi"] for f in doc["features"]}
    drifted_groups = [c["data-group"] for c in page.cards[:2]]
    assert drifted_groups == sorted(
        ["amount", "country"],
        key=lambda g: -max(psi[c] for c in cards[g]["rows"] if psi[c] is not None),
    )
    assert len(page.rows) == 8  # every compared feature once
    # the excluded feature is listed with its reason, not in a card
    assert "vec.label_ts__hour_sin" not in [r["data-feature"] for r in page.rows]
    assert re.search(r"vec\.label_ts__hour_sin</code></td><td>excluded: request-time feature", html)
    # readable bin labels: the flag by value, deciles with 3 significant digits
    assert ">0</text>" in html
    assert ">1</text>" in html
    assert re.search(r">≥ \d+(\.\d{1,2})?</text>", html)
    assert re.search(r">\[\d+(\.\d+)?, \d+(\.\d+)?\)</text>", html)
    labels = re.findall(r"<text [^>]*>([^<]*)</text>", html)
    numbers = [m for label in labels for m in re.findall(r"\d[\d.]*", label)]
    assert numbers
    significant = [len(n.replace(".", "").lstrip("0")) for n in numbers]
    assert max(significant) <= 4, [n for n in numbers if len(n.replace(".", "").lstrip("0")) > 4]
    # static and self-contained
    assert "script" not in page.tags
    assert all(ref.startswith("#") for ref in page.refs)


def test_write_html_shows_paths_relative_to_the_page(report_doc, tmp_path):
    out = tmp_path / "site" / "drift.html"
    out.parent.mkdir()
    write_html(report_doc["doc"], out)
    text = out.read_text()
    # the shown paths are relative and lead from the page's directory to the real files
    shown = re.findall(r"<code>([^<]*(?:today\.parquet|profile\.json))</code>", text)
    assert len(shown) == 2
    for path in shown:
        assert not Path(path).is_absolute()
    assert (out.parent / shown[1]).resolve() == report_doc["tmp"] / "data" / "today.parquet"
    assert re.search(rf"(?<![./]){re.escape(str(report_doc['tmp']))}", text) is None


def _png_pixels(path: Path) -> tuple[int, int, list[bytes], int]:
    """Decode an 8-bit RGB/RGBA PNG (what Chromium writes) with zlib: width, height, rows,
    bytes per pixel."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = color = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8
        elif kind == b"IDAT":
            idat += body
    bpp = {2: 3, 6: 4}[color]
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(height):
        kind, line = raw[i], bytearray(raw[i + 1 : i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if kind == 1:
                line[x] = (line[x] + a) & 255
            elif kind == 2:
                line[x] = (line[x] + b) & 255
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, rows, bpp


_CHROMIUM = _script().find_chromium()


@pytest.mark.skipif(
    _CHROMIUM is None,
    reason="no chromium binary installed (apt-get install chromium) to render the report",
)
def test_report_renders_in_headless_chromium(report_doc, tmp_path):
    page = tmp_path / "drift.html"
    write_html(report_doc["doc"], page)
    png = tmp_path / "drift.png"
    _script().screenshot(page, png, width=1000, height=900)
    width, height, rows, bpp = _png_pixels(png)
    assert (width, height) == (1000, 900)
    colors: dict[tuple[int, int, int], int] = {}
    for row in rows[::3]:
        for x in range(0, width * bpp, bpp * 3):
            px = (row[x], row[x + 1], row[x + 2])
            colors[px] = colors.get(px, 0) + 1
    total = sum(colors.values())
    background = max(colors.values())
    # not blank: plenty of pixels differ from the page background, in many colours
    assert total - background > 0.10 * total
    assert len(colors) > 50

    def near(rgb: tuple[int, int, int]) -> int:
        return sum(n for c, n in colors.items() if all(abs(c[k] - rgb[k]) <= 6 for k in range(3)))

    # the header's "drifted" count chip and the current-data bars are drawn
    assert near((0xC6, 0x28, 0x28)) > 50
    assert near((0x1E, 0x88, 0xE5)) > 20
