"""Executors: run the runs of a sweep that are not cached, in-process, in local worker processes
or as Ray tasks, and store each result as it arrives.

See :mod:`preimage.sweep` for the parallelism rules.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PreimageError
from .axes import Run, Sweep, build_sweep
from .store import SWEEP_FILE, RunSpec, _clean_stale, _model, compute_run, is_complete, store_run

__all__ = ["SweepResult", "run_sweep", "validate_sweep"]

log = logging.getLogger("preimage.sweep")
# ---------------------------------------------------------------------------------------------
# running


@dataclass
class SweepResult:
    """What :func:`run_sweep` did. ``computed``/``cached``: run keys; ``failed``: key -> message."""

    out: Path
    sweep: Sweep
    computed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def _init_worker(threads: int) -> None:
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C and stops the workers
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # pragma: no cover - already set
        pass


def _safe_compute(spec: RunSpec, device: str, threads: int | None,
                  on_step: Callable[[], None] | None = None) -> dict[str, Any]:
    """compute_run, with errors returned as data (one failed run does not stop the sweep)."""
    try:
        return compute_run(spec, device, threads, on_step)
    except KeyboardInterrupt:
        raise
    except PreimageError as exc:
        return {"key": spec.key, "error": str(exc)}
    except Exception as exc:  # a bug or an out-of-memory: keep the message, go on with the others
        text = str(exc).strip().splitlines()
        return {"key": spec.key, "error": f"{type(exc).__name__}: {text[0] if text else ''}"}


def _validate_inputs(sweep: Sweep, device: str, jobs: int = 1, pending: int | None = None) -> None:
    """Fail before any work on a missing image, an unknown model or layer, or a run that would not
    fit in memory (one line each); with ``jobs`` worker processes, that many of the ``pending`` runs
    (default: all) at once."""
    from ..images import load_image
    from ..layers import parse_layer_spec, resolve_layer
    from ..memory import check_fits

    for src in dict.fromkeys(r.spec.image for r in sweep.runs):
        load_image(src)
    by_model: dict[tuple, set[str]] = {}
    for r in sweep.runs:
        by_model.setdefault((r.spec.model, r.spec.weights, r.spec.input_size), set()).add(r.spec.layer)
    for (name, weights, size), layers in by_model.items():
        # loaded through the run cache: in-process runs reuse these models
        model = _model(RunSpec(image="", model=name, weights=weights, input_size=size), device)
        for spec in sorted(layers):
            for layer, _ in parse_layer_spec(spec):
                resolve_layer(model, layer)
        # the estimate each run makes (tasks.invert): refused here once, not once per run; worker
        # processes each hold a model and a run at once (no more of them than cores, as _run_pool runs)
        todo = len(sweep.runs) if pending is None else pending
        parallel = max(1, min(int(jobs), todo, _cores()))
        check_fits(model, batch=1, size=model.input_size, what=f"inverting 1 image at {model.input_size} px "
                   f"with {name}" + (f" in each of {parallel} parallel jobs" if parallel > 1 else ""),
                   hint="use a smaller input size (--input-size)" + (" or fewer --jobs" if parallel > 1 else ""),
                   parallel=parallel)


def validate_sweep(sweep: Sweep, out: str | os.PathLike, device: str = "cpu", jobs: int = 1,
                   pending: int | None = None) -> None:
    """Everything :func:`run_sweep` checks before it starts (``validate=True``), without running:
    the output folder, images, models, layers and the memory the runs need (``jobs`` of them at once,
    no more than the ``pending`` runs, by default all of them, that are not cached)."""
    out = Path(out)
    _check_folder(sweep, out)
    _validate_inputs(sweep, device, jobs, pending)


def _check_folder(sweep: Sweep, out: Path) -> None:
    """``out`` is a folder for ``sweep``: new, or holding this sweep or part of it (to resume, repeat or
    extend it). The ``sweep.json`` of a sweep with runs that ``sweep`` leaves out is not replaced: those
    runs would drop out of its report."""
    if out.exists() and not out.is_dir():
        raise PreimageError(f"{out} exists and is not a folder")
    try:
        old = json.loads((out / SWEEP_FILE).read_text())
        keys = {r["key"] for r in old["runs"]}
    except (OSError, ValueError, KeyError, TypeError):
        return  # no sweep there (or a damaged sweep.json, which holds nothing to keep)
    left_out = keys - {r.key for r in sweep.runs}
    if left_out:
        raise PreimageError(f"{out} holds another sweep, with {len(left_out)} of its {len(keys)} runs not in this "
                            f"one; give another output folder (--out), with --cache {out / 'runs'} to reuse its runs")


def run_sweep(
    sweep: Sweep | Mapping[str, Any],
    out: str | os.PathLike,
    *,
    jobs: int = 1,
    threads: int | None = None,
    ray_address: str | None = None,
    device: str = "cpu",
    progress: bool = False,
    force: bool = False,
    cache: str | os.PathLike | None = None,
    validate: bool = True,
    on_result: Callable[[Run, str], None] | None = None,
) -> SweepResult:
    """Run every run of ``sweep`` (a :class:`Sweep` or an axes mapping) not yet in the cache.

    Args:
        out: the sweep folder (``sweep.json`` and, unless ``cache`` is given, ``runs/``): new, or holding
            this sweep or a part of it (a sweep that leaves runs of the folder's out is refused).
        jobs: local worker processes; 1 runs in-process.
        threads: torch threads per process (default: ``cores // jobs`` for worker processes, the
            current setting in-process); ``jobs * threads`` is kept at most the number of cores.
        ray_address: run as Ray tasks instead: ``"local"`` starts a local Ray instance, ``"auto"``
            or ``"ray://host:10001"`` joins a cluster; an already initialized Ray is used as it is.
        device: where the networks run (``"cpu"``, ``"cuda"``).
        progress: a tqdm bar over all the steps of the sweep, with the time left (it moves at every
            step when runs are in-process, at every finished run with worker processes or Ray).
        force: recompute runs even when cached.
        cache: folder of run results shared between sweeps (default ``out/runs``).
        validate: check images, models and layers before starting.
        on_result: called as ``fn(run, "computed" | "cached" | "failed")`` after each run.

    Ctrl-C (KeyboardInterrupt) stops the workers and is re-raised; finished runs stay in the cache
    and no partial run folder is left.
    """
    t0 = time.perf_counter()
    for what, n in (("jobs", jobs), ("threads", 1 if threads is None else threads)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise PreimageError(f"{what} must be a whole number >= 1, not {n!r}")
    if not isinstance(sweep, Sweep):
        sweep = build_sweep(sweep)
    out = Path(out)
    runs_dir = Path(cache) if cache is not None else out / "runs"
    if validate:
        pending = sum(force or not is_complete(runs_dir / r.spec.dirname) for r in sweep.runs)
        validate_sweep(sweep, out, device, jobs=1 if ray_address else jobs, pending=pending)
    else:
        _check_folder(sweep, out)
    todo_any = force or not all(is_complete(runs_dir / r.spec.dirname) for r in sweep.runs)
    ray_started = _start_ray(ray_address) if ray_address and todo_any else False  # a wrong address writes nothing
    try:
        out.mkdir(parents=True, exist_ok=True)
        runs_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK) or not os.access(runs_dir, os.W_OK):
            raise PreimageError(f"cannot write to {out}")
        _clean_stale(runs_dir)
        from ..io import write_json

        write_json(out / SWEEP_FILE, sweep.as_dict(out, runs_dir))
    except BaseException:
        if ray_started:
            _stop_ray()
        raise
    result = SweepResult(out=out, sweep=sweep)
    todo: list[Run] = []
    for run in sweep.runs:
        if not force and is_complete(runs_dir / run.spec.dirname):
            result.cached.append(run.key)
            if on_result:
                on_result(run, "cached")
        else:
            todo.append(run)
    todo.sort(key=lambda r: (r.spec.model, r.spec.weights, str(r.spec.input_size)))  # workers reuse models
    bar = None
    if progress and todo:
        from ..progress import progress_bar

        bar = progress_bar(sum(r.spec.config().steps for r in todo), "sweep", "step")
        bar.set_postfix_str(f"runs 0/{len(todo)} (+{len(result.cached)} cached)")
    done = 0
    stepped = 0  # steps of the current in-process run already shown on the bar

    def step() -> None:
        nonlocal stepped
        stepped += 1
        if bar is not None:
            bar.update(1)

    def finish(run: Run, payload: Mapping[str, Any]) -> None:
        nonlocal done, stepped
        done += 1
        if "error" in payload:
            result.failed[run.key] = payload["error"]
            log.warning("run %s failed: %s", run.spec.dirname, payload["error"])
            status = "failed"
        else:
            store_run(runs_dir, run.spec, payload)
            result.computed.append(run.key)
            status = "computed"
        if bar is not None:  # the count first: the line the last steps print says every run is done
            bar.set_postfix_str(f"runs {done}/{len(todo)} (+{len(result.cached)} cached)")
            bar.update(max(0, run.spec.config().steps - stepped))
        stepped = 0
        if on_result:
            on_result(run, status)

    try:
        if not todo:
            pass
        elif ray_address:
            _run_ray(todo, device, finish)
        elif jobs > 1 and len(todo) > 1:
            _run_pool(todo, min(jobs, len(todo)), threads, device, finish)
        else:
            import torch

            before = torch.get_num_threads()
            try:
                for run in todo:
                    n_threads = min(threads, _cores()) if threads else None
                    finish(run, _safe_compute(run.spec, device, n_threads, step if bar is not None else None))
            finally:
                torch.set_num_threads(before)
    finally:
        if bar is not None:
            bar.close()
        _clean_stale(runs_dir)
        if ray_started:
            _stop_ray()
    result.seconds = time.perf_counter() - t0
    return result


def _run_pool(todo: list[Run], jobs: int, threads: int | None, device: str,
              finish: Callable[[Run, Mapping[str, Any]], None]) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    cores = _cores()
    if jobs > cores:
        log.warning("%d jobs on %d cores: using %d", jobs, cores, cores)
        jobs = cores
    threads = max(1, min(threads or cores, cores // jobs))
    ex = ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                             initargs=(threads,))
    futures = {ex.submit(_safe_compute, r.spec, device, threads): r for r in todo}
    try:
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                run = futures[f]
                try:
                    payload = f.result()
                except Exception as exc:  # the worker died (killed, out of memory)
                    payload = {"key": run.key, "error": f"worker failed: {type(exc).__name__}: {exc}"}
                finish(run, payload)
    except BaseException:
        for f in futures:
            f.cancel()
        for p in list((getattr(ex, "_processes", None) or {}).values()):
            p.terminate()
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown(wait=True)


def _start_ray(address: str) -> bool:
    """Connect to Ray (``"local"`` starts one); True when this call started it. An already
    initialized Ray is used as it is."""
    try:
        import ray
    except ImportError:
        raise PreimageError("Ray runs (--ray) need Ray: pip install 'preimage[ray]'") from None
    if ray.is_initialized():
        return False
    try:
        if address == "local":
            ray.init(num_cpus=_cores(), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()
        raise PreimageError(f"cannot connect to Ray at {address}: {first[0] if first else exc}") from None
    return True


def _stop_ray() -> None:
    import ray

    ray.shutdown()


def _run_ray(todo: list[Run], device: str, finish: Callable[[Run, Mapping[str, Any]], None]) -> None:
    import ray

    task = ray.remote(num_cpus=1, max_retries=1)(_safe_compute)
    refs = {task.remote(r.spec, device, 1): r for r in todo}
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            run = refs[ready[0]]
            try:
                payload = ray.get(ready[0])
            except Exception as exc:  # a worker crash or a lost node
                payload = {"key": run.key, "error": f"ray task failed: {type(exc).__name__}"}
            finish(run, payload)
    except BaseException:
        for ref in pending:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # pragma: no cover - already finished
                pass
        raise
