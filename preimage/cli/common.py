"""Options shared by several commands, and the helpers that turn them into objects.

Nothing heavy is imported here at module level (no torch, numpy or model zoo): ``preimage --help``
and argument errors answer before torch loads. Commands validate their inputs with
:func:`check_images` and the model name (automatically, for every command that uses
:func:`add_model_args`) before any model loads.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..errors import PreimageError
from ..validate import DEFAULT_MODEL, check_model_name

if TYPE_CHECKING:
    import torch

    from ..models import Model

__all__ = [
    "add_model_args", "add_output_args", "add_run_args", "model_from_args", "device_from_args",
    "positive_int", "positive_float", "nonneg_float", "nonneg_int", "progress_enabled", "say",
    "check_images", "check_model",
]


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return v


def nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return v


def _float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} must be finite")
    return v


def positive_float(text: str) -> float:
    v = _float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return v


def nonneg_float(text: str) -> float:
    v = _float(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return v


def float_list(text: str) -> tuple[float, ...]:
    """``0.5`` or ``0.485,0.456,0.406``: one number per channel (one number: every channel)."""
    parts = [t for t in text.replace(" ", "").split(",") if t]
    if not parts:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a comma-separated list of numbers")
    return tuple(_float(t) for t in parts)


def channel_count(text: str) -> int:
    if text not in ("1", "3"):
        raise argparse.ArgumentTypeError(f"{text!r}: channels must be 1 (grey) or 3 (RGB)")
    return int(text)


def readable_file(text: str) -> str:
    import os

    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    if not os.access(text, os.R_OK):
        raise argparse.ArgumentTypeError(f"cannot read {text}")
    return text


def add_model_args(p: argparse.ArgumentParser, default: str | None = DEFAULT_MODEL,
                   default_text: str | None = None) -> None:
    """``default_text``: what the help says the default is (when ``default`` is None because the
    command picks the model later, e.g. by preset)."""
    g = p.add_argument_group("model")
    g.add_argument("--model", "-m", default=default,
                   help=f"zoo name (`preimage models`), timm:NAME[,key=value,...] (options for "
                        f"timm.create_model), or an ONNX file PATH.onnx (default: {default_text or default})")
    g.add_argument("--weights", default="default",
                   help="'default' (embedded, or download to the torchvision/timm cache), 'none' (random init), "
                        "or a local state_dict PATH (default: default)")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    g.add_argument("--input-size", "--input_size", dest="input_size", type=positive_int, default=None,
                   help="input size in pixels (default: the model's own)")
    o = p.add_argument_group("ONNX files (flags win over the sidecar PATH.json next to PATH.onnx, which wins "
                             "over the graph's input shape; docs/models.md)")
    o.add_argument("--mean", type=float_list, default=None, metavar="M[,M,M]",
                   help="input mean per channel in [0, 1] units (default: ImageNet's for 3 channels, 0 for 1)")
    o.add_argument("--std", type=float_list, default=None, metavar="S[,S,S]",
                   help="input std per channel (default: ImageNet's for 3 channels, 1 for 1)")
    o.add_argument("--channels", type=channel_count, default=None,
                   help="1 (grey) or 3 (RGB) (default: the graph's input, else 3)")
    o.add_argument("--classes", type=readable_file, default=None, metavar="FILE",
                   help="class names, one per line (default: 0..K-1 for K outputs)")
    add_memory_arg(g)
    p.set_defaults(_check_model=True)  # cli.main checks --model (did-you-mean) before run()


def add_memory_arg(p) -> None:
    """``--max-memory``: the limit of the memory guard (see :mod:`preimage.memory`)."""
    if any("--max-memory" in a.option_strings for a in getattr(p, "_actions", [])):
        return
    p.add_argument("--max-memory", dest="max_memory", metavar="SIZE", default=None,
                   help="refuse runs estimated to need more memory than this, e.g. 8G, 500M, or 'off' "
                        "(default: the memory available now; env PREIMAGE_MAX_MEMORY)")


def add_output_args(p: argparse.ArgumentParser, default: str) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--out", "-o", default=default, help=f"output folder (default: {default})")
    g.add_argument("--force", action="store_true", help="overwrite existing outputs")


def add_run_args(p: argparse.ArgumentParser, seed: int = 0, seed_text: str | None = None) -> None:
    """``seed_text``: what the help says the default seed is (default: ``seed``)."""
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=seed, help=f"random seed (default: {seed_text or seed})")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bar or log lines")


def device_from_args(args: argparse.Namespace) -> "torch.device":
    import torch

    name = getattr(args, "device", "auto") or "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise PreimageError(f"unknown device {name!r} (cpu, cuda, cuda:N, auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PreimageError(f"device {name} requested but CUDA is not available; use --device cpu")
    return dev


def check_model(args: argparse.Namespace) -> None:
    """A misspelt --model fails first, with a did-you-mean (cli.main calls this before run())."""
    name = getattr(args, "model", None)
    if isinstance(name, str):
        check_model_name(name)
    weights = getattr(args, "weights", None)
    if isinstance(weights, str) and weights not in ("default", "none"):
        import os

        path = os.path.expanduser(weights)
        if not os.path.isfile(path):
            what = "is a folder, not a weights file" if os.path.isdir(path) else "not found"
            raise PreimageError(f"weights file {weights} {what} (use --weights default, none or a PATH)")


def check_images(sources: Iterable[str]) -> None:
    """Read every image once (without torch) so a missing, damaged or unsupported file fails before
    any model loads. Conversion notices (animation, transparency) are shown here, once."""
    from ..images import load_image

    for src in sources:
        if src is not None:
            load_image(src)


def model_from_args(args: argparse.Namespace) -> "Model":
    from ..models import load_model

    check_model(args)
    extra = {k: getattr(args, k, None) for k in ("mean", "std", "channels", "classes")}
    return load_model(args.model, weights=args.weights, device=device_from_args(args),
                      input_size=getattr(args, "input_size", None), **{k: v for k, v in extra.items() if v is not None})


def progress_enabled(args: argparse.Namespace) -> bool:
    return not getattr(args, "quiet", False)


def say(args: argparse.Namespace, text: str) -> None:
    """A log line for the user on stderr (suppressed by --quiet)."""
    if not getattr(args, "quiet", False):
        print(text, file=sys.stderr)


def check_memory(model: "Model", *, batch: int, size: int, what: str, hint: str = "",
                 backward: bool = True) -> None:
    """Refuse, in one line, a run estimated not to fit in memory (see :mod:`preimage.memory`);
    the limit is ``--max-memory`` (applied by cli.main), ``PREIMAGE_MAX_MEMORY`` or what is available."""
    from ..memory import check_fits

    check_fits(model, batch=batch, size=size, what=what, hint=hint, backward=backward)


def divergence_fix(term: str, flags: dict[str, str], *, first_step: bool, lr_flag: str = "--lr") -> str:
    """What to change after a divergence. A term that is non-finite at the first step, before the
    image moved, is its weight's doing: lower that weight's flag (``flags`` maps a term's name, up
    to ``[`` or ``#``, to its flag). Later, the step size drove the image there: lower the learning
    rate, or that term's weight."""
    base = term.split("[", 1)[0].split("#", 1)[0]
    flag = flags.get(base)
    if flag and first_step:
        return f"lower {flag}"
    return f"lower {lr_flag} (e.g. 10x)" + (f" or {flag}" if flag else "")
