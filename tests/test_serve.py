"""The web app through an HTTP client: jobs and their event stream, the queue, limits and refusals,
and the ``preimage serve`` command itself. Random-init ResNet-18 at 32-64 px keeps every job short."""
from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from preimage.serve import ServeConfig, create_app  # noqa: E402

FAST = {"model": "resnet18", "weights": "none", "input_size": 32}
ROOT = Path(__file__).resolve().parents[1]


def make_client(tmp_path: Path, **limits) -> TestClient:
    config = ServeConfig(out=tmp_path / "serve", jobs=1, max_upload_bytes=100_000, max_upload_pixels=1_000_000,
                         **limits)
    return TestClient(create_app(config))


@pytest.fixture
def client(tmp_path, one_thread):
    with make_client(tmp_path) as c:
        yield c


def events(client: TestClient, job_id: str) -> list[tuple[str, dict]]:
    """Every event of a job's stream, read until the server closes it (after ``end``)."""
    out, kind = [], None
    with client.stream("GET", f"/api/jobs/{job_id}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                out.append((kind, json.loads(line[6:])))
    return out


def submit(client: TestClient, **req) -> dict:
    r = client.post("/api/jobs", json=req)
    assert r.status_code == 202, r.text
    return r.json()


def wait_for(client: TestClient, job_id: str, states: tuple[str, ...], timeout: float = 30) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        j = client.get(f"/api/jobs/{job_id}").json()
        if j["state"] in states:
            return j
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} stayed {j['state']}")


def png(size=(48, 40), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 128).save(buf, "PNG")
    return buf.getvalue()


# -- jobs and the event stream -------------------------------------------------------------------

def test_invert_job_streams_status_live_frames_and_end_then_serves_its_files(client):
    job = submit(client, kind="invert", image="sample:chelsea", layer="layer1", steps=12, preview_every=3, **FAST)
    assert job["state"] in ("queued", "running") and job["title"] == "invert resnet18:layer1"
    evs = events(client, job["id"])
    kinds = [k for k, _ in evs]
    assert kinds[0] == "status" and kinds[-1] == "end"
    frames = [d for k, d in evs if k == "frame"]
    assert [f["step"] for f in frames] == [1, 3, 6, 9, 12, 12]  # every 3 steps, step 1, and the final image
    for f in frames:
        img = Image.open(io.BytesIO(base64.b64decode(f["png"])))
        assert img.format == "PNG" and img.size == (32, 32)
    steps_seen = [d["step"] for k, d in evs if k == "status"]
    assert steps_seen == sorted(steps_seen) and steps_seen[-1] == 12
    end = evs[-1][1]
    assert end["state"] == "done" and end["step"] == end["total"] == 12
    assert set(end["terms"]) >= {"loss", "rec[layer1]", "tv"}
    result = end["result"]
    assert 0 < result["metrics"]["psnr"] < 100 and "layer1" in result["metrics"]["feature_error"]
    assert set(end["files"]) == {"chelsea.png", "chelsea_compare.png", "manifest.json", "history.json"}
    r = client.get(f"/api/jobs/{job['id']}/files/chelsea_compare.png")
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size[0] > 64
    manifest = client.get(f"/api/jobs/{job['id']}/files/manifest.json").json()
    assert manifest["task"] == "invert" and manifest["steps_run"] == 12 and manifest["model"] == "resnet18"
    assert client.get(f"/api/jobs/{job['id']}/frame.png").headers["content-type"] == "image/png"
    # a stream opened after the end still says how it ended
    assert events(client, job["id"])[-1][0] == "end"


def test_jitter_to_the_end_reaches_the_inversion(client):
    job = submit(client, kind="invert", image="sample:chelsea", layer="layer4", steps=4, jitter_until=1, **FAST)
    assert events(client, job["id"])[-1][1]["state"] == "done"
    manifest = client.get(f"/api/jobs/{job['id']}/files/manifest.json").json()
    assert manifest["config"]["jitter_until"] == 1.0 and manifest["effective"]["jitter_steps"] == 4


def test_depth_strip_inverts_every_stage_into_one_strip(client):
    job = submit(client, kind="depth", image="sample:coffee", steps=2, **FAST)
    end = events(client, job["id"])[-1][1]
    assert end["state"] == "done", end["message"]
    assert [s["layer"] for s in end["result"]["stages"]] == ["conv1", "layer1", "layer2", "layer3", "layer4"]
    assert end["total"] == 10 and "depth_strip.png" in end["files"]
    strip = Image.open(io.BytesIO(client.get(f"/api/jobs/{job['id']}/files/depth_strip.png").content))
    assert strip.width > 6 * 32  # the original and five stages side by side


