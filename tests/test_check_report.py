"""tools/check_report.py: reads the results a Snakemake report embeds and decodes every figure in
headless Chromium. On a page in the report's format (a real report needs a whole pipeline run):
a good PNG decodes, a corrupt one is reported, tables are counted. Skipped without Chromium."""

from __future__ import annotations

import base64
import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (apt-get install chromium)")


def png(width: int, height: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80\x40\x20" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def uri(mime: str, data: bytes) -> str:
    return f"data:{mime};charset=utf8;base64,{base64.b64encode(data).decode()}"


def page(tmp_path: Path, figures: dict[str, bytes]) -> Path:
    results = {p: {"mime_type": "image/png", "data_uri": uri("image/png", d)} for p, d in figures.items()}
    results["paper_tables/t.csv"] = {"mime_type": "text/csv", "data_uri": uri("text/csv", b"a,b\n1,2\n3,4\n")}
    categories = {"Engine": {"Other": list(figures)}, "LM": {"smoke": ["paper_tables/t.csv"]}}
    app = "".join(f"<div>item {i}</div>" for i in range(12))
    html = (f"<!doctype html><html><head><title>r</title></head><body><div id=\"app\"></div>"
            f"<script id=\"results\">\n    var results = {json.dumps(results)};\n    </script>"
            f"<script id=\"categories\">\n    var categories = {json.dumps(categories)};\n    </script>"
            f"<script>document.querySelector('#app').innerHTML = {json.dumps(app)};</script></body></html>")
    path = tmp_path / "report.html"
    path.write_text(html)
    return path


def check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools/check_report.py"), *args],
                          capture_output=True, text=True, timeout=900)


@needs_chromium
def test_every_figure_decodes_and_the_counts_are_printed(tmp_path):
    report = page(tmp_path, {"figures/a.png": png(30, 20), "figures/b.png": png(5, 5)})
    manifest = tmp_path / "manifest"
    manifest.write_text("# header\nabc  10  figures/a.png\nabc  10  figures/b.png\nabc 1 paper_tables/t.md\n")
    out = check(str(report), "--manifest", str(manifest))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Engine: 2 figures, 0 tables" in out.stdout and "LM: 0 figures, 1 tables" in out.stdout
    assert "figures: 2, decoded in the browser: 2" in out.stdout
    assert "tables: 1 (CSV, 2 rows in all)" in out.stdout
    assert "manifest: 2 PNG/CSV artefacts, 2 in the report" in out.stdout


@needs_chromium
def test_a_figure_that_does_not_decode_or_is_missing_fails(tmp_path):
    report = page(tmp_path, {"figures/a.png": png(30, 20), "figures/bad.png": png(8, 8)[:40]})
    manifest = tmp_path / "manifest"
    manifest.write_text("abc  10  figures/a.png\nabc  10  figures/gone.png\n")
    out = check(str(report), "--manifest", str(manifest))
    assert out.returncode == 1
    assert "figures: 2, decoded in the browser: 1" in out.stdout
    assert "not decoded: figures/bad.png" in out.stderr
    assert "in the manifest, not in the report: figures/gone.png" in out.stderr


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    out = check(str(tmp_path / "missing.html"))
    assert out.returncode == 2 and out.stderr.strip().endswith("missing.html: not found")
    (tmp_path / "x.html").write_text("<html></html>")
    out = check(str(tmp_path / "x.html"), "--chromium", shutil.which("true") or "/bin/true")
    assert out.returncode == 2 and "no embedded 'results'" in out.stderr


@needs_chromium
def test_a_report_with_many_large_figures_is_probed_to_the_end(tmp_path):
    # the full CPU-tier report (13 figures, 5 MB) once left an async probe unfinished when Chromium
    # dumped the page: the check must wait for every figure however many there are
    report = page(tmp_path, {f"figures/f{i}.png": png(600, 400) for i in range(40)})
    out = check(str(report))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "figures: 40, decoded in the browser: 40" in out.stdout
