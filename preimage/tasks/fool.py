"""Fooling images: change a photo a little until the network calls it something else.

Szegedy et al. 2014 ("Intriguing properties of neural networks") showed that an imperceptible change
flips a classifier's decision. The recipe here runs on the engine's one loop (``optimize``) over a
:class:`~preimage.params.Pixels` image in [0, 1] RGB:

- ``mode="l2"`` (default; as in the CS231n assignment): gradient ascent on the target score,
  each step ``x ← clip(x + lr · g / ‖g‖₂, 0, 1)`` with ``g = ∂S_target/∂x`` (``lr`` = 25 levels,
  the L2 length of one step in 8-bit units, 0.1 in [0, 1] units), until the top-1 class is
  the target or ``max_steps`` is reached. (The normalization is the loop's ``grad_hook``; the
  optimizer is plain SGD without momentum.)
- ``mode="pgd"`` (Madry et al. 2018): an L∞-bounded attack, ``x ← Π(x + α · sign(g))`` where Π
  projects onto ``‖x - x0‖∞ ≤ ε`` and [0, 1] (the parameter's bounds).
- ``target=None`` is the untargeted version: descend on the score of the original class until the
  top-1 class changes.

Each image stops moving once it is fooled (its term is masked to zero), and the loop stops when
every image in the batch is fooled. With ``quantize=True`` (default) the network sees the image
rounded to 8 bits at every step (a straight-through estimator: the gradient passes the rounding
unchanged), so what is fooled is exactly the PNG that is saved. Either way the result reports a
**quantization check**: the PNG bytes are decoded again and classified.

Sizes of the change are reported in 8-bit pixel levels (0..255): ``L2 = ‖255 (x - x0)‖₂`` and
``L∞ = max |255 (x - x0)|``. Example::

    preimage fool sample:chelsea --target "tarantula" --out out/fool
"""
from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import PreimageError
from ..images import conversion_notes, encode_png, load_batch, save_image, to_channels, to_tensor
from ..io import all_or_nothing
from ..layers import LOGITS
from ..models import Model, check_model
from ..objectives import Objective, State, class_score
from ..optimize import Step, optimize
from ..params import Pixels
from .classify import predict

__all__ = ["fool", "FoolResult", "MODES", "png_roundtrip", "output_paths"]

MODES = ("l2", "pgd")


class _Quantized(Pixels):
    """Pixels the network sees rounded to 8 bits (straight-through gradient)."""

    def forward(self) -> torch.Tensor:
        x = self.x
        return x + (torch.round(x * 255.0) / 255.0 - x).detach()


def png_roundtrip(pixels: torch.Tensor) -> torch.Tensor:
    """Each image encoded as an 8-bit PNG and decoded again (what a reader of the saved file gets)."""
    from PIL import Image

    return torch.cat([to_channels(to_tensor(Image.open(io.BytesIO(encode_png(p.cpu()))).convert("RGB")), p.shape[0])
                      for p in pixels])