def test_visualize_saliency_and_style_jobs_run_the_tasks(client):
    dream = submit(client, kind="dream", classes=["3"], steps=4, preview_every=2, **FAST)
    sal = submit(client, kind="saliency", image="sample:chelsea", method="vanilla", **FAST)
    style = submit(client, kind="style", image="sample:chelsea", style_image="sample:brick", layer="layer2",
                   steps=3, **FAST)
    d = events(client, dream["id"])
    assert d[-1][1]["state"] == "done" and d[-1][1]["result"]["classes"][0]["class"] == 3
    assert sum(k == "frame" for k, _ in d) >= 2
    s = wait_for(client, sal["id"], ("done", "failed"))
    assert s["state"] == "done" and {"chelsea_vanilla.png", "saliency_grid.png"} <= set(s["files"])
    st = events(client, style["id"])[-1][1]
    assert st["state"] == "done", st["message"]
    manifest = client.get(f"/api/jobs/{style['id']}/files/{st['result']['manifest']}").json()
    assert manifest["config"]["content_layer"] == "layer2"
    assert manifest["config"]["style_layers"] == ["conv1", "layer1", "layer2"]


def test_saliency_all_runs_every_method_the_model_can(client):
    from preimage.serve.recipes import SALIENCY_METHODS
    from preimage.tasks.saliency import METHODS

    assert SALIENCY_METHODS == (*METHODS, "all")
    job = submit(client, kind="saliency", image="sample:chelsea", method="all", **FAST)
    s = wait_for(client, job["id"], ("done", "failed"))
    assert s["state"] == "done", s["message"]
    expected = [m for m in METHODS if m != "rollout"]  # a ResNet: no attention to roll out
    assert s["result"]["methods"] == expected
    assert {f"chelsea_{m}.png" for m in expected} <= set(s["files"])
    assert s["result"]["ig_relative_gap"] >= 0


def test_unknown_layer_fails_in_the_job_with_a_suggestion(client):
    job = submit(client, kind="invert", image="sample:chelsea", layer="layer9", steps=2, **FAST)
    end = events(client, job["id"])[-1][1]
    assert end["state"] == "failed"
    assert "unknown layer 'layer9'" in end["message"] and "did you mean" in end["message"]
    assert not (client.app.state.config.out / "jobs" / job["id"]).exists()  # no empty folder left


# -- the queue ---------------------------------------------------------------------------------

def test_waiting_jobs_show_their_position_and_cancel_stops_a_running_job_at_its_next_step(client):
    long = dict(kind="invert", image="sample:chelsea", layer="conv1", steps=5000, **FAST)
    a = submit(client, **long)
    b = submit(client, **long)
    c = submit(client, **long)
    wait_for(client, a["id"], ("running",))
    assert client.get(f"/api/jobs/{b['id']}").json()["position"] == 1
    assert client.get(f"/api/jobs/{c['id']}").json()["position"] == 2
    r = client.post(f"/api/jobs/{b['id']}/cancel").json()
    assert r["state"] == "cancelled" and r["message"] == "cancelled before it started"
    assert client.get(f"/api/jobs/{c['id']}").json()["position"] == 1
    while client.get(f"/api/jobs/{a['id']}").json()["step"] < 2:
        time.sleep(0.02)
    client.post(f"/api/jobs/{a['id']}/cancel")
    done = wait_for(client, a["id"], ("cancelled", "done"), timeout=10)
    assert done["state"] == "cancelled" and 2 <= done["step"] < 5000
    assert "chelsea.png" in done["files"]  # the image so far is kept
    wait_for(client, c["id"], ("running",))
    client.post(f"/api/jobs/{c['id']}/cancel")
    wait_for(client, c["id"], ("cancelled",))


