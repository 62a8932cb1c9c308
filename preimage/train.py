"""The one training loop for networks: epochs, atomic checkpoints, exact resume, progress, Ctrl-C.

:mod:`preimage.optimize` moves an image through a frozen network; this module trains networks (the
GANs and captioners of :mod:`preimage.gan` and :mod:`preimage.captioning`). A task describes *what*
to train by implementing :class:`TrainTask`; :func:`fit` does the rest::

    for epoch e = start .. epochs:
        g = Generator(seed_of(seed, e)); torch.manual_seed(seed_of(seed, e))
        for batch in task.batches(e, g):      # order and noise drawn from g
            losses = task.train_step(batch, g)  # non-finite -> stop, "diverged"
        metrics = task.end_epoch(e, out)      # sample grids, validation scores
        write out/checkpoint.pt (atomically), history.json, losses.png, manifest.json

Exact resume: everything random in epoch ``e`` is drawn from a generator seeded by ``(seed, e)``
alone, and the checkpoint holds every module's and optimizer's state. A run interrupted in epoch
``e`` (Ctrl-C, SIGTERM, or ``kill -9``) and started again with the same command replays epoch ``e``
from the checkpoint of epoch ``e - 1`` and ends with the same weights, bit for bit on the same
machine, as a run that was never interrupted.
"""
from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from .errors import PreimageError
from .io import _jsonable, atomic_write, versions, write_json

__all__ = ["TrainTask", "FitResult", "fit", "load_checkpoint", "restore", "epoch_seed", "FORMAT"]

log = logging.getLogger(__name__)

#: the ``format`` field of every checkpoint this loop writes
FORMAT = "preimage-train-1"
CHECKPOINT = "checkpoint.pt"
MANIFEST = "manifest.json"


class TrainTask(Protocol):
    """What :func:`fit` needs to know about a training task."""

    kind: str  # "gan", "caption", ...: stored in the checkpoint and checked when it is loaded

    def modules(self) -> dict[str, nn.Module]: ...  # saved and restored by name

    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...

    def config(self) -> dict[str, Any]: ...  # JSON-able settings; a resume refuses a different config

    def num_batches(self) -> int: ...  # batches per epoch (the progress bar's total)

    def batches(self, epoch: int, generator: torch.Generator) -> Iterable[Any]: ...

    def train_step(self, batch: Any, generator: torch.Generator) -> dict[str, float]: ...

    def end_epoch(self, epoch: int, out: Path) -> dict[str, float]: ...


@dataclass
class FitResult:
    """The outcome of :func:`fit`.

    ``status``: ``"done"``, ``"diverged"`` (a loss became non-finite; the checkpoint of the last
    finished epoch is untouched) or ``"interrupted"`` (Ctrl-C or SIGTERM; rerunning resumes);
    ``exit_code``: what a command-line tool should exit with (0, 1, or the interruption's code).
    """

    status: str
    message: str
    epochs_done: int
    history: dict[str, list[dict[str, float]]]
    checkpoint: Path | None
    seconds: float
    resumed_from: int = 0  # the epoch the run continued after (0: a fresh start)
    exit_code: int = 0
    files: list[Path] = field(default_factory=list)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch`` (1-based): a function of ``(seed, epoch)`` only."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + 12_345) % (2**63 - 1)


# ---------------------------------------------------------------------------------------------
# checkpoints

