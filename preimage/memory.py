"""A memory guard: estimate what a run needs before allocating it, and refuse in one line.

A run that needs more memory than the machine has is otherwise killed by the kernel (exit 137, no
message) after minutes of swapping. Before a run starts, :func:`check_fits` estimates its peak:

    need ≈ B · A(S) · k  +  B · 3 · S² · 4 bytes · 8  +  P

where ``A(S)`` is the bytes of every leaf module's output for one image at side ``S`` (measured once
per model by a forward pass at the model's own input size and scaled by ``(S / S_model)²``, since
convolutional activations grow with the pixel count), ``k = 2`` when gradients flow back through the
network (the activations are kept for backward, and their gradients are as large), the image term
covers the image, its gradient, the optimizer's state and the copies the loop keeps, and ``P`` is the
model's parameters and buffers. The limit is the memory available now (``MemAvailable`` on Linux;
free GPU memory on CUDA), overridden by ``PREIMAGE_MAX_MEMORY`` or the CLI's ``--max-memory``
(``8G``, ``500M``, ``off``).
"""
from __future__ import annotations

import contextlib
import os
import re
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import PreimageError

if TYPE_CHECKING:
    from .models import Model

__all__ = ["parse_size", "format_size", "memory_limit", "estimate_bytes", "check_fits", "limit"]

ENV = "PREIMAGE_MAX_MEMORY"
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}
_override: list[int | None] = []  # innermost limit() context last; None means "off"


def parse_size(text: str | int | float) -> int | None:
    """``"8G"`` -> bytes (binary units: K, M, G, T; a trailing ``B``/``iB`` is allowed); ``"off"`` ->
    None (no limit)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text <= 0:
            raise PreimageError(f"memory limit must be > 0, not {text!r}")
        return int(text)
    t = str(text).strip().upper().replace(" ", "")
    if t in ("OFF", "NONE", "0"):
        return None
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)([KMGT]?)(I?B)?", t)
    if not m or float(m.group(1)) <= 0:
        raise PreimageError(f"memory limit {text!r} is not a size such as 8G, 500M or off")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def format_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


@contextlib.contextmanager
def limit(size: str | int | None) -> Iterator[None]:
    """Within the block, use this limit (``None``: keep the default; ``"off"``: no limit)."""
    if size is None:
        yield
        return
    _override.append(parse_size(size))
    try:
        yield
    finally:
        _override.pop()


def _available_cpu() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_limit(device: Any = "cpu") -> tuple[int | None, str]:
    """``(bytes or None for no limit, where the limit comes from)``."""
    if _override:
        return _override[-1], "--max-memory"
    if os.environ.get(ENV):
        return parse_size(os.environ[ENV]), ENV
    if str(device).startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free), f"free memory on {device}"
    return _available_cpu(), "available memory"


#: net -> {input size: activation bytes}; held weakly, so a freed model's entry goes with it
_ACTIVATIONS: "weakref.WeakKeyDictionary[Any, dict[int, int]]" = weakref.WeakKeyDictionary()


def _activation_bytes(model: "Model") -> int:
    """Bytes of every leaf module's output for one image at the model's input size (measured once)."""
    import torch

    cache = _ACTIVATIONS.setdefault(model.net, {})
    if int(model.input_size) in cache:
        return cache[int(model.input_size)]
    total = [0]

    def hook(_m, _i, out) -> None:
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                total[0] += t.numel() * t.element_size()

    leaves = [m for m in model.net.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            s = int(model.input_size)
            x = torch.zeros(1, int(getattr(model, "channels", 3) or 3), s, s, device=model.device)
            model(x)
    except Exception:  # a model that does not run at its own size is reported by the task itself
        total[0] = 0
    finally:
        for h in handles:
            h.remove()
    cache[int(model.input_size)] = total[0]
    return total[0]


def estimate_bytes(model: "Model | None", *, batch: int, size: int, backward: bool = True) -> int:
    """Estimated peak bytes of optimizing (``backward``) or evaluating ``batch`` images of side
    ``size`` through ``model`` (see the module docstring for the formula)."""
    image = batch * int(getattr(model, "channels", 3) or 3) * size * size * 4 * 8
    if model is None:
        return image
    act = _activation_bytes(model) * (size / max(1, int(model.input_size))) ** 2
    params = sum(p.numel() * p.element_size() for p in model.net.parameters())
    params += sum(b.numel() * b.element_size() for b in model.net.buffers())
    return int(batch * act * (2 if backward else 1) + image + params)


def check_fits(model: "Model | None", *, batch: int, size: int, what: str, backward: bool = True,
               hint: str = "", device: Any = None, parallel: int = 1) -> int:
    """Raise :class:`PreimageError` when the estimate exceeds the limit; return the estimate.
    ``parallel``: how many such runs go at once, each in its own process with its own copy of the
    model (a sweep's ``jobs``): the need is that many times one run's."""
    dev = device if device is not None else (model.device if model is not None else "cpu")
    cap, source = memory_limit(dev)
    if cap is None:
        return 0
    need = estimate_bytes(model, batch=batch, size=size, backward=backward) * max(1, int(parallel))
    if need > cap:
        fix = f"{hint}, or " if hint else ""
        raise PreimageError(
            f"{what} needs about {format_size(need)} of memory, more than the {format_size(cap)} {source} "
            f"allows; {fix}raise the limit with --max-memory SIZE (or {ENV}=SIZE; 'off' disables the check)")
    return need
