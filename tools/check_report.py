"""Does the HTML report open in a browser and show every figure? Counts what it holds.

    python tools/check_report.py report.html [--manifest reproduce-all] [--screenshot shot.png]

Reads the results that ``snakemake reproduce-all --report report.html`` embedded in the page
(figures: images; tables: CSV), then opens a copy of the page in headless Chromium (the system
package, ``apt-get install chromium``) with a script appended that waits for the report's app to
render and decodes every embedded figure in the browser (drawn onto a canvas: the browser's own
image decoder, as when the figure is shown), and prints per part the figures, decoded, and the
tables. ``--manifest``: also checks that every PNG and CSV the manifest lists is in the report.

Exit status: 0 every figure decoded and the app rendered; 1 something is missing or did not
decode; 2 bad input or no Chromium.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]
# appended to a copy of the report: records errors, loads every figure as an image of the page (so
# that the page's load event waits for them), then, once loaded, draws each onto a canvas, which
# decodes it synchronously (an async img.decode() is not waited for under --virtual-time-budget)
PROBE = """
<script>
(() => {
  const images = {};
  for (const [path, r] of Object.entries(results)) {
    if (!r.mime_type.startsWith("image/")) continue;
    const img = new Image();
    img.src = r.data_uri;
    images[path] = img;
  }
  window.addEventListener("load", () => {
    const out = {errors: window.__hisoErrors, images: {}};
    const ctx = document.createElement("canvas").getContext("2d");
    for (const [path, img] of Object.entries(images)) {
      let size = [0, 0];
      try {
        if (img.complete && img.naturalWidth > 0) {
          ctx.canvas.width = img.naturalWidth; ctx.canvas.height = img.naturalHeight;
          ctx.drawImage(img, 0, 0);
          const px = ctx.getImageData(0, 0, img.naturalWidth, img.naturalHeight).data;
          let drawn = false;
          for (let i = 3; i < px.length; i += 4) { if (px[i] !== 0) { drawn = true; break; } }
          if (drawn) size = [img.naturalWidth, img.naturalHeight];
          else out.errors.push(path + ": decoded to a blank image");
        } else out.errors.push(path + ": did not load");
      } catch (err) { out.errors.push(path + ": " + err); }
      out.images[path] = size;
    }
    setTimeout(() => {
      const app = document.querySelector("#app");
      out.app_elements = app ? app.querySelectorAll("*").length : 0;
      out.app_text = app ? app.innerText.slice(0, 2000) : "";
      const pre = document.createElement("pre");
      pre.id = "hiso-check";
      pre.textContent = JSON.stringify(out);
      document.body.appendChild(pre);
    }, 500);
  });
})();
</script>
"""
ERRORS = ("<script>window.__hisoErrors = []; window.addEventListener('error', "
          "e => window.__hisoErrors.push(String(e.message)));</script>")


def fail(msg: str, status: int = 2):
    print(f"check_report: {msg}", file=sys.stderr)
    raise SystemExit(status)


def embedded(html: str, name: str):
    m = re.search(rf'<script id="{name}">\s*var \w+ = (.*?);\s*</script>', html, re.S)
    if not m:
        fail(f"no embedded '{name}' in the page (not a Snakemake report?)")
    return json.loads(m.group(1))


def browser(path: str | None) -> str:
    found = path or next((b for b in map(shutil.which, BROWSERS) if b), None)
    if not found or not shutil.which(found):
        fail("no Chromium found (apt-get install chromium, or --chromium PATH)")
    return found


def run_chromium(exe: str, page: Path, *extra: str, timeout: float) -> str:
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()],
                             capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        fail(f"chromium exited {out.returncode}: {out.stderr[-1000:]}", 1)
    return out.stdout


def check(report: Path, exe: str, timeout: float, screenshot: str | None) -> dict:
    html = report.read_text()
    results, categories = embedded(html, "results"), embedded(html, "categories")
    part = {path: cat for cat, subs in categories.items() for items in subs.values() for path in items}
    figures = [p for p, r in results.items() if r["mime_type"].startswith("image/")]
    tables = {p: base64.b64decode(r["data_uri"].split(",", 1)[1]).decode().count("\n") - 1
              for p, r in results.items() if r["mime_type"] == "text/csv"}
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "report_probe.html"
        head = html.index("<head>") + len("<head>")
        body = html.rindex("</body>")
        probe.write_text(html[:head] + ERRORS + html[head:body] + PROBE + html[body:])
        dom = run_chromium(exe, probe, "--virtual-time-budget=60000", "--dump-dom", timeout=timeout)
        if screenshot:
            run_chromium(exe, report, "--virtual-time-budget=20000", "--window-size=1400,900",
                         f"--screenshot={os.path.abspath(screenshot)}", timeout=timeout)
    m = re.search(r'<pre id="hiso-check">(.*?)</pre>', dom, re.S)
    if not m:
        fail("the probe did not finish in the browser (no result in the dumped DOM)", 1)
    got = json.loads(m.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    decoded = [p for p in figures if got["images"].get(p, [0, 0])[0] > 0]
    return {"figures": figures, "decoded": decoded, "tables": tables, "part": part,
            "app_elements": got["app_elements"], "errors": got["errors"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("report", help="the HTML report (snakemake reproduce-all --report report.html)")
    ap.add_argument("--manifest", default=None, help="the reproduce-all manifest: every PNG and CSV "
                                                     "it lists must be in the report")
    ap.add_argument("--chromium", default=None, help="browser executable (default: chromium on PATH)")
    ap.add_argument("--screenshot", default=None, help="also save a screenshot of the opened report")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per browser run (default 600)")
    args = ap.parse_args(argv)
    report = Path(args.report)
    if not report.is_file():
        fail(f"{report}: not found")
    r = check(report, browser(args.chromium), args.timeout, args.screenshot)
    by_part = Counter(r["part"].get(p, "?") for p in r["figures"])
    tables_by_part = Counter(r["part"].get(p, "?") for p in r["tables"])
    for cat in sorted(set(by_part) | set(tables_by_part)):
        print(f"{cat}: {by_part[cat]} figures, {tables_by_part[cat]} tables")
    print(f"figures: {len(r['figures'])}, decoded in the browser: {len(r['decoded'])}")
    print(f"tables: {len(r['tables'])} (CSV, {sum(r['tables'].values())} rows in all)")
    print(f"report app: {r['app_elements']} elements rendered, {len(r['errors'])} errors")
    bad = [f"not decoded: {p}" for p in r["figures"] if p not in r["decoded"]]
    bad += [f"browser error: {e}" for e in r["errors"]]
    bad += ["the report's app rendered nothing"] if r["app_elements"] < 10 else []
    bad += [f"empty table: {p}" for p, n in r["tables"].items() if n < 1]
    if args.manifest:
        listed = [line.split()[-1] for line in Path(args.manifest).read_text().splitlines()
                  if line and not line.startswith("#")]
        wanted = [f for f in listed if f.endswith((".png", ".csv"))]
        bad += [f"in the manifest, not in the report: {f}" for f in wanted if f not in r["part"]]
        print(f"manifest: {len(wanted)} PNG/CSV artefacts, "
              f"{sum(f in r['part'] for f in wanted)} in the report")
    for b in bad:
        print(b, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