def test_cancel_stops_a_saliency_job_between_methods_and_keeps_the_maps_so_far(client, monkeypatch):
    import threading

    from preimage.tasks import saliency as task

    real, go = task.saliency, threading.Event()

    def gated(*args, **kwargs):  # the second method waits until the job has been cancelled
        if kwargs.get("method") == "smoothgrad":
            go.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(task, "saliency", gated)
    job = submit(client, kind="saliency", image="sample:chelsea", method="all", **FAST)
    end = time.time() + 30
    while client.get(f"/api/jobs/{job['id']}").json()["step"] < 1 and time.time() < end:
        time.sleep(0.02)
    client.post(f"/api/jobs/{job['id']}/cancel")
    go.set()
    done = wait_for(client, job["id"], ("cancelled", "done", "failed"))
    assert done["state"] == "cancelled", done["message"]
    assert done["step"] == 2 and done["result"]["methods"] == ["vanilla", "smoothgrad"]
    assert {"chelsea_smoothgrad.png", "saliency_grid.png"} <= set(done["files"])
    assert "chelsea_ig.png" not in done["files"]


def test_a_flood_of_requests_runs_at_most_jobs_at_once_and_the_rest_is_refused_as_busy(tmp_path, one_thread):
    with make_client(tmp_path, max_queued=3) as client:
        req = dict(kind="invert", image="sample:chelsea", layer="conv1", steps=5000, **FAST)
        codes = [client.post("/api/jobs", json=req).status_code for _ in range(8)]
        assert codes[:4] == [202] * 4 and set(codes[4:]) == {503}
        r = client.post("/api/jobs", json=req)
        assert "server busy: 3 jobs are already waiting" in r.json()["error"]
        queue = client.app.state.queue
        for _ in range(20):
            assert queue.running() <= 1
            time.sleep(0.01)
        for j in client.get("/api/jobs").json():
            client.post(f"/api/jobs/{j['id']}/cancel")


def test_a_diverged_run_is_reported_as_diverged_with_its_message(client):
    queue = client.app.state.queue
    job = queue.submit("invert", "diverges", {}, lambda ctx: {"status": "diverged", "message": "the loss became nan"})
    end = wait_for(client, job.id, ("diverged", "done", "failed"))
    assert end["state"] == "diverged" and end["message"] == "the loss became nan"


# -- catalog -----------------------------------------------------------------------------------

def test_models_come_from_the_zoo_and_layers_carry_their_shapes(client):
    from preimage.models import list_models

    names = [m["name"] for m in client.get("/api/models").json()]
    assert names == [m.name for m in list_models()]
    d = client.get("/api/models/resnet18/layers", params={"input_size": 64}).json()
    shapes = {l["name"]: l["shape"] for l in d["layers"]}
    assert shapes["layer1"] == [64, 16, 16] and shapes["layer4"] == [512, 2, 2]
    assert d["stages"] == ["conv1", "layer1", "layer2", "layer3", "layer4"]
    assert len(d["classes"]) == 1000 and d["input_size"] == 64
    r = client.get("/api/models/resnet181/layers")
    assert r.status_code == 400 and "did you mean 'resnet18'" in r.json()["error"]
    assert client.get("/api/samples/chelsea.png").headers["content-type"] == "image/png"
    assert client.get("/api/samples/passwd.png").status_code == 404


def test_stages_skip_normalizations_activations_and_pools_and_shallow_models_have_none(alexnet, client):
    from preimage.serve.catalog import stages

    assert [alexnet.aliases.get(a, a) for a in ("conv1", "conv2", "conv3", "conv4", "conv5")] == stages(alexnet)
    assert client.get("/api/models/hog/layers").json()["stages"] == []
    for shallow in ("hog", "dsift"):  # refused before it is queued
        r = client.post("/api/jobs", json=dict(kind="depth", image="sample:chelsea", model=shallow, weights="none",
                                               steps=2))
        assert r.status_code == 400 and r.json() == {
            "error": f"a depth strip needs a deep network; {shallow} is a single stage: invert it instead"}
    assert client.get("/api/jobs").json() == []


def test_an_unexpected_error_reaches_the_client_as_one_json_line(tmp_path, monkeypatch):
    from preimage.serve import catalog

    def broken():
        raise RuntimeError("zoo exploded\nsecond line")

    monkeypatch.setattr(catalog, "models", broken)
    with TestClient(create_app(ServeConfig(out=tmp_path)), raise_server_exceptions=False) as c:
        r = c.get("/api/models")
    assert r.status_code == 500 and r.json() == {"error": "internal error: RuntimeError: zoo exploded"}


# -- limits and refusals -------------------------------------------------------------------------

