"""The report in a real headless browser (Debian's chromium via playwright, never a downloaded browser): it
loads with no console error and no network request, every plot renders with a size, and a full-page
screenshot is saved for the test log (tmp_path, and $MOELAB_SCREENSHOT_DIR when set)."""

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (run scripts/setup-browser.sh)")


@pytest.mark.parametrize(("folder", "figures"), [("report_dir", 8), ("served_report_dir", 9)])
def test_report_renders_in_headless_chromium(folder, figures, request, tmp_path):
    """The shared study (an older study.json without vLLM serving) and the same study with it."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (dev dependency) not installed")
    report_dir = request.getfixturevalue(folder)
    report = (report_dir / "report.html").resolve()
    url = report.as_uri()
    errors, requests = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto(url, wait_until="load")
            sizes = page.evaluate("""() => Array.from(document.querySelectorAll('figure.plot')).map(f => {
                const el = f.querySelector('svg, img'); const r = el ? el.getBoundingClientRect() : null;
                return {id: f.id, w: r ? r.width : 0, h: r ? r.height : 0,
                        shapes: el ? el.querySelectorAll('path, rect, image, use').length : 0}; })""")
            headline = page.inner_text(".headline h1")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    print(f"\nreport screenshot: {shot}")
    if os.environ.get("MOELAB_SCREENSHOT_DIR"):
        keep = Path(os.environ["MOELAB_SCREENSHOT_DIR"])
        keep.mkdir(parents=True, exist_ok=True)
        name = "report.png" if folder == "report_dir" else "report-served.png"
        shutil.copy(shot, keep / name)
        print(f"report screenshot: {keep / name}")
    assert errors == []
    assert requests == [url], f"network requests besides the file: {[r for r in requests if r != url]}"
    assert len(sizes) == figures, sizes
    for s in sizes:
        assert s["w"] > 100 and s["h"] > 100 and s["shapes"] > 10, s
    assert "MOE" in headline and "mixtral-8x7b" in headline
    assert shot.stat().st_size > 50_000