@dataclass
class FoolResult:
    """One row per image; sizes in 8-bit levels. ``fooled`` is what is saved (8-bit when quantized)."""

    original: torch.Tensor
    fooled: torch.Tensor
    names: list[str]
    mode: str
    targeted: bool
    target: list[int]  # the target class (targeted) or the original class to move away from
    original_class: list[int]
    final_class: list[int]
    success: list[bool]
    iterations: list[int]
    confidence: list[float]  # probability of the final top-1 class
    target_prob: list[float]  # probability of the target class at the end (targeted mode)
    l2: list[float]
    linf: list[float]
    png_class: list[int]  # top-1 class of the saved PNG decoded again
    png_ok: list[bool]  # that PNG is still fooled
    class_names: tuple[str, ...] = ()
    history: list[dict[str, float]] = field(default_factory=list)
    settings: dict[str, object] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)  # the images as given (paths: conversion notes)
    seconds: float = 0.0

    def name_of(self, c: int) -> str:
        return self.class_names[c] if self.class_names else str(c)

    def rows(self) -> list[dict[str, object]]:
        out = []
        for i, n in enumerate(self.names):
            out.append({
                "name": n, "original_class": self.original_class[i], "original_name": self.name_of(self.original_class[i]),
                "target": self.target[i] if self.targeted else None,
                "target_name": self.name_of(self.target[i]) if self.targeted else None,
                "final_class": self.final_class[i], "final_name": self.name_of(self.final_class[i]),
                "success": self.success[i], "iterations": self.iterations[i],
                "confidence": self.confidence[i], "target_prob": self.target_prob[i] if self.targeted else None,
                "l2": self.l2[i], "linf": self.linf[i],
                "png_class": self.png_class[i], "png_name": self.name_of(self.png_class[i]), "png_ok": self.png_ok[i],
            })
        return out

    @all_or_nothing()
    def save(self, out_dir: str | os.PathLike, *, force: bool = False, magnify: float | None = None) -> list[Path]:
        """Per image: ``NAME_fooled.png`` (the 8-bit result), ``NAME_diff.png`` (the change,
        magnified; the factor is in the manifest), ``NAME_fool.png`` (original | fooled | difference);
        and ``fool.json``."""
        from ..io import check_outputs, versions, write_json
        from ..viz import difference, grid

        out = Path(out_dir)
        check_outputs(output_paths(out, self.names), force)
        written: list[Path] = []
        rows = self.rows()
        for i, (n, row) in enumerate(zip(self.names, rows)):
            written.append(save_image(self.fooled[i], out / f"{n}_fooled.png"))
            diff, k = difference(self.original[i], self.fooled[i], magnify=magnify)
            row["diff_magnify"] = k
            written.append(save_image(diff, out / f"{n}_diff.png"))
            o, f = row["original_name"], row["final_name"]
            labels = [f"{o} (original)", f"{f} {self.confidence[i]:.0%}", f"difference x{k:.0f}"]
            written.append(save_image(grid([self.original[i], self.fooled[i], diff], labels=labels),
                                      out / f"{n}_fool.png"))
        manifest = {"task": "fool", **self.settings, "seconds": self.seconds, "images": rows,
                    "image_notes": conversion_notes(self.sources), "versions": versions()}
        written.append(write_json(out / "fool.json", manifest))
        return written


def output_paths(out_dir: str | os.PathLike, names: Sequence[str]) -> list[Path]:
    out = Path(out_dir)
    return [out / f"{n}{s}.png" for n in names for s in ("_fooled", "_diff", "_fool")] + [out / "fool.json"]


def _masked_score(index: list[int], targeted: bool, active: list[torch.Tensor]) -> Objective:
    """``-S_t`` (targeted) or ``+S_y`` (untargeted) for the images not fooled yet, 0 for the others.

    Which images are still active is decided from the logits of this same forward pass and kept
    in ``active[0]`` for the loop's callback."""
    base = class_score(index)

    def fn(s: State) -> torch.Tensor:
        logits = s.features[LOGITS].reshape(s.features[LOGITS].shape[0], -1).detach()
        idx = torch.as_tensor(index, device=logits.device)
        top = logits.argmax(1)
        still = (top != idx) if targeted else (top == idx)
        active[0] = still
        score = base.terms(s)["score"]
        return still.to(score.dtype) * (score if targeted else -score)

    return Objective(fn, "target" if targeted else "away", [LOGITS])


def check_pgd(epsilon: float, step_size: float) -> None:
    """PGD's radius and step, both in 8-bit levels: a radius of 255 or more leaves every pixel free, one
    under a level (ε = 8/255 given as 0.03) cannot change the saved 8-bit image, and a step larger than
    the radius leaves the ball at every step."""
    if epsilon > 255:
        raise PreimageError(f"epsilon {epsilon:g} is more than 255 8-bit levels: every pixel would be free (an "
                            f"L-infinity radius is at most 255)")
    if epsilon < 1:
        raise PreimageError(f"epsilon {epsilon:g} is under one 8-bit level, which the saved image cannot hold "
                            f"(epsilon is in levels: 8/255 in [0, 1] units is epsilon 8)")
    if step_size > epsilon:
        raise PreimageError(f"step size {step_size:g} is larger than epsilon {epsilon:g}: every step would leave "
                            f"the ball")


