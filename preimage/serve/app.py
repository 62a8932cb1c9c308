"""The FastAPI app: one page, a JSON API over the job queue, and a server-sent event stream per job.

Routes (every error is ``{"error": "one line"}`` with a status that says what went wrong: 400 a bad
request, 404 nothing by that name, 405 a route without that method, 413 too large, 415 not an image,
503 server busy):

    GET  /                         the page (static/index.html; plain HTML, CSS and JS, works offline)
    GET  /api/info                 limits, bundled photos, presets, methods, workers
    GET  /api/models               the zoo (preimage.models.list_models)
    GET  /api/models/{name}/layers every layer with its output shape, the stages, the class names
    GET  /api/samples/{name}.png   a thumbnail of a bundled photo (by name only)
    POST /api/uploads?name=F.jpg   the raw image bytes as the body -> {"id", "source": "upload:ID", ...}
    POST /api/jobs                 a JobRequest -> the job (queued, with its position)
    GET  /api/jobs, /api/jobs/{id} the jobs / one job
    GET  /api/jobs/{id}/events     server-sent events: "status" (state, position, step, loss terms),
                                   "frame" (a live PNG, base64), "end" (the final state), then it closes
    GET  /api/jobs/{id}/frame.png  the latest live frame
    POST /api/jobs/{id}/cancel     stop a job (a running one at its next step)
    GET  /api/jobs/{id}/files/F    a file the job wrote (only the names the job lists)
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import PreimageError, did_you_mean
from . import catalog, recipes
from .config import ServeConfig
from .jobs import TERMINAL, Busy, JobQueue
from .uploads import NotAnImage, TooLarge, UploadStore

__all__ = ["create_app", "JobRequest"]

STATIC = Path(__file__).parent / "static"


class JobRequest(BaseModel):
    """What the page sends to start a job; everything is checked again in :mod:`.recipes`."""

    # strict: "5" or true is not a number of steps
    model_config = ConfigDict(extra="forbid", strict=True, protected_namespaces=())

    kind: str = Field(description="invert | depth | dream | saliency | style")
    model: str = "efficientnet_lite0"
    weights: str = "default"                      # default | none (random init); never a path
    input_size: int | None = None                 # network input side (style: image side)
    image: str | None = None                      # sample:NAME or upload:ID (style: the content)
    style_image: str | None = None                # sample:NAME or upload:ID
    layer: str | None = None                      # invert: the layer spec; style: the content layer
    style_layers: list[str] | None = None
    preset: str | None = None
    jitter_until: float | None = Field(None, ge=0, le=1)  # invert, depth: the jitter phase's share of the steps
    steps: int | None = None
    seed: int = Field(0, ge=0, le=2**31 - 1)
    preview_every: int | None = None              # steps between live frames (default: ~25 per run)
    classes: list[str] | None = None              # dream: classes; saliency: the class to explain
    method: str | None = None                     # saliency: one method of `preimage saliency`, or all


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(config: ServeConfig | None = None) -> FastAPI:
    """The app, with its job queue started (``config.jobs`` worker threads); the queue is closed when
    the app shuts down (running jobs are cancelled at their next step)."""
    config = config or ServeConfig()
    config.out.mkdir(parents=True, exist_ok=True)
    queue = JobQueue(config)
    uploads = UploadStore(config.out / "uploads", max_bytes=config.max_upload_bytes,
                          max_pixels=config.max_upload_pixels, max_count=config.max_uploads)
    layers = catalog.Layers()
    thumbs: dict[str, bytes] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await asyncio.to_thread(queue.close)

    app = FastAPI(title="preimage", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.config, app.state.queue, app.state.uploads = config, queue, uploads

    @app.exception_handler(PreimageError)
    async def _preimage_error(_req: Request, exc: PreimageError) -> JSONResponse:
        status = 413 if isinstance(exc, TooLarge) else 415 if isinstance(exc, NotAnImage) else \
            503 if isinstance(exc, Busy) else 400
        return _error(status, str(exc))

    @app.exception_handler(Exception)
    async def _internal_error(_req: Request, exc: Exception) -> JSONResponse:  # a bug: one line, not a page
        text = str(exc).strip().splitlines()
        return _error(500, f"internal error: {type(exc).__name__}: {text[0] if text else ''}")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_req: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = tuple(first.get("loc", ()))
        if first.get("type") == "json_invalid":  # loc is ("body", character position)
            at = f" at character {loc[1]}" if len(loc) > 1 else ""
            return _error(400, f"malformed JSON{at}: {first.get('ctx', {}).get('error', 'cannot parse it')}")
        if loc == ("body",):  # no body, or not an object (a list, null, a string, not sent as JSON)
            return _error(400, "the body must be a JSON object sent as application/json, "
                               'such as {"kind": "invert", "image": "sample:chelsea", "layer": "blocks.3"}')
        where = ".".join(str(p) for p in loc if p != "body")
        if first.get("type") == "extra_forbidden" and loc[:1] == ("body",) and len(loc) == 2:
            return _error(400, f"unknown field {where!r}" + did_you_mean(where, JobRequest.model_fields)
                          + f"; the fields are {', '.join(JobRequest.model_fields)}")
        return _error(400, f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(req: Request, exc: StarletteHTTPException) -> JSONResponse:  # no such route, method
        if exc.status_code == 404:
            return _error(404, f"no such route: {req.method} {req.url.path}")
        if exc.status_code == 405:
            return _error(405, f"{req.method} is not allowed on {req.url.path}")
        return _error(exc.status_code, str(exc.detail))

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        from .. import __version__
        from ..images import SAMPLES

        return {
            "version": __version__, "workers": config.jobs, "max_queued": config.max_queued,
            "max_upload_bytes": config.max_upload_bytes, "max_upload_pixels": config.max_upload_pixels,
            "max_steps": config.max_steps, "max_input_size": config.max_input_size, "device": config.device,
            "samples": list(SAMPLES), "kinds": list(recipes.KINDS),
            "presets": {"invert": list(recipes.INVERT_PRESETS), "dream": list(recipes.DREAM_PRESETS),
                        "style": ["auto", "efficientnet", "classic", "vgg"]},
            "saliency_methods": list(recipes.SALIENCY_METHODS),
        }

    @app.get("/api/models")
    def models() -> list[dict[str, Any]]:
        return catalog.models()

    @app.get("/api/models/{name}/layers")
    def model_layers(name: str, input_size: int | None = None) -> dict[str, Any]:
        if input_size is not None and not 16 <= input_size <= config.max_input_size:
            raise PreimageError(f"input size must be between 16 and {config.max_input_size}, not {input_size}")
        return layers.describe(name, input_size)

    @app.get("/api/samples/{name}.png")
    def sample(name: str) -> Response:
        from ..images import SAMPLES, encode_png, load_tensor

        if name not in SAMPLES:
            return _error(404, f"no bundled photo {name!r}")
        if name not in thumbs:
            thumbs[name] = encode_png(load_tensor(f"sample:{name}", 160)[0])
        return Response(thumbs[name], media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.post("/api/uploads")
    async def upload(request: Request, name: str = "upload") -> JSONResponse:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind and not (kind.startswith("image/") or kind == "application/octet-stream"):
            return _error(415, f"only images are accepted, not {kind}")
        limit = config.max_upload_bytes
        declared = request.headers.get("content-length")
        too_big = TooLarge(f"the file is too large: the limit is {limit:,} bytes")
        if declared and declared.isdigit() and int(declared) > limit:
            await _drain(request, limit)
            raise TooLarge(f"the file is too large: {int(declared):,} bytes, the limit is {limit:,} bytes")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                await _drain(request, limit)
                raise too_big
        item = await asyncio.to_thread(uploads.add, bytes(data), name)
        return JSONResponse(item.public(), status_code=201)

    @app.post("/api/jobs")
    def submit(req: JobRequest) -> JSONResponse:
        title, params, run = recipes.prepare(req, config, uploads)
        job = queue.submit(req.kind, title, params, run)
        state, _ = queue.snapshot(job)
        return JSONResponse(state, status_code=202)

    @app.get("/api/jobs")
    def jobs() -> list[dict[str, Any]]:
        return queue.jobs()

    def _job(job_id: str):
        job = queue.get(job_id)
        if job is None:
            raise _NotFound(f"no job {job_id!r} on this server")
        return job

    @app.exception_handler(_NotFound)
    async def _not_found(_req: Request, exc: _NotFound) -> JSONResponse:
        return _error(404, str(exc))

    @app.get("/api/jobs/{job_id}")
    def job(job_id: str) -> dict[str, Any]:
        return queue.snapshot(_job(job_id))[0]

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: str) -> dict[str, Any]:
        _job(job_id)
        return queue.snapshot(queue.cancel(job_id))[0]  # type: ignore[arg-type]

    @app.get("/api/jobs/{job_id}/frame.png")
    def frame(job_id: str) -> Response:
        _, frames = queue.snapshot(_job(job_id))
        if not frames:
            return _error(404, "no frame yet")
        return Response(frames[-1][3], media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/api/jobs/{job_id}/files/{name:path}")
    def file(job_id: str, name: str) -> Response:
        job = _job(job_id)
        if name not in job.files:
            return _error(404, f"job {job_id} has no file {name!r}")
        return FileResponse(job.folder / name, filename=Path(name).name)

    @app.get("/api/jobs/{job_id}/events")
    async def events(job_id: str, request: Request) -> StreamingResponse:
        job = _job(job_id)
        return StreamingResponse(_stream(queue, job, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app


class _NotFound(Exception):
    pass


async def _drain(request: Request, limit: int) -> None:
    """Read (and drop) what the client still sends, up to a bound, so it can read the refusal."""
    seen = 0
    with contextlib.suppress(Exception):
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > 8 * limit + (64 << 20):
                break


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _stream(queue: JobQueue, job: Any, request: Request, tick: float = 0.1):
    """Status and frames as they change; an ``end`` event once the job has finished."""
    last: dict[str, Any] | None = None
    after = -1
    idle = 0.0
    while True:
        state, frames = queue.snapshot(job, after)
        for index, step, phase, png in frames:
            after = index
            yield _sse("frame", {"index": index, "step": step, "phase": phase,
                                 "png": base64.b64encode(png).decode()})
        key = {k: v for k, v in state.items() if k != "seconds"}
        if key != last:
            last = key
            yield _sse("status", state)
            idle = 0.0
        if state["state"] in TERMINAL:
            yield _sse("end", state)
            return
        if await request.is_disconnected():
            return
        await asyncio.sleep(tick)
        idle += tick
        if idle >= 15:  # a comment line keeps proxies from closing a quiet stream
            yield ": keep-alive\n\n"
            idle = 0.0