def test_an_upload_is_checked_stored_under_out_and_used_by_id(client, tmp_path):
    r = client.post("/api/uploads", params={"name": "../../my photo.png"}, content=png(),
                    headers={"content-type": "image/png"})
    assert r.status_code == 201, r.text
    up = r.json()
    assert up["name"] == "my_photo" and (up["width"], up["height"]) == (48, 40)
    stored = list((tmp_path / "serve" / "uploads").rglob("*.png"))
    assert [p.name for p in stored] == ["my_photo.png"]
    job = submit(client, kind="invert", image=up["source"], layer="conv1", steps=2, **FAST)
    assert events(client, job["id"])[-1][1]["files"][0] == "my_photo.png"


@pytest.mark.parametrize("body, content_type, status, words", [
    (b"x" * 100_001, "image/png", 413, "too large"),
    (b"hello, not an image", "text/plain", 415, "only images"),
    (b"hello, not an image", "image/png", 415, "not an image"),
    (b"", "image/png", 415, "empty"),
    ("bomb", "image/png", 413, "decompression bomb"),
    ("ppm", "application/octet-stream", 415, "PPM files are not accepted"),
    ("truncated", "image/png", 415, "damaged or truncated"),
])
def test_uploads_that_are_too_large_or_not_images_are_refused_with_one_line(client, tmp_path, body, content_type,
                                                                              status, words):
    if body == "bomb":  # 4000 x 4000 pixels (over the 1,000,000 limit) in a few kilobytes
        buf = io.BytesIO()
        Image.new("1", (4000, 4000)).save(buf, "PNG")
        body = buf.getvalue()
        assert len(body) < 100_000
    elif body == "ppm":  # Pillow reads it, the server does not take it
        buf = io.BytesIO()
        Image.new("RGB", (20, 20)).save(buf, "PPM")
        body = buf.getvalue()
    elif body == "truncated":
        body = png((200, 100), "RGB")[:-40]
    r = client.post("/api/uploads", params={"name": "x.png"}, content=body, headers={"content-type": content_type})
    assert r.status_code == status
    assert words in r.json()["error"] and "\n" not in r.json()["error"]
    assert not list((tmp_path / "serve" / "uploads").rglob("*.*"))  # nothing kept


@pytest.mark.parametrize("change, words", [
    ({"image": "/etc/passwd"}, "must be sample:NAME or upload:ID"),
    ({"image": "upload:../../etc/passwd"}, "no upload"),
    ({"image": "sample:chelsee"}, "did you mean 'chelsea'"),
    ({"weights": "/tmp/net.pth"}, "weights must be 'default' or 'none'"),
    ({"model": "timm:resnet18", "weights": "default"}, "the server does not download"),
    ({"model": "gan:/tmp/ckpt.pt"}, "unknown model"),
    ({"steps": 0}, "steps must be between 1 and 5000"),
    ({"steps": 5001}, "steps must be between 1 and 5000"),
    ({"input_size": 8}, "input size must be between 16 and 512"),
    ({"kind": "train"}, "unknown job kind"),
    ({"kind": "dream", "image": None, "layer": "", "classes": [str(i) for i in range(9)]}, "at most 8 classes"),
    ({"preset": "fastest"}, "did you mean 'fast'"),
    ({"layer": "layer1+"}, "empty layer name"),
    ({"seed": -1}, "seed"),
    ({"jitter_until": 2}, "jitter_until"),
    ({"surprise": 1}, "unknown field 'surprise'; the fields are kind, model, "),
    ({"layr": "layer1"}, "unknown field 'layr' (did you mean 'layer'?)"),
    ({"kind": "saliency", "layer": None, "steps": None, "classes": ["tabby", "goldfish"]},
     "one class at a time, not 2"),
    ({"steps": True}, "steps: Input should be a valid integer"),
    ({"steps": "10"}, "steps: Input should be a valid integer"),
])
def test_bad_requests_are_refused_before_queueing_and_no_path_comes_from_the_client(client, change, words):
    req = dict(kind="invert", image="sample:chelsea", layer="layer1", steps=2, **FAST)
    req.update(change)
    r = client.post("/api/jobs", json=req)
    assert r.status_code == 400 and words in r.json()["error"], r.text
    assert client.get("/api/jobs").json() == []


