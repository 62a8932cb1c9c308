"""The one optimization loop: hold the network still and move the image.

``optimize(param, objective, model, steps=..., optimizer=..., ...)`` repeats

    image = param()                      # pixels, Fourier, ... (params.py)
    input = model.normalize(image)       # or the param already lives in input space
    feats = extractor(transform(input))  # only the layers the objective reads; stops at the deepest
    loss  = objective(State(...))        # one value per image, summed for backward
    optimizer.step(); param.project_(); callbacks

Every task (inversion, class visualization, fooling images, style transfer) is a recipe over this
loop. It detects non-finite values at once and restores the last finite image (``status =
"diverged"``), stops cleanly on Ctrl-C (``"interrupted"``) or when a callback asks (``"stopped"``),
and records every term at every step.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .errors import PreimageError
from .layers import FeatureExtractor
from .models import Model, check_model
from .objectives import Objective, State
from .params import ImageParam
from .transforms import Transform, compose

__all__ = ["optimize", "Result", "Step", "make_optimizer", "step_schedule", "moved_milestones", "forward_state"]


@dataclass
class Step:
    """What callbacks receive after each step."""

    step: int
    loss: float
    terms: dict[str, float]
    param: ImageParam
    state: State


@dataclass
class Result:
    """The outcome of :func:`optimize`.

    ``image``: final image in [0, 1] RGB units (``B x 3 x H x W``, not clamped); ``history``: one
    dict per step with ``loss`` and every named term (batch means); ``status``: ``"done"``,
    ``"stopped"`` (a callback ended it), ``"diverged"`` (non-finite values; ``image`` is the last
    finite one; ``diverged_term`` names the objective term that became non-finite first, or
    ``"loss"`` when only their sum or the gradient did, ``"step"`` when the optimizer step did) or
    ``"interrupted"`` (Ctrl-C or SIGTERM); ``message``: why it ended early (empty when done);
    ``steps``: the steps taken; ``seconds``: wall time; ``per_image_loss``: the last step's loss of
    each image; ``frames``: snapshots when asked for.
    """

    image: torch.Tensor
    history: list[dict[str, float]]
    steps: int
    status: str = "done"
    message: str = ""
    seconds: float = 0.0
    frames: list[torch.Tensor] = field(default_factory=list)
    per_image_loss: list[float] = field(default_factory=list)
    diverged_term: str = ""  # the objective term that became non-finite first ("step": the update itself)

    @property
    def ok(self) -> bool:
        return self.status in ("done", "stopped")


def make_optimizer(name: str, params: Sequence[torch.Tensor], lr: float, momentum: float = 0.9,
                   betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    """``"sgd"`` (with momentum), ``"adam"`` or ``"lbfgs"`` (strong Wolfe line search)."""
    name = name.lower()
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas)
    if name == "lbfgs":
        return torch.optim.LBFGS(params, lr=lr, max_iter=1, history_size=20, line_search_fn="strong_wolfe")
    raise PreimageError(f"unknown optimizer {name!r} (sgd, adam, lbfgs)")


def step_schedule(milestones: Sequence[int], gamma: float = 0.1) -> Callable[[torch.optim.Optimizer], object]:
    """Multiply the learning rate by ``gamma`` at each milestone step."""
    return lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(milestones), gamma=gamma)


def moved_milestones(milestones: Sequence[int], before: int, after: int) -> tuple[int, ...]:
    """``milestones`` of a run of ``before`` steps placed in one of ``after`` steps as they were (480 of
    600: 240 of 300); as they are when either count is not positive or the two are equal."""
    if before <= 0 or after <= 0 or before == after:
        return tuple(milestones)
    return tuple(max(1, round(s * after / before)) for s in milestones)


def forward_state(param: ImageParam, model: Model, extractor: FeatureExtractor | None,
                  transform: Transform | None = None, generator: torch.Generator | None = None,
                  step: int = 0) -> State:
    """One forward pass of the engine: image, network input and the requested activations."""
    out = param()
    if param.space == "input":
        x_in, image = out, None  # the image is computed only if an objective reads it
    else:
        image, x_in = out, model.normalize(out)
    x_t = transform(x_in, generator) if transform is not None else x_in
    feats = extractor(x_t) if extractor is not None else {}
    return State(image=image, input=x_in, features=feats, step=step, to_image=model.denormalize)


def optimize(
    param: ImageParam,
    objective: Objective,
    model: Model,
    *,
    steps: int,
    optimizer: str | Callable[[list[torch.Tensor]], torch.optim.Optimizer] = "adam",
    lr: float = 0.05,
    momentum: float = 0.9,
    schedule: Callable[[torch.optim.Optimizer], object] | None = None,
    transforms: Sequence[Transform] = (),
    transform_steps: int | None = None,
    generator: torch.Generator | None = None,
    callbacks: Sequence[Callable[[Step], bool | None]] = (),
    grad_hook: Callable[[ImageParam], None] | None = None,
    progress: bool = False,
    progress_desc: str = "optimizing",
    frame_every: int = 0,
) -> Result:
    """Minimize ``objective`` over ``param`` for ``steps`` steps. See the module docstring.

    Args:
        param: the image parametrization (:mod:`preimage.params`), updated in place.
        objective: the loss to minimize (one value per image, see :class:`Objective`).
        model: from :func:`preimage.load_model`; sees ``param``'s image, normalized.
        steps: the number of optimizer steps (0 returns the starting image).
        optimizer: ``"sgd"``, ``"adam"``, ``"lbfgs"`` or a factory ``params -> Optimizer``.
        lr, momentum: the built-in optimizers' learning rate, and SGD's momentum.
        schedule: a factory ``optimizer -> scheduler`` (see :func:`step_schedule`), stepped once per step.
        transforms: random transforms of the network input, drawn from ``generator`` (default: a
            generator seeded with 0, so runs repeat).
        transform_steps: apply ``transforms`` in the first ``transform_steps`` steps only (``None``: in
            every step); the steps after see the image as it is.
        callbacks: called after each step; returning True stops the loop (``status="stopped"``).
        grad_hook: called after backward, before the optimizer step (e.g. gradient normalization).
        progress: show progress on stderr with every loss term (a tqdm bar on a terminal, a plain
            line every tenth of the steps otherwise; see :mod:`preimage.progress`), labelled
            ``progress_desc``.
        frame_every: keep a snapshot of the image every N steps (and the last one).
    """
    check_model(model)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise PreimageError(f"steps must be a whole number >= 0, not {steps!r}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    extractor = FeatureExtractor(model, objective.layers) if objective.layers else None
    transform = compose(list(transforms)) if transforms else None
    params = [p for p in param.parameters() if p.requires_grad]
    opt = make_optimizer(optimizer, params, lr, momentum) if isinstance(optimizer, str) else optimizer(params)
    is_lbfgs = isinstance(opt, torch.optim.LBFGS)
    scheduler = schedule(opt) if schedule is not None else None

    history: list[dict[str, float]] = []
    frames: list[torch.Tensor] = []
    last_good = [p.detach().clone() for p in params]
    status, message, diverged = "done", "", ""
    bar = None
    if progress:
        from .progress import progress_bar  # a bar on a terminal, plain lines in a log

        bar = progress_bar(steps, progress_desc, "step", leave=False)
    start = time.perf_counter()
    step = 0
    per_image: torch.Tensor | None = None
    try:
        for step in range(1, steps + 1):
            box: dict[str, object] = {}

            def closure() -> torch.Tensor:
                opt.zero_grad(set_to_none=True)
                tf = transform if transform_steps is None or step <= transform_steps else None
                state = forward_state(param, model, extractor, tf, generator, step)
                terms = objective.terms(state)
                per = torch.stack(list(terms.values())).sum(0)
                loss = per.sum()
                if torch.isfinite(loss):
                    loss.backward()
                    if grad_hook is not None:
                        grad_hook(param)
                box.update(state=state, terms=terms, per=per, loss=loss)
                return loss

            if is_lbfgs:
                opt.step(closure)
            else:
                closure()
            loss_value = float(box["loss"].detach())  # type: ignore[arg-type]
            cause = _nonfinite_cause(box["terms"], loss_value, params)  # type: ignore[arg-type]
            if cause is None and not is_lbfgs:
                opt.step()
            if cause is None and not _finite(params):
                cause = ("step", "the image became non-finite after the optimizer step (the step is too large)")
            if cause is not None:
                _restore(params, last_good)
                status, diverged = "diverged", cause[0]
                message = f"{cause[1]} at step {step}; the last finite image was kept"
                break
            param.project_()
            for p, keep in zip(params, last_good):
                keep.copy_(p.detach())
            terms = {k: float(v.detach().mean()) for k, v in box["terms"].items()}  # type: ignore[union-attr]
            record = {"step": step, "loss": loss_value / max(1, int(box["per"].shape[0])), **terms}  # type: ignore[union-attr]
            history.append(record)
            per_image = box["per"].detach()  # type: ignore[assignment]
            if scheduler is not None:
                scheduler.step()
            if frame_every and (step % frame_every == 0 or step == steps):
                frames.append(_image(param, model).cpu())
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.3g}" for k, v in terms.items()}, refresh=False)
            stop = False
            for cb in callbacks:
                stop = bool(cb(Step(step, record["loss"], terms, param, box["state"]))) or stop  # type: ignore[arg-type]
            if stop:
                status = "stopped"
                break
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM under the CLI (errors.Terminated)
        _restore(params, last_good)
        status, message = "interrupted", f"interrupted after {len(history)} steps"
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    done_steps = len(history)
    return Result(
        image=_image(param, model), history=history, steps=done_steps, status=status, message=message,
        seconds=seconds, frames=frames, diverged_term=diverged,
        per_image_loss=[float(v) for v in per_image] if per_image is not None else [],
    )


def _image(param: ImageParam, model: Model) -> torch.Tensor:
    with torch.no_grad():
        out = param()
        return (model.denormalize(out) if param.space == "input" else out).detach().clone()


def _nonfinite_cause(terms: dict[str, torch.Tensor], loss: float, params: Sequence[torch.Tensor]
                     ) -> tuple[str, str] | None:
    """``(term, sentence)`` naming what became non-finite first, in the objective's order, or None."""
    if not math.isfinite(loss):
        for name, value in terms.items():
            v = float(value.detach().sum())
            if not math.isfinite(v):
                return name, f"the {name!r} term became {v}"
        return "loss", f"the loss became {loss} (each term was finite: their weighted sum overflowed)"
    if not _grads_finite(params):
        return "loss", "the gradient of the loss became non-finite"
    return None


def _all_finite(t: torch.Tensor) -> bool:
    # A sum is finite only if every element is (one that overflows to inf is divergence too); it
    # costs a tenth of an element-wise isfinite(...).all() on the CPU.
    return math.isfinite(float(t.detach().sum()))


def _finite(params: Sequence[torch.Tensor]) -> bool:
    return all(_all_finite(p) for p in params)


def _grads_finite(params: Sequence[torch.Tensor]) -> bool:
    return all(p.grad is None or _all_finite(p.grad) for p in params)


@torch.no_grad()
def _restore(params: Sequence[torch.Tensor], saved: Sequence[torch.Tensor]) -> None:
    for p, s in zip(params, saved):
        p.copy_(s)
