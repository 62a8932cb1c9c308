"""Sweeps: feature inversion over the Cartesian product of settings, cached, resumable and parallel.

A sweep names *axes* — images, models, layers (or layer combinations such as ``conv3_1+fc6``), the
inversion preset and any :class:`~preimage.tasks.invert.InvertConfig` field (optimizer, lr,
lambda_tv, lambda_alpha, steps, seed, ...) — each with one or more values, and runs
:func:`preimage.tasks.invert.invert` once for every combination. It is how the classic study of
inversion (Mahendran & Vedaldi, CVPR 2015 / IJCV 2016: what does each layer keep, how do the
regularizers and the optimizer shape the pre-image) is redone on any model in one command:

    preimage sweep sample:chelsea --layers blocks.1,blocks.3,conv_head --lambda-tv 0,1,10 --jobs 2
    preimage sweep --recipe depth sample:chelsea && preimage report out/sweep-depth

    >>> from preimage.sweep import run_sweep
    >>> res = run_sweep({"image": "sample:chelsea", "layer": ["blocks.1", "blocks.3"], "steps": 100}, "out/s")
    >>> res.computed, res.cached            # run keys computed now / found in the cache

Layout of a sweep folder::

    OUT/sweep.json              the axes and the run list (key, folder, labels, spec of every run)
    OUT/runs/<name>-<key>/      one folder per run: run.json, manifest.json, history.json,
                                NAME.png (reconstruction), NAME_compare.png, NAME_original.png

Caching: a run's key hashes everything that determines its result — model name, weights (a file's
content digest), layer spec, image source (a file's content digest), input size, the fully
resolved inversion config and the preimage version. A run folder appears only when complete (it is
written under a temporary name and renamed into place), so an interrupted sweep resumes with the
missing runs and a repeated sweep recomputes nothing.

Parallelism: ``jobs`` local processes, each with ``cores // jobs`` torch threads (never more threads
than cores in all), or Ray tasks (``ray_address``; one CPU and one torch thread each) on a local or
remote Ray cluster. Workers only compute and return the run's files; the driver writes them, so the
cache is the same whichever way a run was computed.

Code: :mod:`preimage.sweep.axes` (axes, runs, recipes), :mod:`preimage.sweep.store` (run identity,
computing, the cache and its verification, reading a sweep back), :mod:`preimage.sweep.executors`
(in-process, worker processes, Ray).
"""
from __future__ import annotations

from ..recipes import RECIPES
from ..tasks.invert import INVERT_PRESETS, InvertConfig, config_for, invert
from . import axes, executors, store  # noqa: F401  (re-exported: the public and test-facing names)
from .axes import (ALIASES, AXES, CONFIG_FIELDS, RUN_AXES, Run, Sweep, _depth_layers, _label, build_sweep,
                   canonical_axis, coerce, normalize_axes, read_axes_file, recipe_axes)
from .executors import (SweepResult, _cores, _run_pool, _run_ray, _safe_compute, _validate_inputs, run_sweep,
                        validate_sweep)
from .store import (_MODELS, RUN_FILES, SWEEP_FILE, RunSpec, _clean_stale, _model, compute_run, is_complete,
                    iter_values, load_sweep, store_run, verify_run)

__all__ = [
    "RunSpec", "Sweep", "SweepResult", "build_sweep", "run_sweep", "load_sweep", "read_axes_file",
    "recipe_axes", "RECIPES", "compute_run", "AXES", "verify_run", "is_complete", "validate_sweep",
]