@pytest.mark.parametrize("kind, field, value", [
    ("depth", "layer", "layer1"),
    ("invert", "classes", ["tabby"]),
    ("invert", "style_image", "sample:brick"),
    ("dream", "image", "sample:chelsea"),
    ("dream", "jitter_until", 1),
    ("saliency", "steps", 10),
    ("saliency", "preset", "fast"),
    ("style", "method", "vanilla"),
    ("invert", "style_layers", ["layer1"]),
])
def test_a_field_the_kind_does_not_use_is_refused_with_its_name_and_the_kind(client, kind, field, value):
    from preimage.serve.recipes import FIELDS

    req = {"image": "sample:chelsea", "style_image": "sample:brick", "layer": "layer1", "classes": ["3"],
           "steps": 2, "method": "vanilla"}
    req = {k: v for k, v in req.items() if k in FIELDS[kind]}
    r = client.post("/api/jobs", json=dict(kind=kind, **req, **{field: value}, **FAST))
    assert r.status_code == 400 and r.json()["error"].startswith(f"{field!r} does not apply to a {kind} job ("), r.text
    assert client.get("/api/jobs").json() == []


def test_the_fields_the_page_sends_are_the_ones_each_kind_takes():
    """The page's JS posts ``common(kind)`` (the shared settings) plus each tab's own fields."""
    import re

    from preimage.serve.recipes import FIELDS, SHARED_FIELDS

    js = (ROOT / "preimage" / "serve" / "static" / "app.js").read_text()
    shared = set(re.findall(r"req\.(\w+) =", js[js.index("function common"):js.index("async function submit")]))
    assert shared | {"kind", "model", "weights", "seed"} == set(SHARED_FIELDS)
    for kind, fn in [("dream", "runDream"), ("saliency", "runSaliency"), ("style", "runStyle"),
                     ("invert", "runInvert")]:
        body = js[js.index(f"function {fn}("):]
        sent = set(re.findall(r"req\.(\w+) =", body[:body.index("submit(req)")]))
        assert sent <= set(FIELDS[kind]), (kind, sent - set(FIELDS[kind]))
    assert set(FIELDS["depth"]) == set(FIELDS["invert"]) - {"layer"}  # runInvert sends the layer to invert only


@pytest.mark.parametrize("body, content_type, words", [
    (b'{"kind": "invert",', "application/json", "malformed JSON at character"),
    (b"[1, 2]", "application/json", "the body must be a JSON object"),
    (b"null", "application/json", "the body must be a JSON object"),
    (b"", "application/json", "the body must be a JSON object"),
    (b'{"kind": "invert"}', "text/plain", "the body must be a JSON object sent as application/json"),
])
def test_a_body_that_is_not_a_json_object_is_refused_with_what_is_wrong(client, body, content_type, words):
    r = client.post("/api/jobs", content=body, headers={"content-type": content_type})
    assert r.status_code == 400 and words in r.json()["error"], r.text


def test_unknown_routes_and_methods_answer_one_json_line_too(client):
    r = client.get("/api/job")
    assert r.status_code == 404 and r.json() == {"error": "no such route: GET /api/job"}
    r = client.delete("/api/jobs")
    assert r.status_code == 405 and r.json() == {"error": "DELETE is not allowed on /api/jobs"}
    r = client.get("/static/nothing.js")
    assert r.status_code == 404 and "error" in r.json()


def test_pretrained_weights_that_are_not_on_this_machine_are_refused_rather_than_downloaded(client):
    from preimage.models import list_models

    missing = [m.name for m in list_models() if m.source == "torchvision" and not m.offline]
    if not missing:
        pytest.skip("every torchvision model's weights are cached here")
    req = dict(kind="invert", image="sample:chelsea", layer="layer1", steps=2, model=missing[0], weights="default")
    r = client.post("/api/jobs", json=req)
    assert r.status_code == 400 and "are not on this machine" in r.json()["error"]
    embedded = dict(req, model="efficientnet_lite0", layer="blocks.1", input_size=32)
    assert client.post("/api/jobs", json=embedded).status_code == 202  # the embedded weights are here


def test_only_the_files_a_job_lists_can_be_downloaded(client, tmp_path):
    job = submit(client, kind="invert", image="sample:chelsea", layer="conv1", steps=1, **FAST)
    events(client, job["id"])
    (tmp_path / "secret.txt").write_text("no")
    for name in ("../../secret.txt", "%2e%2e/%2e%2e/secret.txt", "chelsea.gif", "/etc/passwd"):
        assert client.get(f"/api/jobs/{job['id']}/files/{name}").status_code == 404
    assert client.get("/api/jobs/nope/events").status_code == 404
    assert client.post("/api/jobs/nope/cancel").status_code == 404


