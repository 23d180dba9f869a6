"""The documentation site in headless Chromium (Debian's ``chromium`` driven by Playwright), served
from a local ``http.server`` on 127.0.0.1: every page renders a main heading, every image loads,
no console errors, and every internal link resolves (the file exists, and so does its anchor).

The site is built with pictures for the systems in ``TATLAS_DOCS_PICTURES`` (comma-separated,
``all`` or ``none``; default: the four whose pictures take seconds, not minutes). Skipped, saying
why, where Playwright or Chromium is missing."""

from __future__ import annotations

import functools
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urljoin, urlparse

import pytest

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

from _browser import CHROMIUM, MARKS  # noqa: E402

from tatlas.explain.site import SiteOptions, build_site

pytestmark = MARKS


def _pictures() -> tuple[str, ...] | None:
    value = os.environ.get("TATLAS_DOCS_PICTURES", "whisper,llm,llava,internvl").strip()
    return None if value == "all" else () if value == "none" else tuple(v.strip() for v in value.split(","))


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    report = build_site(SiteOptions(out=out, pictures=_pictures()))
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(out)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield out, report, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _visit(browser, url: str) -> dict:
    """Load ``url``; its heading, images, ids, links and every console error or failed request."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    page.goto(url, wait_until="load")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    facts = page.evaluate("""() => ({
        h1: (document.querySelector('main h1') || {}).textContent || '',
        images: Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth]),
        ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
        links: Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href')),
        css: getComputedStyle(document.querySelector('header.top')).display,
    })""")
    page.close()
    return {**facts, "errors": errors}


def test_every_page_renders_loads_its_images_and_links_only_to_what_exists(served):
    out, report, base = served
    pages = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.html"))
    assert sorted(p.relative_to(out).as_posix() for p in report.pages) == pages
    seen, problems = {}, []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            for rel in pages:
                seen[rel] = facts = _visit(browser, base + rel)
                problems += [f"{rel}: {e}" for e in facts["errors"]]
                if not facts["h1"].strip():
                    problems.append(f"{rel}: no main heading")
                if facts["css"] != "flex":
                    problems.append(f"{rel}: the stylesheet did not apply")
                problems += [f"{rel}: image {src} did not load" for src, width in facts["images"] if width <= 0]
        finally:
            browser.close()
    images = sum(len(f["images"]) for f in seen.values())
    assert images >= len([r for r in pages if r.startswith("systems/")]), "every system page shows its diagram"
    links = 0
    for rel, facts in seen.items():
        for href in facts["links"]:
            target = urlparse(urljoin(base + rel, href))
            if f"{target.scheme}://{target.netloc}/" != base:
                problems.append(f"{rel}: a link leaves the site: {href}")
                continue
            links += 1
            path = unquote(target.path).lstrip("/") or "index.html"
            if not (out / path).is_file():
                problems.append(f"{rel}: link {href} -> {path} does not exist")
            elif target.fragment and target.fragment not in seen.get(path, {"ids": ()})["ids"]:
                problems.append(f"{rel}: link {href}: no element with id {target.fragment!r} in {path}")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])
    assert links > 2 * len(pages)
    if _pictures() != ():
        assert any("/" in src and src.endswith(".png") for f in seen.values() for src, _ in f["images"])