def load_checkpoint(path: str | Path, *, kind: str | None = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`fit` (a file, or a run folder holding ``checkpoint.pt``).

    Raises:
        PreimageError: the file is missing or unreadable, is not a preimage checkpoint, or holds
            another kind of model than ``kind``.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise PreimageError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a text file, a truncated zip, a pickle of arbitrary objects
        raise PreimageError(f"{path} is not a readable preimage checkpoint "
                            f"(expected the {CHECKPOINT} that training writes)") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise PreimageError(f"{path} is not a preimage checkpoint (expected the {CHECKPOINT} that training writes)")
    if kind is not None and ckpt.get("kind") != kind:
        raise PreimageError(f"{path} holds a {ckpt.get('kind')!r} model, not a {kind!r} one")
    return ckpt


def restore(task: TrainTask, ckpt: dict[str, Any], *, optimizers: bool = True) -> None:
    """Load a checkpoint's module (and optimizer) states into ``task``; one-line errors on mismatch."""
    for name, module in task.modules().items():
        state = ckpt["modules"].get(name)
        if state is None:
            raise PreimageError(f"the checkpoint has no {name!r} network")
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            detail = first[1].strip() if len(first) > 1 else (first[0] if first else "")
            raise PreimageError(f"the checkpoint's {name!r} network does not fit this architecture ({detail})") from None
    if optimizers:
        for name, opt in task.optimizers().items():
            if name in ckpt.get("optimizers", {}):
                opt.load_state_dict(ckpt["optimizers"][name])


def _checkpoint_bytes(task: TrainTask, epoch: int, seed: int, config: dict, history: dict) -> bytes:
    buf = io.BytesIO()
    torch.save({
        "format": FORMAT, "kind": task.kind, "config": config, "epoch": epoch, "seed": seed,
        "modules": {k: m.state_dict() for k, m in task.modules().items()},
        "optimizers": {k: o.state_dict() for k, o in task.optimizers().items()},
        "history": history,
    }, buf)
    return buf.getvalue()


def _config_difference(old: dict, new: dict) -> str | None:
    old, new = _jsonable(old), _jsonable(new)
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            return f"{key}: {old.get(key)!r} there, {new.get(key)!r} now"
    return None


def _prepare(task: TrainTask, out: Path, config: dict, seed: int, resume: bool, force: bool) -> dict | None:
    """Check ``out`` and return the checkpoint to resume from (or None for a fresh start)."""
    if out.exists() and not out.is_dir():
        raise PreimageError(f"{out} exists and is not a folder")
    ckpt_path, manifest_path = out / CHECKPOINT, out / MANIFEST
    if force or not out.exists():
        return None
    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, kind=task.kind)
        diff = _config_difference(ckpt.get("config", {}), config)
        if diff is None and int(ckpt.get("seed", seed)) != seed:
            diff = f"seed: {ckpt.get('seed')} there, {seed} now"
        if diff is not None:
            raise PreimageError(f"{out} holds a run with other settings ({diff}); "
                                "use --force to start over or choose another --out")
        if not resume:
            raise PreimageError(f"{out} holds a run already; use --force to start over or choose another --out")
        return ckpt
    if manifest_path.exists():  # a run of the same kind that stopped before its first checkpoint
        import json

        try:
            old = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("kind") == task.kind and _config_difference(old.get("config", {}), config) is None:
            return None
    if any(out.iterdir()):
        raise PreimageError(f"{out} is not empty and holds no training run; use --force or choose another --out")
    return None


# ---------------------------------------------------------------------------------------------
# outputs

