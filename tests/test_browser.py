"""The gateway's final answer, rendered by `marked` (the markdown library Open WebUI uses) in headless Chromium,
is a video that plays: through the element's `src`, and the way Open WebUI plays it, from the element's text.

Needs Debian's `chromium` and the npm package `marked` in tests/browser (`.ci/run` installs both; this test runs
`npm install` itself when `marked` is missing). Skips only outside CI, and only when Chromium is absent.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import openai
import pytest
from starlette.applications import Starlette
from starlette.responses import FileResponse, HTMLResponse
from starlette.routing import Route

from tests.support import ALPHA_KEY, ServerThread

CHROMIUM = "/usr/bin/chromium"
BROWSER_DIR = Path(__file__).parent / "browser"
MARKED = BROWSER_DIR / "node_modules" / "marked" / "lib" / "marked.umd.js"
# Nothing but loopback: no update checks, no sync, no component downloads.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><script src="/marked.umd.js"></script></head>
<body>
<div id="rendered"></div>
<div id="open-webui"></div>
<div id="escaped"></div>
<script id="answer" type="application/json">{answer}</script>
<script>
const answer = JSON.parse(document.getElementById("answer").textContent);
// A client whose markdown allows HTML: the player comes from src.
document.getElementById("rendered").innerHTML = marked.parse(answer);
// A markdown-only client (LibreChat, NextChat): raw HTML shown as text.
const escaping = new marked.Marked({{renderer: {{html: t => t.text.replace(/&/g, "&amp;").replace(/</g, "&lt;")}}}});
document.getElementById("escaped").innerHTML = escaping.parse(answer);
// Open WebUI: the video block must reach its HTML renderer as one token, tag and text together, and the
// player's source is the element's text.
const token = marked.lexer(answer).find(t => t.type === "html" && /^<video/i.test(t.raw));
window.openWebuiToken = token ? token.raw : null;
if (token) {{
  const holder = document.createElement("div");
  holder.innerHTML = token.raw;
  const video = document.createElement("video");
  video.controls = true;
  video.src = holder.textContent.trim();
  document.getElementById("open-webui").appendChild(video);
}}
</script>
</body></html>
"""


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs it with apt-get install -y chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    if not MARKED.exists():
        npm = shutil.which("npm")
        assert npm, "npm is needed to install marked into tests/browser"
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--no-package-lock"], cwd=BROWSER_DIR,
                       check=True, capture_output=True, timeout=300)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


def serve_page(answer: str) -> ServerThread:
    page = PAGE.format(answer=json.dumps(answer).replace("</", "<\\/"))  # raw text inside <script>
    app = Starlette(routes=[Route("/", lambda request: HTMLResponse(page)),
                            Route("/marked.umd.js", lambda request: FileResponse(MARKED))])
    return ServerThread(app)


def final_answer(gateway) -> tuple[str, str]:
    """What a chat UI shows for one streamed request: all content deltas, and the video's link."""
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=ALPHA_KEY, max_retries=0)
    chunks = list(client.chat.completions.create(
        model="sora-2", stream=True, messages=[{"role": "user", "content": "a red fox running through snow"}]))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return content, chunks[-1].model_extra["video"]["url"]


def assert_plays(page, selector: str) -> None:
    page.eval_on_selector(selector, "v => { v.muted = true; return v.play(); }")
    page.wait_for_function(f"document.querySelector({json.dumps(selector)}).currentTime > 0.2", timeout=30_000)


def test_the_final_answer_plays_inline_from_marked(gateway, browser):
    content, url = final_answer(gateway)
    with serve_page(content) as server:
        page = browser.new_page()
        page.goto(server.url + "/")
        assert page.evaluate("window.openWebuiToken") == f'<video src="{url}" controls>\n{url}\n</video>'
        assert page.get_attribute("#rendered a", "href") == url  # the link line still reads as a link
        assert page.get_attribute("#rendered video", "src") == url
        assert page.eval_on_selector("#open-webui video", "v => v.src") == url
        assert page.get_attribute("#escaped a", "href") == url  # markdown only: the link, the tag as text
        assert page.locator("#escaped video").count() == 0 and "<video" in page.inner_text("#escaped")
        assert_plays(page, "#rendered video")
        assert_plays(page, "#open-webui video")
        page.close()