def test_the_page_and_its_static_files_are_served_without_external_resources(client):
    page = client.get("/").text
    assert "<title>preimage</title>" in page
    for path in ("/static/app.js", "/static/style.css"):
        r = client.get(path)
        assert r.status_code == 200
        assert "http://" not in r.text and "https://" not in r.text
    assert "https://" not in page and "http://" not in page


# -- the command -------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_refuses_bad_arguments_before_starting(tmp_path, capsys):
    from preimage.cli import main

    assert main(["serve", "--port", "70000"]) == 2
    assert "not a port" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["serve", "--out", str(tmp_path / "file"), "--port", str(free_port())]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["serve", "--out", str(tmp_path / "o"), "--port", str(busy.getsockname()[1])]) == 2
    err = capsys.readouterr().err
    assert "cannot listen on 127.0.0.1" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("host, url", [
    ("127.0.0.1", "http://127.0.0.1:8000"), ("localhost", "http://localhost:8000"), ("::1", "http://[::1]:8000"),
    ("0.0.0.0", "http://127.0.0.1:8000"), ("::", "http://[::1]:8000"), ("0:0:0:0:0:0:0:0", "http://[::1]:8000"),
    ("192.168.1.20", "http://192.168.1.20:8000"), ("fd00::5", "http://[fd00::5]:8000"),
])
def test_the_address_to_open_is_one_a_browser_can_open(host, url):
    from preimage.cli.serve import _url

    assert _url(host, 8000) == url


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 on this machine")
def test_serve_on_every_ipv6_address_says_to_open_the_loopback_one_and_where_it_listens(tmp_path, capsys,
                                                                                           monkeypatch):
    import uvicorn

    from preimage.cli import main

    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::", 0))
    except OSError:
        pytest.skip("cannot listen on ::")
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: setattr(self, "started", True))  # start nothing
    port = free_port()
    assert main(["serve", "--host", "::", "--port", str(port), "--out", str(tmp_path / "o")]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"preimage serve: open http://[::1]:{port}  (listening on [::]:{port}; ")
    assert "warning: listening on ::, beyond this machine" in err


STREAM = """import sys, httpx
with httpx.stream("GET", sys.argv[1], timeout=30) as r:
    for line in r.iter_lines():
        print(line, flush=True)
"""


def test_serve_prints_its_url_warns_beyond_localhost_and_stops_cleanly_on_sigterm_and_ctrl_c(tmp_path):
    import httpx

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    servers = []  # (process, port, host, signal, expected exit code); started together, checked in turn
    for host, sig, code in (("0.0.0.0", signal.SIGTERM, 0), ("127.0.0.1", signal.SIGINT, 130)):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "preimage", "serve", "--host", host, "--port", str(port),
                                 "--out", str(tmp_path / f"o{port}")], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        servers.append((proc, port, host, sig, code))
    try:
        for proc, port, host, sig, code in servers:
            assert f"open http://127.0.0.1:{port}" in proc.stdout.readline()
            for _ in range(100):
                try:
                    assert httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=2).json()["workers"] == 1
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            else:
                raise AssertionError("the server did not answer")
            job = None
            if sig == signal.SIGINT:  # Ctrl-C while a job runs and its event stream is open
                url = f"http://127.0.0.1:{port}/api/jobs"
                job = httpx.post(url, json=dict(kind="invert", image="sample:chelsea", layer="conv1",
                                                steps=5000, **FAST), timeout=10).json()
                stream = subprocess.Popen([sys.executable, "-c", STREAM, f"{url}/{job['id']}/events"],
                                          stdout=subprocess.PIPE, text=True)
                assert stream.stdout.readline().startswith("event: status")
                while httpx.get(f"{url}/{job['id']}", timeout=10).json()["step"] < 1:
                    time.sleep(0.05)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)  # it stops; how fast depends on the machine's load
            assert proc.returncode == code, err
            if job is not None:  # the job stopped at its next step and kept its image; the stream ended
                assert (tmp_path / f"o{port}" / "jobs" / job["id"] / "chelsea.png").is_file()
                assert "event: end" in stream.communicate(timeout=10)[0]
            assert ("warning: listening on 0.0.0.0" in err) == (host == "0.0.0.0")
            assert "preimage serve: stopped" in err and "Traceback" not in err
    finally:
        for proc, *_ in servers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
