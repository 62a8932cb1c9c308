"""``preimage sweep [IMAGE...] [--recipe depth|tv|lr|models] [--config FILE] [--layers A,B] [--lr X,Y] ...``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..recipes import INVERT_PRESET_NAMES
from .common import add_memory_arg, device_from_args, positive_int, progress_enabled, say

#: command-line options that are sweep axes: option dest -> axis name
AXIS_OPTIONS = {
    "model": "model", "weights": "weights", "layers": "layer", "preset": "preset", "optimizer": "optimizer",
    "lr": "lr", "lambda_tv": "lambda_tv", "lambda_alpha": "lambda_alpha", "steps": "steps", "seeds": "seed",
    "input_size": "input_size",
}


def add_parser(sub) -> None:
    from ..recipes import RECIPES

    recipes = "; ".join(f"{k}: {v}" for k, v in RECIPES.items())
    p = sub.add_parser(
        "sweep", help="invert over a grid of images, models, layers and settings (cached, parallel)",
        description="Feature inversion over the Cartesian product of the given axes. Each option takes one "
                    "value or a comma-separated list; every combination is one run with its own folder, "
                    "cached by a hash of its configuration (an interrupted sweep resumes, a repeated one "
                    "recomputes nothing). Then `preimage report OUT` draws the grid, curves, table and HTML page.",
        epilog=f"Recipes: {recipes}. Example: preimage sweep --recipe depth sample:chelsea --jobs 2 && "
               "preimage report out/sweep-depth",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="image files or sample:NAME (default with a recipe: sample:chelsea)")
    p.add_argument("--recipe", "-r", help=f"a named study: {', '.join(RECIPES)}")
    p.add_argument("--config", "-c", metavar="FILE", help="axes from a .toml or .yaml file (axis = value or list)")
    g = p.add_argument_group("axes (comma-separated lists)")
    g.add_argument("--model", "-m", help="models (default: efficientnet_lite0, embedded, offline)")
    g.add_argument("--weights", help="weights: default, none or a state_dict PATH")
    g.add_argument("--layers", "--layer", "-l", help="layers or combinations, e.g. blocks.1,blocks.3,blocks.3+conv_head")
    g.add_argument("--preset", help=f"inversion presets: {', '.join(INVERT_PRESET_NAMES)}")
    g.add_argument("--optimizer", help="adam, sgd, lbfgs")
    g.add_argument("--lr", help="learning rates, e.g. 0.001,0.01")
    g.add_argument("--lambda-tv", "--tv", dest="lambda_tv", help="TV prior weights, e.g. 0,1,10")
    g.add_argument("--lambda-alpha", dest="lambda_alpha", help="alpha-norm prior weights")
    g.add_argument("--steps", help="optimization steps (the preset's lr drops move in proportion)")
    g.add_argument("--seeds", "--seed", dest="seeds", help="random seeds, e.g. 0,1,2")
    g.add_argument("--input-size", dest="input_size", help="input sizes in pixels (default: the model's)")
    g.add_argument("--set", action="append", default=[], metavar="FIELD=V1,V2",
                   help="any other inversion setting as an axis, e.g. --set jitter=0,4 (repeatable); "
                        "tuple values use '/': --set decay_steps=150/225")
    r = p.add_argument_group("running")
    r.add_argument("--jobs", "-j", type=positive_int, default=1,
                   help="local worker processes; each gets cores/jobs torch threads (default: 1)")
    r.add_argument("--threads", type=positive_int,
                   help="torch threads per process (default: cores/jobs; 1 is faster on a busy machine)")
    r.add_argument("--ray", metavar="ADDRESS",
                   help="run as Ray tasks: 'local' starts a local Ray, 'auto' or ray://HOST:PORT joins a cluster "
                        "(pip install 'preimage[ray]')")
    r.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    r.add_argument("--cache", metavar="DIR", help="run cache shared between sweeps (default: OUT/runs)")
    r.add_argument("--dry-run", "-n", action="store_true", help="list the runs (and which are cached), run nothing")
    r.add_argument("--report", action="store_true", help="write the report (preimage report OUT) when done")
    add_memory_arg(r)
    o = p.add_argument_group("output")
    o.add_argument("--out", "-o", help="sweep folder (default: out/sweep-RECIPE or out/sweep)")
    o.add_argument("--force", action="store_true", help="recompute runs that are already cached")
    o.add_argument("--quiet", "-q", action="store_true", help="no progress bar or log lines")
    p.set_defaults(run=run)


def _split(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()] or [text]


def collect_axes(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, dict[str, str]], str, str | None]:
    """(axes, display names, title, recipe) from --recipe, then --config, then the axis options."""
    from ..errors import PreimageError
    from ..sweep import canonical_axis, read_axes_file, recipe_axes

    file_axes: dict[str, Any] = read_axes_file(args.config) if args.config else {}
    recipe = args.recipe or file_axes.pop("recipe", None)
    cli: dict[str, Any] = {}
    for dest, axis in AXIS_OPTIONS.items():
        value = getattr(args, dest, None)
        if value is not None:
            cli[axis] = _split(value)
    for item in args.set:
        name, sep, values = item.partition("=")
        if not sep or not name.strip():
            raise PreimageError(f"--set takes FIELD=V1,V2, not {item!r}")
        cli[name.strip()] = _split(values)
    if args.images:
        cli["image"] = list(args.images)
    display: dict[str, dict[str, str]] = {}
    title = ""
    axes: dict[str, Any] = {}
    if recipe:
        model = cli.pop("model", None) or file_axes.pop("model", None)
        if "layer" in cli and recipe == "models":
            raise PreimageError("the models recipe picks a middle layer for each model; choose models with --model")
        preset = (cli.get("preset") or [None])[0] if len(cli.get("preset") or []) <= 1 else None
        if recipe == "models" and preset is not None:
            cli.pop("preset")  # the recipe applies it to each CNN (HOG and dense SIFT keep theirs)
        weights = (cli.get("weights") or ["default"])[0]
        axes, display, title = recipe_axes(str(recipe), model=model, weights=weights, preset=preset)
        axes.setdefault("image", ["sample:chelsea"])
    for layer_ in (file_axes, cli):  # later layers replace the axes they name
        for raw, values in layer_.items():
            name = canonical_axis(str(raw))
            parts = set(name.split("+"))
            for old in [k for k in axes if parts & set(canonical_axis(k).split("+"))]:
                del axes[old]
            axes[name] = values
    return axes, display, title, recipe


def run(args: argparse.Namespace) -> int:
    from ..errors import PreimageError
    from ..sweep import _label, build_sweep, is_complete, run_sweep, validate_sweep

    if args.ray and args.jobs > 1:
        raise PreimageError("give either --jobs (local processes) or --ray (Ray tasks), not both")
    # cuda without a GPU: one line, before any model (a dry run only lists, e.g. on a login node)
    device = args.device if args.dry_run else str(device_from_args(args))
    axes, display, title, recipe = collect_axes(args)
    sweep = build_sweep(axes, recipe=recipe, display=display, title=title)
    out = Path(args.out or (f"out/sweep-{recipe}" if recipe else "out/sweep"))
    runs_dir = Path(args.cache) if args.cache else out / "runs"
    if args.dry_run:
        from ..report import run_label
        from ..sweep.executors import _check_folder

        _check_folder(sweep, out)  # a dry run says what the sweep would: one it would refuse is refused
        meta = {"swept": sweep.swept, "display": sweep.display}
        for r in sweep.runs:
            cached = is_complete(runs_dir / r.spec.dirname)
            state = ("cached, to run again (--force)" if args.force else "cached") if cached else "to run"
            labels = {k: _label(v) for k, v in r.labels.items()}
            label = run_label(meta, {"labels": labels, "spec": r.spec.as_dict()})
            print(f"{r.spec.dirname}\t{state}\t{label}")
        say(args, f"{len(sweep.runs)} runs; swept: {', '.join(sweep.swept) or 'nothing'}")
        return 0
    pending = sum(args.force or not is_complete(runs_dir / r.spec.dirname) for r in sweep.runs)
    validate_sweep(sweep, out, device, jobs=args.jobs, pending=pending)  # images, models, layers, memory: nothing is said before an error
    say(args, f"sweep: {len(sweep.runs)} runs ({' x '.join(f'{len(v)} {k}' for k, v in sweep.axes.items() if len(v) > 1) or 'one setting'}) -> {out}")
    finished = {"n": 0}

    def on_result(run, status: str) -> None:
        if status == "computed":
            finished["n"] += 1

    import os

    saved_limit = os.environ.get("PREIMAGE_MAX_MEMORY")
    if args.max_memory:  # worker processes read the limit from the environment
        os.environ["PREIMAGE_MAX_MEMORY"] = args.max_memory
    import logging

    # a failed run is said once, below, not also by the library's log line
    log, quiet_log = logging.getLogger("preimage.sweep"), logging.NullHandler()
    log.addHandler(quiet_log)
    try:  # SIGTERM arrives as a KeyboardInterrupt too (cli.main), so `kill PID` stops as cleanly as Ctrl-C
        result = run_sweep(sweep, out, jobs=args.jobs, threads=args.threads, ray_address=args.ray, device=device,
                           progress=progress_enabled(args), validate=False,
                           force=args.force, cache=args.cache, on_result=on_result)
    except KeyboardInterrupt:
        print(f"preimage sweep: interrupted; {finished['n']} run(s) finished and cached in {runs_dir}. "
              "Run the same command again to compute the rest.", file=sys.stderr)
        return 130
    finally:
        log.removeHandler(quiet_log)
        if saved_limit is None:
            os.environ.pop("PREIMAGE_MAX_MEMORY", None)
        else:
            os.environ["PREIMAGE_MAX_MEMORY"] = saved_limit
    say(args, f"{len(result.computed)} computed, {len(result.cached)} cached, {len(result.failed)} failed "
              f"in {result.seconds:.0f} s")
    for key, msg in result.failed.items():
        print(f"preimage sweep: run {key} failed: {msg}", file=sys.stderr)
    if args.report:
        from ..report import write_report

        paths = write_report(out)
        say(args, f"report: {paths['html']}")
    else:
        say(args, f"next: preimage report {out}")
    print(out)
    return 1 if result.failed else 0
