"""The run store: one run's identity and cache key, computing it, writing it atomically, verifying
a cached run, and reading a sweep folder back.

See :mod:`preimage.sweep` for the folder layout and the caching rules.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PreimageError
from ..tasks.invert import InvertConfig, config_for, invert
from ..validate import DEFAULT_MODEL

__all__ = ["RunSpec", "compute_run", "store_run", "verify_run", "is_complete", "load_sweep", "RUN_FILES",
           "SWEEP_FILE"]

RUN_FILES = ("run.json", "manifest.json", "history.json")
SWEEP_FILE = "sweep.json"
# ---------------------------------------------------------------------------------------------
# one run


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _source_identity(src: str, kind: str) -> dict[str, Any]:
    """A source string plus, for a file, the digest of its content (so an edited file is a new run)."""
    if kind == "image" and src.startswith("sample:"):
        return {"source": src}
    if kind == "weights" and src in ("default", "none"):
        return {"source": src}
    p = Path(src).expanduser()
    if p.is_file():
        st = p.stat()
        return {"source": src, "sha256": _file_digest(str(p.resolve()), st.st_mtime_ns, st.st_size)}
    return {"source": src}


def _slug(text: str, n: int = 40) -> str:
    s = re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-.") or "x"
    return s[:n]


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one inversion of a sweep (picklable; sent to worker processes)."""

    image: str
    model: str = DEFAULT_MODEL
    layer: str = ""
    weights: str = "default"
    preset: str = "default"
    input_size: int | None = None
    overrides: tuple[tuple[str, Any], ...] = ()  # InvertConfig fields set by the sweep, sorted by name

    def config(self) -> InvertConfig:
        return config_for(self.preset, **dict(self.overrides))

    def identity(self) -> dict[str, Any]:
        """What the cache key hashes."""
        from .. import __version__
        from ..layers import parse_layer_spec

        return {
            "task": "invert",
            "model": self.model,
            "weights": _source_identity(self.weights, "weights"),
            "input_size": self.input_size,
            "layers": [[n, w] for n, w in parse_layer_spec(self.layer)],
            "image": _source_identity(self.image, "image"),
            "config": _plain(self.config().as_dict()),
            "preimage": __version__,
        }

    @property
    def key(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def dirname(self) -> str:
        from ..images import image_name

        return f"{_slug(image_name(self.image), 24)}_{_slug(self.model, 24)}_{_slug(self.layer, 40)}_{self.key[:10]}"

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["overrides"] = {k: _plain(v) for k, v in self.overrides}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunSpec":
        ov = d.get("overrides") or {}
        from .axes import coerce

        return cls(image=d["image"], model=d.get("model", DEFAULT_MODEL), layer=d["layer"],
                   weights=d.get("weights", "default"), preset=d.get("preset", "default"),
                   input_size=d.get("input_size"),
                   overrides=tuple(sorted((k, coerce(k, v)) for k, v in ov.items())))


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


# one model per (name, weights, input size, device) per process: workers run many runs
_MODELS: dict[tuple, Any] = {}


def _model(spec: RunSpec, device: str):
    from ..models import load_model

    import torch

    k = (spec.model, spec.weights, spec.input_size, device)
    if k not in _MODELS:
        if len(_MODELS) >= 4:
            _MODELS.pop(next(iter(_MODELS)))
        # a random-init network is drawn from a fixed seed, so every process builds the same one
        # and a cached run can be reproduced
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            _MODELS[k] = load_model(spec.model, weights=spec.weights, device=device, input_size=spec.input_size)
    return _MODELS[k]


def compute_run(spec: RunSpec, device: str = "cpu", threads: int | None = None,
                on_step: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run one inversion and return its files as bytes (``{"files": {name: bytes}, ...}``);
    ``on_step`` is called after every optimization step.

    Nothing is written to the sweep folder here, so a worker (a local process or a Ray task on
    another machine) never leaves a half-written run behind; :func:`store_run` writes them.
    A Ctrl-C inside the optimization raises KeyboardInterrupt (an interrupted run is not a result).
    """
    import torch

    from ..images import save_image

    if threads:
        torch.set_num_threads(int(threads))
    t0 = time.perf_counter()
    model = _model(spec, device)
    callbacks = [lambda _step: on_step()] if on_step is not None else []
    inv = invert(model, spec.image, layers=spec.layer, config=spec.config(), callbacks=callbacks)
    if inv.status == "interrupted":
        raise KeyboardInterrupt
    with tempfile.TemporaryDirectory(prefix="preimage-run-") as tmp:
        inv.save(tmp, force=True)
        save_image(inv.reference[0], Path(tmp) / f"{inv.names[0]}_original.png")
        files = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
    import platform

    info = {
        "key": spec.key, "spec": spec.as_dict(), "identity": spec.identity(), "name": inv.names[0],
        "status": inv.status, "seconds": round(inv.result.seconds, 3),
        "wall_seconds": round(time.perf_counter() - t0, 3), "device": device,
        "threads": torch.get_num_threads(), "host": platform.node(), "pid": os.getpid(),
    }
    info["files"] = {name: len(data) for name, data in sorted(files.items())}  # what verify_run checks
    files["run.json"] = (json.dumps(info, indent=2) + "\n").encode()
    return {"key": spec.key, "files": files, "status": inv.status, "seconds": info["seconds"]}


def store_run(runs_dir: Path, spec: RunSpec, payload: Mapping[str, Any]) -> Path:
    """Write a computed run atomically: into ``.tmp-<name>-<pid>`` first, renamed when complete."""
    final = runs_dir / spec.dirname
    tmp = runs_dir / f".tmp-{spec.dirname}-{os.getpid()}"
    runs_dir.mkdir(parents=True, exist_ok=True)
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        for name, data in payload["files"].items():
            if name != "run.json":
                (tmp / name).write_bytes(data)
        (tmp / "run.json").write_bytes(payload["files"]["run.json"])  # the completion marker, last
        if final.exists():  # a stale or concurrent copy: replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def verify_run(run_dir: Path) -> str | None:
    """None when a run folder is complete, else what is wrong with it (one phrase).

    Complete means: run.json, manifest.json and history.json parse as JSON, and every file the run
    wrote (listed with its size in run.json; for runs cached before that list existed, the three
    PNGs of the run) is there, has that size, and a PNG decodes. A folder that exists is not
    enough: a deleted or truncated file makes the run one to compute again."""
    if not run_dir.is_dir():
        return "missing"
    docs = {}
    for f in RUN_FILES:
        try:
            docs[f] = json.loads((run_dir / f).read_text())
        except FileNotFoundError:
            return f"{f} is missing"
        except (OSError, ValueError):
            return f"{f} is damaged"
        if not isinstance(docs[f], dict):
            return f"{f} is damaged"
    info = docs["run.json"]
    name = info.get("name")
    listed = info.get("files")
    if not isinstance(listed, dict):
        if not isinstance(name, str) or not name:
            return "run.json names no image"
        listed = {f"{name}{suffix}.png": None for suffix in ("", "_compare", "_original")}
    for fname, size in listed.items():
        path = run_dir / fname
        try:
            actual = path.stat().st_size
        except OSError:
            return f"{fname} is missing"
        if size is not None and actual != size:
            return f"{fname} is truncated or changed ({actual} bytes, {size} written)"
        if fname.endswith(".png"):
            from PIL import Image

            try:
                with Image.open(path) as im:
                    im.verify()
            except Exception:  # any decoder error: the file is damaged
                return f"{fname} is damaged"
    return None


def is_complete(run_dir: Path) -> bool:
    """Whether a run folder holds every file of a finished run, each readable (see :func:`verify_run`)."""
    return verify_run(run_dir) is None


def _clean_stale(runs_dir: Path) -> None:
    """Remove temporary run folders left by a process that no longer exists (e.g. kill -9)."""
    if not runs_dir.is_dir():
        return
    for p in runs_dir.glob(".tmp-*"):
        m = re.search(r"-(\d+)$", p.name)
        pid = int(m.group(1)) if m else -1
        alive = False
        if pid > 0:
            try:
                os.kill(pid, 0)
                alive = True
            except ProcessLookupError:
                alive = False
            except PermissionError:
                alive = True
        if not alive or pid == os.getpid():
            shutil.rmtree(p, ignore_errors=True)

# ---------------------------------------------------------------------------------------------
# reading a sweep back


def load_sweep(out: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(sweep.json, runs)``; each run: its sweep.json entry plus ``path``, ``complete`` and,
    when complete, ``manifest``, ``history`` and ``info`` (run.json)."""
    out = Path(out)
    f = out / SWEEP_FILE
    if not out.exists():
        raise PreimageError(f"no such folder: {out}")
    if not out.is_dir():
        raise PreimageError(f"{out} is not a folder; give the folder `preimage sweep` wrote")
    if not f.is_file():
        raise PreimageError(f"{out} is not a sweep folder (no {SWEEP_FILE}); run `preimage sweep` first")
    try:
        meta = json.loads(f.read_text())
    except (OSError, ValueError) as exc:
        raise PreimageError(f"{f} is damaged ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                            "run the sweep again to rewrite it") from None
    entries = meta.get("runs") if isinstance(meta, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("dir"), str) for e in entries):
        raise PreimageError(f"{f} is damaged (no list of runs); run the sweep again to rewrite it")
    runs = []
    for entry in entries:
        path = Path(entry["dir"])
        path = path if path.is_absolute() else out / path
        problem = verify_run(path)
        run = dict(entry, path=path, complete=problem is None, problem=problem)
        if run["complete"]:
            run["info"] = json.loads((path / "run.json").read_text())
            run["manifest"] = json.loads((path / "manifest.json").read_text())
            history = json.loads((path / "history.json").read_text()).get("history", [])
            run["history"] = history if isinstance(history, list) else []
        runs.append(run)
    return meta, runs


def iter_values(values: Iterable[Any]) -> list[str]:
    from .axes import _label

    return [str(_label(v)) for v in values]
