"""Shared fixtures: a tiny hand-written CNN wrapped as a Model, sample tensors, an image-file factory,
and (session-scoped, loaded once) the embedded model and a few random-init torchvision models."""
from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from preimage.models import IMAGENET_MEAN, IMAGENET_STD, Model, load_model

torch.set_num_threads(min(2, torch.get_num_threads()))

TINY_CLASSES = tuple(f"class {i}" for i in range(10))


class TinyNet(nn.Module):
    """conv(3->4) relu pool conv(4->8) relu avgpool(2) | flatten linear(32->10).

    The first ReLU is in place on purpose: a Model must still report the conv output unrectified."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


TINY_ALIASES = {"conv1": "features.0", "relu1": "features.1", "pool1": "features.2",
                "conv2": "features.3", "relu2": "features.4", "pool2": "features.5", "fc": "classifier.1"}


def make_tiny_model(seed: int = 0, input_size: int = 16) -> Model:
    """A hand-built Model around TinyNet (not through load_model)."""
    torch.manual_seed(seed)
    net = TinyNet()
    return Model(name="tiny", net=net, input_size=input_size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 classes=TINY_CLASSES, aliases=dict(TINY_ALIASES))


@pytest.fixture
def full_disk(monkeypatch) -> Callable[[str], None]:
    """``full_disk("manifest")``: creating a file whose name holds that text fails as a full disk does."""
    import tempfile

    real = tempfile.mkstemp

    def at(name: str) -> None:
        def mkstemp(*args, prefix="", **kwargs):
            if name in prefix:
                raise OSError(28, "No space left on device")
            return real(*args, prefix=prefix, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)

    return at


@pytest.fixture
def cut_captions(monkeypatch) -> list[str]:
    """The captions a grid had to shorten to fit its cells, recorded while the test runs."""
    import preimage.viz as viz

    cut, fit = [], viz._fit

    def recording_fit(text, *args):
        out = fit(text, *args)
        if out != text:
            cut.append(text)
        return out

    monkeypatch.setattr(viz, "_fit", recording_fit)
    return cut


@pytest.fixture
def tiny_model() -> Model:
    return make_tiny_model()


@pytest.fixture
def pixels() -> torch.Tensor:
    """Two random 3x16x16 images in [0, 1]."""
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


# -- real models, loaded once per test session ------------------------------------------------

@pytest.fixture(scope="session")
def lite0() -> Model:
    return load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def alexnet() -> Model:
    return load_model("alexnet", weights="none")


@pytest.fixture(scope="session")
def vgg16() -> Model:
    return load_model("vgg16", weights="none", input_size=64)


@pytest.fixture(scope="session")
def resnet18() -> Model:
    return load_model("resnet18", weights="none", input_size=64)


# -- image files -------------------------------------------------------------------------------

def rgb_pattern(w: int = 48, h: int = 32) -> np.ndarray:
    """An ``h x w x 3`` uint8 image with distinct values in every channel (smooth, JPEG-friendly)."""
    y, x = np.mgrid[0:h, 0:w]
    r = x * 255 // max(1, w - 1)
    g = y * 255 // max(1, h - 1)
    b = (x + y) * 255 // max(1, w + h - 2)
    return np.stack([r, g, b], -1).astype(np.uint8)


ImageFactory = Callable[..., tuple[Path, np.ndarray]]


@pytest.fixture
def image_file(tmp_path: Path) -> ImageFactory:
    """``image_file(fmt, mode, size=(w, h), name=None, **save_options) -> (path, expected RGB array)``.

    Writes a file of the given Pillow format and mode and returns the 8-bit RGB array
    ``load_image`` must produce (alpha composited over white, 16-bit scaled by 1/257, ...).
    """
    counter = [0]

    def make(fmt: str = "PNG", mode: str = "RGB", size: tuple[int, int] = (48, 32), name: str | None = None,
             **save: object) -> tuple[Path, np.ndarray]:
        w, h = size
        rgb = rgb_pattern(w, h)
        gray = rgb[..., 0]
        if mode == "RGB":
            img, expected = Image.fromarray(rgb, "RGB"), rgb
        elif mode == "L":
            img, expected = Image.fromarray(gray, "L"), np.repeat(gray[..., None], 3, -1)
        elif mode == "1":
            bits = (gray > 127)
            img = Image.fromarray(bits.astype(np.uint8) * 255, "L").convert("1", dither=Image.Dither.NONE)
            expected = np.repeat((bits.astype(np.uint8) * 255)[..., None], 3, -1)
        elif mode in ("P", "P+transparency"):
            palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], np.uint8)
            index = ((np.arange(w)[None, :] // 4 + np.arange(h)[:, None] // 4) % 4).astype(np.uint8)
            img = Image.fromarray(index, "P")
            img.putpalette(palette.reshape(-1).tolist() + [0] * (768 - palette.size))
            expected = palette[index]
            if mode == "P+transparency":
                img.info["transparency"] = 3  # index 3 is transparent -> white
                save.setdefault("transparency", 3)
                expected = expected.copy()
                expected[index == 3] = 255
        elif mode in ("RGBA", "LA"):
            alpha = np.zeros((h, w), np.uint8)
            alpha[:, w // 3: 2 * w // 3] = 128
            alpha[:, 2 * w // 3:] = 255
            base = rgb if mode == "RGBA" else np.repeat(gray[..., None], 3, -1)
            a = alpha[..., None].astype(np.float64) / 255
            expected = np.round(base * a + 255 * (1 - a)).astype(np.uint8)
            data = np.dstack([rgb, alpha]) if mode == "RGBA" else np.dstack([gray, alpha])
            img = Image.fromarray(data, mode)
        elif mode == "CMYK":
            cmyk = np.zeros((h, w, 4), np.uint8)
            colours = [(255, 0, 0, 0), (0, 255, 0, 0), (0, 0, 255, 0), (0, 0, 0, 255), (0, 0, 0, 0)]
            rgbs = [(0, 255, 255), (255, 0, 255), (255, 255, 0), (0, 0, 0), (255, 255, 255)]
            band = np.arange(w) * len(colours) // w
            expected = np.zeros((h, w, 3), np.uint8)
            for i, (c, e) in enumerate(zip(colours, rgbs)):
                cmyk[:, band == i] = c
                expected[:, band == i] = e
            img = Image.fromarray(cmyk, "CMYK")
        elif mode == "I;16":
            v16 = gray.astype(np.uint16) * 257  # full 16-bit range: 0..65535
            v16[0, 0] = 65535
            img = Image.fromarray(v16)
            assert img.mode == "I;16"
            g8 = np.round(v16 / 257).astype(np.uint8)
            expected = np.repeat(g8[..., None], 3, -1)
        elif mode == "I":
            v = gray.astype(np.int32) * 257
            img = Image.fromarray(v)
            assert img.mode == "I"
            expected = np.repeat(gray[..., None], 3, -1)
        elif mode == "F":
            f = gray.astype(np.float32) / 255.0
            img = Image.fromarray(f)
            assert img.mode == "F"
            expected = np.repeat(gray[..., None], 3, -1)
        else:  # pragma: no cover - test bug
            raise ValueError(mode)
        counter[0] += 1
        ext = {"JPEG": "jpg", "TIFF": "tif"}.get(fmt, fmt.lower())
        path = tmp_path / (name or f"img{counter[0]}_{mode.replace(';', '').replace('+', '_')}.{ext}")
        img.save(path, fmt, **save)
        return path, expected

    return make


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def one_thread():
    """One torch thread: on a busy two-core machine two threads are many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
