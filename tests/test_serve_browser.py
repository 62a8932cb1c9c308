"""The page in a real browser: headless Chromium driven by Playwright, against a live server.

The browser is Debian's (``apt-get install chromium``), passed as ``executable_path`` because
``playwright install`` downloads and fails offline; set ``PREIMAGE_CHROMIUM`` to use another one.
Without a browser (or without the playwright package) these tests are skipped with that reason.
Screenshots go to ``PREIMAGE_SCREENSHOTS`` (default: a pytest temporary folder); docs/ui.md shows them.
"""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (pip install playwright) is not installed")

CHROMIUM = os.environ.get("PREIMAGE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set PREIMAGE_CHROMIUM)",
                allow_module_level=True)

#: keep the browser off the network: no updates, sync, QUIC or background requests
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
UPLOAD_LIMIT = 100_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import torch
    import uvicorn

    from preimage.serve import ServeConfig, create_app

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(ServeConfig(out=tmp_path_factory.mktemp("serve"), jobs=1, max_upload_bytes=UPLOAD_LIMIT))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                        timeout_graceful_shutdown=1))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        except Exception as exc:  # a browser that does not start is a skip, with the reason
            pytest.skip(f"Chromium at {CHROMIUM} did not start: {str(exc).splitlines()[0]}")
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    pg.goto(server)
    pg.wait_for_selector("#layer option[value='blocks.3']", state="attached")  # the default model's layers
    yield pg
    ctx.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("PREIMAGE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def choose_model(page, name: str, weights: str, size: int, layer: str) -> None:
    page.select_option("#weights", weights)
    page.select_option("#model", name)
    page.fill("#input-size", str(size))
    page.dispatch_event("#input-size", "change")
    page.wait_for_function(f"document.getElementById('input-size').placeholder == '{size}'")
    page.wait_for_selector(f"#layer option[value='{layer}']", state="attached")
    page.select_option("#layer", layer)


def test_an_inversion_shows_live_frames_then_the_final_image_and_its_downloads(page, shots):
    choose_model(page, "efficientnet_lite0", "default", 64, "blocks.2")
    page.fill("#steps", "40")
    page.fill("#preview-every", "4")
    # remember every distinct live frame the page shows
    page.evaluate("""() => { window.seen = new Set();
        new MutationObserver(() => window.seen.add(document.getElementById('live').src))
          .observe(document.getElementById('live'), {attributes: true, attributeFilter: ['src']}); }""")
    page.click("#run-invert")
    page.wait_for_function("Number(document.getElementById('frame-count').dataset.count) >= 2")
    page.wait_for_function("document.getElementById('state').textContent == 'done'")
    page.wait_for_function("document.getElementById('final-image').naturalWidth > 0")
    assert page.text_content("#job-title") == "invert efficientnet_lite0:blocks.2"  # the layer picked
    assert page.evaluate("window.seen.size") >= 2
    assert int(page.get_attribute("#frame-count", "data-count")) >= 2
    assert page.text_content("#progress-text").startswith("step 40 of 40")
    assert "psnr" in page.text_content("#metrics")
    links = page.eval_on_selector_all("#downloads a", "els => els.map(e => e.textContent)")
    assert {"chelsea.png", "chelsea_compare.png", "manifest.json"} <= set(links)
    page.screenshot(path=str(shots / "ui_invert.png"), full_page=True)


def test_a_waiting_job_shows_its_position_and_a_running_job_can_be_cancelled(page, shots):
    choose_model(page, "resnet18", "none", 32, "layer1")
    page.fill("#layer-search", "layer4.1.conv")  # the search narrows the list
    assert page.eval_on_selector_all("#layer option", "os => os.map(o => o.value)") == [
        "layer4.1.conv1", "layer4.1.conv2"]
    page.fill("#layer-search", "")
    page.dispatch_event("#layer-search", "input")
    page.select_option("#layer", "layer1")
    page.fill("#steps", "5000")
    page.click("#run-invert")
    page.wait_for_function("document.getElementById('state').textContent == 'running'")
    first = page.text_content("#job-title")
    page.click("#run-invert")  # one worker: the second waits
    page.wait_for_function("document.getElementById('state').textContent == 'queued, position 1'")
    page.wait_for_selector("#jobs tbody tr[data-state='queued']")
    assert "queued, position 1" in page.text_content("#jobs tbody tr[data-state='queued']")
    page.click("#cancel-current")  # the waiting one leaves the line
    page.wait_for_function("document.getElementById('state').textContent == 'cancelled'")
    assert page.text_content("#job-message") == "cancelled before it started"
    page.click("#jobs tbody tr[data-state='running'] a")  # back to the running one
    page.wait_for_function(f"document.getElementById('job-title').textContent == {first!r}")
    page.wait_for_function("Number(document.getElementById('frame-count').dataset.count) >= 1")
    page.click("#cancel-current")
    page.wait_for_function("document.getElementById('state').textContent == 'cancelled'")
    assert "cancelled at step" in page.text_content("#job-message")
    page.wait_for_function("document.getElementById('final-image').naturalWidth > 0")  # the image so far
    page.screenshot(path=str(shots / "ui_cancelled.png"), full_page=True)


def test_an_uploaded_photo_feeds_the_saliency_and_style_tabs(page, tmp_path):
    from PIL import Image

    photo = tmp_path / "my photo.jpg"
    Image.new("RGB", (80, 60), (200, 40, 40)).save(photo, "JPEG")
    choose_model(page, "resnet18", "none", 32, "layer1")
    page.set_input_files("#upload", str(photo))
    page.wait_for_function("document.getElementById('source-preview').src.startsWith('blob:')")
    assert page.is_hidden("#notice")
    page.click(".tabs button[data-tab='saliency']")
    page.select_option("#method", "vanilla")
    page.click("#run-saliency")
    page.wait_for_function("document.getElementById('state').textContent == 'done'")
    links = page.eval_on_selector_all("#downloads a", "els => els.map(e => e.textContent)")
    assert {"my_photo_vanilla.png", "my_photo_vanilla_overlay.png", "saliency_grid.png"} <= set(links)
    assert "explained class" in page.text_content("#metrics")

    page.click(".tabs button[data-tab='style']")
    page.select_option("#style-sample", "sample:brick")
    page.fill("#style-steps", "3")
    page.click("#run-style")
    page.wait_for_function("document.getElementById('job-title').textContent == 'style resnet18'")
    page.wait_for_function("document.getElementById('state').textContent == 'done'")
    page.wait_for_function("document.getElementById('final-image').naturalWidth > 0")
    assert "my_photo_brick_triptych.png" in page.get_attribute("#final-image", "src")


def test_an_oversized_upload_is_refused_with_a_message_in_the_page(page, shots):
    page.set_input_files("#upload", files=[{"name": "huge.png", "mimeType": "image/png",
                                            "buffer": b"\x89PNG\r\n\x1a\n" + b"\0" * (UPLOAD_LIMIT + 1)}])
    page.wait_for_selector("#notice:not([hidden])")
    text = page.text_content("#notice")
    assert text.startswith("upload refused: the file is too large") and f"{UPLOAD_LIMIT:,}" in text
    page.screenshot(path=str(shots / "ui_refused.png"))


def test_the_depth_strip_and_a_class_visualization_run_from_their_buttons(page, shots):
    choose_model(page, "efficientnet_lite0", "default", 64, "blocks.3")
    page.fill("#steps", "6")
    page.click("#run-depth")
    page.wait_for_function("document.getElementById('state').textContent == 'done'")
    page.wait_for_function("document.getElementById('final-image').naturalWidth > 0")
    assert page.text_content("#job-title") == "depth strip efficientnet_lite0"
    assert page.text_content("#progress-text").startswith("step 42 of 42 · blocks.6 (7/7)")
    assert "depth_strip.png" in page.get_attribute("#final-image", "src")
    page.screenshot(path=str(shots / "ui_depth.png"), full_page=True)

    page.click(".tabs button[data-tab='visualize']")
    page.fill("#dream-class", "flamingo")
    page.fill("#dream-steps", "24")
    page.click("#run-dream")
    page.wait_for_function("document.getElementById('job-title').textContent.startsWith('visualize')")
    page.wait_for_function("document.getElementById('state').textContent == 'done'")
    page.wait_for_function("document.getElementById('final-image').naturalWidth > 0")
    assert "130 flamingo" in page.text_content("#metrics")
    page.screenshot(path=str(shots / "ui_visualize.png"), full_page=True)
