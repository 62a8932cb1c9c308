"""The job queue of the web app: ``jobs`` worker threads run optimizations, the rest wait in line.

A job is a function ``run(ctx) -> dict`` (see :mod:`preimage.serve.recipes`) plus what the page shows
about it: state, place in line, step, loss terms, live frames, message, result. Workers are threads
in the server process; each keeps its own loaded models (:class:`ModelCache`), because a model's
layer hooks belong to one forward pass at a time. Cancelling a waiting job removes it from the line;
cancelling a running one makes the engine's callback return True, so the loop stops at its next step.
Finished jobs (and their files) stay listed until the server stops.
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PreimageError

__all__ = ["Job", "JobContext", "JobQueue", "ModelCache", "Busy", "TERMINAL"]

#: states a job does not leave
TERMINAL = ("done", "cancelled", "failed", "diverged")


class Busy(PreimageError):
    """The line is full: the server refuses new jobs until some finish."""


class Cancelled(Exception):
    """Raised inside a job (between phases) when it was cancelled."""


@dataclass
class Job:
    """One request to run a task, and everything the page shows about it."""

    id: str
    kind: str
    title: str
    params: dict[str, Any]
    run: Callable[["JobContext"], dict[str, Any]]
    folder: Path
    state: str = "queued"                 # queued | running | done | cancelled | failed | diverged
    message: str = ""                     # one line: why it failed, diverged or stopped
    step: int = 0
    total: int = 0
    phase: str = ""                       # e.g. "blocks.3 (2/7)" in a depth strip
    terms: dict[str, float] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)   # names under ``folder`` that may be downloaded
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    frames: collections.deque = field(default_factory=collections.deque)  # (index, step, phase, png)
    frame_count: int = 0

    def public(self, position: int | None = None) -> dict[str, Any]:
        """What the API returns about the job (no frames)."""
        return {
            "id": self.id, "kind": self.kind, "title": self.title, "state": self.state,
            "position": position, "message": self.message, "step": self.step, "total": self.total,
            "phase": self.phase, "terms": self.terms, "frames": self.frame_count,
            "result": self.result, "files": list(self.files), "params": self.params,
            "seconds": round((self.finished or time.time()) - self.started, 2) if self.started else None,
        }


class ModelCache:
    """Loaded models by (name, weights, input size), least recently used dropped beyond ``size``."""

    def __init__(self, device: str = "cpu", size: int = 2):
        self.device, self.size = device, size
        self._models: collections.OrderedDict = collections.OrderedDict()

    def get(self, name: str, weights: str = "default", input_size: int | None = None):
        from ..models import load_model

        key = (name, weights, input_size)
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        model = load_model(name, weights=weights, device=self.device, input_size=input_size)
        self._models[key] = model
        while len(self._models) > self.size:
            self._models.popitem(last=False)
        return model


class JobContext:
    """What a running job may use: its folder, its worker's models, frames and the cancel flag."""

    def __init__(self, queue: "JobQueue", job: Job, models: ModelCache):
        self.queue, self.job, self.models = queue, job, models

    @property
    def folder(self) -> Path:
        return self.job.folder

    @property
    def cancelled(self) -> bool:
        return self.job.cancel.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` when the job was cancelled (call between phases)."""
        if self.cancelled:
            raise Cancelled

    def progress(self, *, step: int | None = None, total: int | None = None, phase: str | None = None,
                 terms: dict[str, float] | None = None) -> None:
        with self.queue.lock:
            if step is not None:
                self.job.step = step
            if total is not None:
                self.job.total = total
            if phase is not None:
                self.job.phase = phase
            if terms is not None:
                self.job.terms = dict(terms)

    def frame(self, image: Any, step: int) -> None:
        """Publish a live frame: a ``3 x H x W`` (or ``1 x 3 x H x W``) tensor in [0, 1], or PNG bytes."""
        from ..images import encode_png

        png = image if isinstance(image, bytes) else encode_png(image.detach().float().clamp(0, 1).cpu())
        with self.queue.lock:
            job = self.job
            job.frames.append((job.frame_count, step, job.phase, png))
            job.frame_count += 1
            while len(job.frames) > self.queue.config.max_frames:
                job.frames.popleft()

    def step_callback(self, model: Any, *, every: int, offset: int = 0) -> Callable[[Any], bool]:
        """A callback for :func:`preimage.optimize.optimize` (through a task's ``callbacks=``): records
        the step and loss terms, publishes a frame every ``every`` steps (and at step 1), and returns
        True once the job is cancelled, which stops the loop at this step."""

        def cb(step: Any) -> bool:
            n = step.step + offset
            self.progress(step=n, terms={"loss": step.loss, **step.terms})
            if step.step == 1 or step.step % every == 0:
                state = step.state
                img = state.image if state.image is not None else model.denormalize(state.input)
                self.frame(img[0], n)
            return self.cancelled

        return cb


class JobQueue:
    """``workers`` threads take jobs first come, first served; at most ``config.max_queued`` wait."""

    def __init__(self, config: Any):
        self.config = config
        self.lock = threading.RLock()
        self._wake = threading.Condition(self.lock)
        self._waiting: collections.deque[Job] = collections.deque()
        self._jobs: dict[str, Job] = {}
        self._finished: collections.deque[Job] = collections.deque()
        self._ids = itertools.count(1)
        self._closed = False
        self._threads = [threading.Thread(target=self._work, args=(i,), name=f"preimage-job-{i}", daemon=True)
                         for i in range(config.jobs)]
        for t in self._threads:
            t.start()

    # -- the API side --------------------------------------------------------------------------

    def submit(self, kind: str, title: str, params: dict[str, Any], run: Callable[[JobContext], dict[str, Any]]) -> Job:
        with self.lock:
            if self._closed:
                raise Busy("the server is shutting down")
            if len(self._waiting) >= self.config.max_queued:
                n = len(self._waiting)
                raise Busy(f"server busy: {n} {'job is' if n == 1 else 'jobs are'} already waiting; try again when "
                           f"{'it finishes' if n == 1 else 'some finish'}")
            job_id = f"{next(self._ids):04d}{secrets.token_hex(3)}"
            job = Job(id=job_id, kind=kind, title=title, params=params, run=run,
                      folder=Path(self.config.out) / "jobs" / job_id)
            self._jobs[job_id] = job
            self._waiting.append(job)
            self._wake.notify()
            return job

    def get(self, job_id: str) -> Job | None:
        with self.lock:
            return self._jobs.get(job_id)

    def position(self, job: Job) -> int | None:
        """1 for the next job to start, None once it runs."""
        with self.lock:
            try:
                return self._waiting.index(job) + 1
            except ValueError:
                return None

    def snapshot(self, job: Job, after_frame: int = -1) -> tuple[dict[str, Any], list[tuple]]:
        """The job's public state and the frames with an index above ``after_frame``, taken together."""
        with self.lock:
            return job.public(self.position(job)), [f for f in job.frames if f[0] > after_frame]

    def jobs(self) -> list[dict[str, Any]]:
        with self.lock:
            return [j.public(self.position(j)) for j in self._jobs.values()]

    def running(self) -> int:
        with self.lock:
            return sum(j.state == "running" for j in self._jobs.values())

    def cancel(self, job_id: str) -> Job | None:
        with self.lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            job.cancel.set()
            if job.state == "queued":
                self._waiting.remove(job)
                self._finish(job, "cancelled", "cancelled before it started")
            return job

    def stop(self) -> None:
        """Refuse new jobs and cancel the waiting and running ones (returns at once: running jobs end
        at their next step; safe to call from a signal handler's thread)."""
        with self.lock:
            self._closed = True
            for job in list(self._waiting):
                job.cancel.set()
                self._finish(job, "cancelled", "the server stopped before it started")
            self._waiting.clear()
            for job in self._jobs.values():
                job.cancel.set()
            self._wake.notify_all()

    def close(self, timeout: float = 5.0) -> None:
        """:meth:`stop`, then wait up to ``timeout`` seconds for the running jobs to end."""
        self.stop()
        end = time.time() + timeout
        for t in self._threads:
            t.join(max(0.0, end - time.time()))

    # -- the worker side -----------------------------------------------------------------------

    def _finish(self, job: Job, state: str, message: str = "") -> None:
        job.state, job.message, job.finished = state, message, time.time()
        if not job.files:  # a job that wrote nothing leaves no empty folder behind
            with contextlib.suppress(OSError):
                job.folder.rmdir()
        self._finished.append(job)
        # finished jobs keep their frames only while they are among the last few
        while len(self._finished) > self.config.frames_kept_jobs:
            self._finished.popleft().frames.clear()

    def _work(self, slot: int) -> None:
        models = ModelCache(self.config.device, self.config.models_per_worker)
        while True:
            with self.lock:
                while not self._waiting and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                job = self._waiting.popleft()
                job.state, job.started = "running", time.time()
            self._run(job, JobContext(self, job, models))

    def _run(self, job: Job, ctx: JobContext) -> None:
        try:
            job.folder.mkdir(parents=True, exist_ok=True)
            result = job.run(ctx)
        except Cancelled:
            with self.lock:
                self._finish(job, "cancelled", f"cancelled at step {job.step}")
            return
        except PreimageError as exc:
            with self.lock:
                self._finish(job, "diverged" if exc.exit_code == 1 else "failed", str(exc))
            return
        except Exception as exc:  # a bug: one line for the page, the job ends
            text = str(exc).strip().splitlines()
            with self.lock:
                self._finish(job, "failed", f"internal error: {type(exc).__name__}: {text[0] if text else ''}")
            return
        with self.lock:
            job.result = {k: v for k, v in result.items() if k not in ("files", "status", "message")}
            job.files = [str(f) for f in result.get("files", [])]
            status = result.get("status", "done")
            state = {"stopped": "cancelled", "interrupted": "cancelled"}.get(status, status)
            message = result.get("message", "")
            if state == "cancelled" and not message:
                message = f"cancelled at step {job.step}; the image so far is kept"
            self._finish(job, state, message)