def _curves_png(history: dict[str, list[dict[str, float]]], steps_per_epoch: int) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = history["steps"]
    names = [k for k in steps[0] if k not in ("epoch", "step")] if steps else []
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    width = max(1, steps_per_epoch // 20)  # a running mean over 1/20 of an epoch
    for name in names:
        x = torch.tensor([(s["epoch"] - 1) + s["step"] / max(steps_per_epoch, 1) for s in steps])
        y = torch.tensor([s[name] for s in steps], dtype=torch.float64)
        if len(y) >= width > 1:
            kernel = torch.ones(width, dtype=torch.float64) / width
            y = torch.nn.functional.conv1d(y.view(1, 1, -1), kernel.view(1, 1, -1)).view(-1)
            x = x[width - 1:]
        ax.plot(x.numpy(), y.numpy(), label=name, linewidth=1.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if names:
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _write_manifest(out: Path, task: TrainTask, config: dict, seed: int, epochs: int, done: int,
                    status: str, message: str, seconds: float) -> None:
    write_json(out / MANIFEST, {
        "kind": task.kind, "config": config, "seed": seed, "epochs": epochs, "epochs_done": done,
        "status": status, "message": message, "seconds": round(seconds, 3), "versions": versions(),
        "files": sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) if out.is_dir() else [],
    })


# ---------------------------------------------------------------------------------------------
# the loop

def fit(
    task: TrainTask,
    out: str | Path,
    *,
    epochs: int,
    seed: int = 0,
    resume: bool = True,
    force: bool = False,
    progress: bool = False,
    log_every: int = 0,
    callbacks: Sequence[Callable[[dict[str, float]], None]] = (),
) -> FitResult:
    """Train ``task`` for ``epochs`` epochs, writing checkpoints and logs into ``out``.

    Args:
        epochs: the total number of epochs (a resumed run continues up to it).
        seed: seeds every epoch's generator (see :func:`epoch_seed`).
        resume: continue from ``out/checkpoint.pt`` when it holds a run with the same kind, config
            and seed (otherwise refuse); ``force``: start over whatever ``out`` holds.
        progress: progress on stderr over each epoch's steps, with the latest losses (a tqdm bar on a
            terminal, plain lines otherwise; :mod:`preimage.progress`).
        log_every: log the losses every N steps (``logging``, logger ``preimage.train``).
        callbacks: called with each finished epoch's record (losses, metrics, seconds).

    Returns a :class:`FitResult`; interruption and divergence are reported there, not raised.
    """
    if int(epochs) < 1:
        raise PreimageError(f"epochs must be >= 1 (got {epochs})")
    out = Path(out).expanduser()
    config = _jsonable(task.config())
    ckpt = _prepare(task, out, config, seed, resume, force)
    out.mkdir(parents=True, exist_ok=True)
    history: dict[str, list[dict[str, float]]] = {"steps": [], "epochs": []}
    start_epoch = 0
    if ckpt is not None:
        restore(task, ckpt)
        start_epoch = int(ckpt["epoch"])
        history = ckpt.get("history") or history
    n_batches = max(int(task.num_batches()), 1)
    t0 = time.perf_counter()
    prior_seconds = sum(e.get("seconds", 0.0) for e in history["epochs"])
    status, message, exit_code = "done", "", 0
    epoch, step = start_epoch, 0
    if start_epoch >= epochs:
        message = f"{out} already holds {start_epoch} epochs (asked for {epochs}); nothing to do"
    _write_manifest(out, task, config, seed, epochs, start_epoch, "running", "", prior_seconds)
    bar = None
    try:
        for epoch in range(start_epoch + 1, epochs + 1):
            epoch_t0 = time.perf_counter()
            s = epoch_seed(seed, epoch)
            generator = torch.Generator().manual_seed(s)
            torch.manual_seed(s)
            for m in task.modules().values():
                m.train()
            if progress:
                from .progress import progress_bar  # a bar on a terminal, plain lines in a log

                bar = progress_bar(n_batches, f"epoch {epoch}/{epochs}", "step", leave=False)
            sums: dict[str, float] = {}
            steps_here: list[dict[str, float]] = []
            step = 0
            for step, batch in enumerate(task.batches(epoch, generator), start=1):
                losses = {k: float(v) for k, v in task.train_step(batch, generator).items()}
                bad = [k for k, v in losses.items() if not math.isfinite(v)]
                if bad:
                    status, exit_code = "diverged", 1
                    message = (f"the {bad[0]} loss became {losses[bad[0]]} at epoch {epoch}, step {step}; "
                               + (f"the checkpoint of epoch {epoch - 1} is kept" if epoch > 1 else "no checkpoint was written")
                               + " (try a lower learning rate or another seed)")
                    break
                steps_here.append({"epoch": epoch, "step": step, **losses})
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + v
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in losses.items()}, refresh=False)
                if log_every and step % log_every == 0:
                    log.info("epoch %d step %d: %s", epoch, step, ", ".join(f"{k} {v:.4g}" for k, v in losses.items()))
            if bar is not None:
                bar.close()
                bar = None
            if status != "done":
                break
            for m in task.modules().values():
                m.eval()
            metrics = {k: float(v) for k, v in (task.end_epoch(epoch, out) or {}).items()}
            record = {"epoch": epoch, **{k: v / max(step, 1) for k, v in sums.items()}, **metrics,
                      "seconds": round(time.perf_counter() - epoch_t0, 3)}
            history["steps"].extend(steps_here)
            history["epochs"].append(record)
            atomic_write(out / CHECKPOINT, _checkpoint_bytes(task, epoch, seed, config, history))
            write_json(out / "history.json", history)
            atomic_write(out / "losses.png", _curves_png(history, n_batches))
            for cb in callbacks:
                cb(record)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM mapped to a KeyboardInterrupt subclass
        if bar is not None:
            bar.close()
        status, exit_code = "interrupted", int(getattr(exc, "exit_code", 130))
        done = len(history["epochs"]) and history["epochs"][-1]["epoch"]
        message = (f"interrupted in epoch {epoch} at step {step}; rerun the same command to resume after "
                   f"epoch {done}" if done else f"interrupted in epoch {epoch} at step {step}; no epoch finished")
    epochs_done = history["epochs"][-1]["epoch"] if history["epochs"] else 0
    seconds = prior_seconds + time.perf_counter() - t0
    _write_manifest(out, task, config, seed, epochs, epochs_done, status, message, seconds)
    ckpt_path = out / CHECKPOINT
    return FitResult(
        status=status, message=message, epochs_done=epochs_done, history=history,
        checkpoint=ckpt_path if ckpt_path.exists() else None, seconds=seconds, resumed_from=start_epoch,
        exit_code=exit_code, files=sorted(p for p in out.iterdir() if not p.name.startswith(".")),
    )