def fool(
    model: Model,
    images: torch.Tensor | str | os.PathLike | Sequence[str | os.PathLike],
    *,
    target: int | str | Sequence[int | str] | None = None,
    mode: str = "l2",
    lr: float = 25.0,
    max_steps: int = 100,
    epsilon: float = 8.0,
    step_size: float = 1.0,
    quantize: bool = True,
    progress: bool = False,
    names: Sequence[str] | None = None,
) -> FoolResult:
    """Fool ``model`` on ``images`` (a ``B x 3 x H x W`` [0, 1] tensor, a Pillow
    image, an ``H x W x 3`` numpy array, or paths / ``sample:NAME``).

    Args:
        target: class index or (fuzzy) name, one for all images or one per image; ``None``:
            untargeted (leave the originally predicted class).
        mode: ``"l2"`` (normalized gradient steps of L2 length ``lr`` 8-bit levels) or ``"pgd"``
            (sign steps of ``step_size`` 8-bit levels inside an L∞ ball of radius ``epsilon`` levels).
        max_steps: the iteration cap.
        quantize: optimize the 8-bit image the PNG will hold (straight-through rounding).
        progress: show a progress bar.
        names: output file stems, one per image (default: from the sources).
    """
    check_model(model)
    import time

    if model.classes is None:
        raise PreimageError(f"{model.name} is not a classifier; fooling needs class scores")
    if mode not in MODES:
        from ..errors import did_you_mean

        raise PreimageError(f"unknown mode {mode!r}" + did_you_mean(mode, MODES) + f"; choose from {', '.join(MODES)}")
    if max_steps < 1:
        raise PreimageError("max steps must be at least 1")
    if lr <= 0 or step_size <= 0 or epsilon <= 0:
        raise PreimageError("lr, step size and epsilon must be > 0")
    if mode == "pgd":
        check_pgd(epsilon, step_size)
    x0, default_names, sources = load_batch(images, model.input_size, channels=model.channels)
    x0 = x0.clamp(0, 1)
    x0 = x0.to(model.device)
    b = x0.shape[0]
    names = list(names) if names is not None else default_names
    if len(names) != b:
        raise PreimageError(f"{len(names)} names for {b} images")
    start = time.perf_counter()
    with torch.no_grad():
        original = predict(model, x0).argmax(1).tolist()
    targeted = target is not None
    if not targeted:
        goal = original
    elif isinstance(target, (int, str)):
        goal = [model.class_index(target)] * b
    else:
        goal = [model.class_index(t) for t in target]
        if len(goal) != b:
            raise PreimageError(f"{len(goal)} targets for {b} images")

    if mode == "pgd":
        eps = epsilon / 255.0
        bounds = ((x0 - eps).clamp(0, 1), (x0 + eps).clamp(0, 1))
        lr_step = step_size / 255.0
    else:
        bounds, lr_step = (0.0, 1.0), lr / 255.0
    param = (_Quantized if quantize else Pixels)(x0, bounds=bounds)  # type: ignore[arg-type]
    active: list[torch.Tensor] = [torch.ones(b, dtype=torch.bool)]
    counts = torch.zeros(b, dtype=torch.long)

    def grad_hook(p: Pixels) -> None:
        g = p.x.grad
        if mode == "pgd":
            g.copy_(g.sign())
        else:
            norms = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            g.div_(norms)

    def watch(step: Step) -> bool:
        still = active[0].cpu()
        counts.add_(still.long())
        return not bool(still.any())

    objective = _masked_score(goal, targeted, active)
    result = optimize(param, objective, model, steps=max_steps, optimizer="sgd", momentum=0.0, lr=lr_step,
                      grad_hook=grad_hook, callbacks=[watch], progress=progress,
                      progress_desc=f"fool ({mode})")
    if result.status == "diverged":
        raise PreimageError(f"fooling diverged: {result.message}")
    fooled = result.image.clamp(0, 1)
    iterations = counts.clone()  # steps in which each image moved (a fooled image stops moving)
    with torch.no_grad():
        probs = predict(model, fooled)
        png = png_roundtrip(fooled).to(model.device)
        png_probs = predict(model, png)
    final = probs.argmax(1).tolist()
    png_cls = png_probs.argmax(1).tolist()
    ok = (lambda c, i: c == goal[i]) if targeted else (lambda c, i: c != goal[i])
    delta = (fooled - x0) * 255.0
    return FoolResult(
        original=x0.cpu(), fooled=fooled.cpu(), names=names, mode=mode, targeted=targeted, target=goal,
        original_class=original, final_class=final,
        success=[ok(c, i) for i, c in enumerate(final)],
        iterations=[int(v) for v in iterations],
        confidence=[float(probs[i, c]) for i, c in enumerate(final)],
        target_prob=[float(probs[i, g]) for i, g in enumerate(goal)],
        l2=[float(v) for v in delta.flatten(1).norm(dim=1)],
        linf=[float(v) for v in delta.flatten(1).abs().amax(1)],
        png_class=png_cls, png_ok=[ok(c, i) for i, c in enumerate(png_cls)],
        class_names=tuple(model.classes), history=result.history, seconds=time.perf_counter() - start,
        settings={"model": model.name, "mode": mode, "targeted": targeted, "lr": lr, "max_steps": max_steps,
                  "epsilon": epsilon if mode == "pgd" else None, "step_size": step_size if mode == "pgd" else None,
                  "quantize": quantize, "status": result.status, "steps_run": result.steps},
        sources=sources,
    )
