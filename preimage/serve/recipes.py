"""Jobs of the web app: each one checks a request, then calls a task of :mod:`preimage.tasks`.

No algorithm lives here. A request is checked completely before it is queued (model name in the
zoo, bundled photo or upload id, steps and sizes in range, preset, method and layer spelling, only
the fields its kind uses, a depth strip only of a network with stages); the
task itself reports what needs the loaded model (an unknown layer or class, with its did-you-mean),
and that line becomes the job's message. Live frames, step counts and cancellation go through the
engine's callbacks (:meth:`preimage.serve.jobs.JobContext.step_callback`).

Kinds: ``invert`` (feature inversion), ``depth`` (inversion at every stage of the model, one strip),
``dream`` (class visualization), ``saliency`` and ``style``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import PreimageError, did_you_mean
from ..recipes import INVERT_PRESET_NAMES
from .catalog import check_model, check_weights
from .jobs import JobContext

__all__ = ["KINDS", "prepare", "frame_every"]

KINDS = ("invert", "depth", "dream", "saliency", "style")
#: the inversion presets (the CLI's list)
INVERT_PRESETS = INVERT_PRESET_NAMES
DREAM_PRESETS = ("fourier", "classic")
#: the fields every kind takes: the page's shared settings (sent with every job)
SHARED_FIELDS = ("kind", "model", "weights", "input_size", "seed", "preview_every")
#: the fields each kind takes besides those; any other is refused
FIELDS = {
    "invert": ("image", "layer", "preset", "steps", "jitter_until"),
    "depth": ("image", "preset", "steps", "jitter_until"),
    "dream": ("classes", "preset", "steps"),
    "saliency": ("image", "method", "classes"),
    "style": ("image", "style_image", "layer", "style_layers", "preset", "steps"),
}
#: what the saliency tab offers: every method of ``preimage saliency`` (checked against it in the tests),
#: and ``all`` (every method the chosen model can run)
SALIENCY_METHODS = ("vanilla", "smoothgrad", "gradxinput", "gradcam", "gradcam++", "guided-backprop",
                    "guided-gradcam", "ig", "occlusion", "rollout", "all")


def frame_every(steps: int, asked: int | None) -> int:
    """Steps between live frames: as asked, or about 25 frames per run."""
    return max(1, asked if asked else steps // 25)


def _source(text: str | None, uploads: Any, what: str = "image") -> str:
    """``sample:NAME`` (a bundled photo) or ``upload:ID`` -> a source the tasks read. Nothing else:
    no path comes from a client."""
    from ..images import SAMPLES

    if not text:
        raise PreimageError(f"no {what} given: pick a bundled photo or upload one")
    kind, _, name = text.partition(":")
    if kind == "sample":
        if name not in SAMPLES:
            raise PreimageError(f"unknown bundled photo {name!r}" + did_you_mean(name, SAMPLES))
        return text
    if kind == "upload":
        return str(uploads.get(name).path)
    raise PreimageError(f"{what} must be sample:NAME or upload:ID, not {text!r}")


def _check_range(name: str, value: int | None, low: int, high: int) -> None:
    if value is not None and not low <= value <= high:
        raise PreimageError(f"{name} must be between {low} and {high}, not {value}")


def _files(paths: list[Path], folder: Path) -> list[str]:
    return [str(Path(p).relative_to(folder)) for p in paths]


def _check_fields(req: Any) -> None:
    """Refuse a field the kind does not use (``null``, ``""`` and ``[]`` count as not sent)."""
    takes = (*SHARED_FIELDS, *FIELDS[req.kind])
    for name in type(req).model_fields:  # in the order of the request's fields: the first is named
        if name in req.model_fields_set and name not in takes and getattr(req, name) not in (None, "", []):
            raise PreimageError(f"{name!r} does not apply to a {req.kind} job "
                                f"(its own fields: {', '.join(FIELDS[req.kind])})")


def prepare(req: Any, config: Any, uploads: Any) -> tuple[str, dict[str, Any], Callable[[JobContext], dict[str, Any]]]:
    """Check a request (a :class:`preimage.serve.app.JobRequest`) and return ``(title, params, run)``."""
    if req.kind not in KINDS:
        raise PreimageError(f"unknown job kind {req.kind!r}" + did_you_mean(req.kind, KINDS))
    _check_fields(req)
    check_model(req.model)
    check_weights(req.model, req.weights)
    _check_range("steps", req.steps, 1, config.max_steps)
    _check_range("input size", req.input_size, 16, config.max_input_size)
    _check_range("preview interval", req.preview_every, 1, config.max_steps)
    params = {k: v for k, v in req.model_dump().items() if v not in (None, [], "")}
    return {"invert": _invert, "depth": _depth, "dream": _dream, "saliency": _saliency,
            "style": _style}[req.kind](req, config, uploads, params)


# -- invert and depth ---------------------------------------------------------------------------

def _invert_checks(req: Any, config: Any, uploads: Any) -> tuple[str, str]:
    from ..layers import parse_layer_spec

    source = _source(req.image, uploads)
    preset = req.preset or ("shallow" if req.model in ("hog", "dsift") else "default")
    if preset not in INVERT_PRESETS:
        raise PreimageError(f"unknown inversion preset {preset!r}" + did_you_mean(preset, INVERT_PRESETS))
    if req.kind == "invert":
        if not req.layer:
            raise PreimageError("no layer given: pick one from the list")
        parse_layer_spec(req.layer)
    return source, preset


def _invert(req: Any, config: Any, uploads: Any, params: dict[str, Any]):
    source, preset = _invert_checks(req, config, uploads)

    def run(ctx: JobContext) -> dict[str, Any]:
        from ..tasks.invert import config_for, invert

        cfg = config_for(preset, steps=req.steps, seed=req.seed, jitter_until=req.jitter_until)
        model = ctx.models.get(req.model, req.weights, req.input_size)
        every = frame_every(cfg.steps, req.preview_every)
        ctx.progress(total=cfg.steps, phase=req.layer)
        res = invert(model, [source], layers=[req.layer], config=cfg,
                     callbacks=[ctx.step_callback(model, every=every)])
        ctx.frame(res.image[0], res.result.steps)
        paths = res.save(ctx.folder)
        name = res.names[0]
        message = ""
        if res.status == "diverged":
            message = f"diverged: {res.result.message}; try a smaller learning rate or the default preset"
        return {"status": res.status, "message": message, "files": _files(paths, ctx.folder),
                "image": f"{name}.png", "compare": f"{name}_compare.png", "manifest": "manifest.json",
                "metrics": res.metrics[0], "steps_run": res.result.steps,
                "final_terms": res.history[-1] if res.history else {}}

    return f"invert {req.model}:{req.layer}", params, run


def _depth(req: Any, config: Any, uploads: Any, params: dict[str, Any]):
    from ..models.shallow import is_shallow_name

    if is_shallow_name(req.model):
        raise PreimageError(f"a depth strip needs a deep network; {req.model} is a single stage: invert it instead")
    source, preset = _invert_checks(req, config, uploads)

    def run(ctx: JobContext) -> dict[str, Any]:
        from ..images import save_image
        from ..io import write_json
        from ..tasks.invert import config_for, invert
        from ..viz import grid
        from .catalog import stages

        cfg = config_for(preset, steps=req.steps, seed=req.seed, jitter_until=req.jitter_until)
        model = ctx.models.get(req.model, req.weights, req.input_size)
        layers = stages(model)
        if not layers:
            raise PreimageError(f"a depth strip needs a deep network; {req.model} has no stages to invert")
        every = frame_every(cfg.steps, req.preview_every)
        ctx.progress(total=cfg.steps * len(layers))
        images, labels, rows, paths = [], [], [], []
        reference = None
        for i, layer in enumerate(layers):
            ctx.check()
            ctx.progress(phase=f"{layer} ({i + 1}/{len(layers)})")
            res = invert(model, [source], layers=[layer], config=cfg,
                         callbacks=[ctx.step_callback(model, every=every, offset=i * cfg.steps)])
            reference = res.reference[0]
            images.append(res.image[0])
            m = res.metrics[0]
            labels.append(layer)
            rows.append({"layer": layer, "status": res.status, "steps_run": res.result.steps, **m})
            paths.append(save_image(res.image[0], ctx.folder / f"{i:02d}_{layer}.png"))
            ctx.frame(res.image[0], (i + 1) * cfg.steps)
            if res.status != "done":
                break
        strip = grid([reference, *images], labels=["original", *labels], ncols=len(images) + 1)
        paths.append(save_image(strip, ctx.folder / "depth_strip.png"))
        paths.append(write_json(ctx.folder / "manifest.json", {
            "task": "depth", "model": req.model, "weights": req.weights, "image": req.image, "preset": preset,
            "config": cfg.as_dict(), "stages": rows}))
        status = rows[-1]["status"] if rows else "done"
        return {"status": status, "files": _files(paths, ctx.folder), "image": "depth_strip.png",
                "manifest": "manifest.json", "stages": rows}

    return f"depth strip {req.model}", params, run


# -- visualize ------------------------------------------------------------------------------

def _dream(req: Any, config: Any, uploads: Any, params: dict[str, Any]):
    from ..tasks.classviz import make_config

    preset = req.preset or "fourier"
    if preset not in DREAM_PRESETS:
        raise PreimageError(f"unknown visualization preset {preset!r}" + did_you_mean(preset, DREAM_PRESETS))
    make_config(preset, steps=req.steps)
    targets = [t.strip() for t in (req.classes or []) if t.strip()]
    if not targets:
        raise PreimageError("no class given: type a class name or index")
    if len(targets) > 8:
        raise PreimageError(f"at most 8 classes at once, not {len(targets)}")
    targets = [int(t) if t.isdigit() else t for t in targets]

    def run(ctx: JobContext) -> dict[str, Any]:
        from ..tasks.classviz import visualize_class

        model = ctx.models.get(req.model, req.weights, req.input_size)
        steps = req.steps or make_config(preset).steps
        ctx.progress(total=steps, phase="class " + ", ".join(map(str, targets)))
        res = visualize_class(model, targets, preset=preset, seed=req.seed, steps=req.steps,
                              callbacks=[ctx.step_callback(model, every=frame_every(steps, req.preview_every))])
        ctx.frame(res.image[0], len(res.history))
        paths = res.save(ctx.folder)
        return {"status": res.status, "files": _files(paths, ctx.folder), "image": "dream_grid.png",
                "manifest": "dream.json", "steps_run": len(res.history),
                "classes": [{"class": c, "name": n, "prob": p, "top1": t}
                            for c, n, p, t in zip(res.classes, res.class_names, res.prob, res.top1)]}

    return f"visualize {req.model}: {', '.join(map(str, targets))}", params, run


def _saliency(req: Any, config: Any, uploads: Any, params: dict[str, Any]):
    from ..tasks.saliency import methods_for, parse_methods

    source = _source(req.image, uploads)
    method = req.method or "all"
    methods = parse_methods(method)  # spelling checked before the job is queued
    if req.classes and len(req.classes) > 1:
        raise PreimageError(f"saliency explains one class at a time, not {len(req.classes)}")
    target = req.classes[0].strip() if req.classes and req.classes[0].strip() else None
    target = int(target) if target is not None and target.isdigit() else target

    def run(ctx: JobContext) -> dict[str, Any]:
        from dataclasses import replace

        from ..tasks.saliency import saliency

        model = ctx.models.get(req.model, req.weights, req.input_size)
        chosen = methods_for(model, method)
        ctx.progress(total=len(chosen))
        parts = []
        for i, name in enumerate(chosen):  # one method at a time, so that a cancel stops between two
            if ctx.cancelled:
                break
            ctx.progress(phase=name)
            parts.append(saliency(model, [source], target=target, method=name, seed=req.seed))
            ctx.progress(step=i + 1)
        if not parts:
            ctx.check()
        maps = {m: t for part in parts for m, t in part.maps.items()}
        res = replace(parts[0], maps=maps, settings={**{k: v for p in parts for k, v in p.settings.items()},
                                                     "methods": list(maps)},
                      completeness=next((p.completeness for p in parts if p.completeness), None))
        paths = res.save(ctx.folder)
        out = {"status": "done" if len(parts) == len(chosen) else "stopped",
               "files": _files(paths, ctx.folder), "image": "saliency_grid.png", "manifest": "saliency.json",
               "class": res.class_names[0], "prob": res.probs[0], "methods": list(maps),
               "predicted": model.classes[res.predicted[0]] if model.classes else None}
        if res.completeness and math.isfinite(res.completeness[0]["relative_gap"]):
            out["ig_relative_gap"] = res.completeness[0]["relative_gap"]
        return out

    return f"saliency {req.model}: {method if method == 'all' else ', '.join(methods)}", params, run


def _style(req: Any, config: Any, uploads: Any, params: dict[str, Any]):
    from ..tasks.style import STYLE_PRESETS, preset_for

    content = _source(req.image, uploads, "content image")
    style = _source(req.style_image, uploads, "style image")
    preset = req.preset or "auto"
    if preset != "auto" and preset not in STYLE_PRESETS:
        raise PreimageError(f"unknown style preset {preset!r}" + did_you_mean(preset, STYLE_PRESETS))
    fallback = preset == "auto" and preset_for(req.model) is None
    if fallback and not req.layer:
        raise PreimageError(f"no style preset for {req.model}: pick a content layer")
    overrides: dict[str, Any] = {}
    if req.layer and (fallback or req.style_layers):  # else the preset's own content layer
        overrides["content_layer"] = req.layer
    if req.style_layers:
        overrides["style_layers"] = tuple(req.style_layers)
    if req.input_size:
        overrides.update(image_size=req.input_size, style_size=req.input_size)

    def run(ctx: JobContext) -> dict[str, Any]:
        from ..tasks.style import stylize
        from .catalog import stages

        model = ctx.models.get(req.model, req.weights, None)
        if fallback and not req.style_layers:  # the model's stages up to the content layer carry the style
            found = stages(model)
            upto = found[: found.index(req.layer) + 1] if req.layer in found else found[:3]
            overrides["style_layers"] = tuple(upto or [req.layer])
        named = preset if preset != "auto" else (preset_for(req.model) or "efficientnet")
        ctx.progress(total=req.steps or STYLE_PRESETS[named].steps, phase="style")
        res = stylize(model, content, style, preset=preset, steps=req.steps, seed=req.seed,
                      callbacks=[ctx.step_callback(model, every=frame_every(req.steps or 200, req.preview_every))],
                      **overrides)
        ctx.frame(res.image[0], res.result.steps)
        paths = res.save(ctx.folder)
        return {"status": res.status, "message": res.result.message if res.status == "diverged" else "",
                "files": _files(paths, ctx.folder), "image": f"{res.name}.png", "compare": f"{res.name}_triptych.png",
                "manifest": f"{res.name}.json", "losses": res.losses, "steps_run": res.result.steps}

    return f"style {req.model}", params, run
