"""A small 1-channel classifier trained here on Fashion-MNIST, then looked into with preimage: every
layer inverted, one class visualization per class.

    python benchmarks/fashion_mnist.py train     # ~3 epochs on 1 CPU thread; weights + ONNX export
    python benchmarks/fashion_mnist.py pictures  # inversions per layer, class visualizations
    python benchmarks/fashion_mnist.py samples   # one test image per class as PNG, for the CLI

``train`` writes benchmarks/results/fashion_cnn.pt (state_dict), fashion_cnn.onnx with its sidecar
fashion_cnn.json (mean, std, input size, channels, class file fashion_classes.txt) and the test
accuracy in fashion_mnist.json. ``pictures`` writes docs/images/fashion_layers.png (test images and
their reconstructions from each layer), docs/images/fashion_dream.png and the feature errors in
fashion_mnist.json. Data: the Fashion-MNIST IDX files of Debian's ``dataset-fashion-mnist``
(/usr/share/datasets/fashion-mnist/; Xiao, Rasul & Vollgraf 2017).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import struct
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
IMAGES = ROOT / "docs" / "images"
DATA = Path(os.environ.get("FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel mean and std, in [0, 1] units
LAYERS = ["conv1", "relu1", "conv2", "relu2", "conv3", "relu3", "fc"]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not): big-endian magic (0, 0, dtype 0x08 = uint8, ndim), then the dims."""
    raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(DATA / f"{prefix}-images-idx3-ubyte.gz")
    y = read_idx(DATA / f"{prefix}-labels-idx1-ubyte.gz")
    return torch.from_numpy(x.copy()).float().div_(255).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


class FashionCNN(nn.Module):
    """1 x 28 x 28 -> conv1 (16) pool -> conv2 (32) pool -> conv3 (64) -> global average -> fc (10).
    Takes [0, 1] pixels normalized by (x - 0.2860) / 0.3530."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.relu1, self.pool1 = nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        self.conv2, self.relu2, self.pool2 = nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        self.conv3, self.relu3 = nn.Conv2d(32, 64, 3, padding=1), nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.relu3(self.conv3(x))
        return self.fc(self.pool(x).flatten(1))


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _results() -> dict:
    path = RESULTS / "fashion_mnist.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_results(data: dict) -> None:
    from preimage.io import write_json

    write_json(RESULTS / "fashion_mnist.json", data)


def train(epochs: int, seed: int) -> None:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    xtr, ytr = load_split("train")
    xte, yte = load_split("test")
    net = FashionCNN()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(xtr), generator=g)
        for s in range(0, len(order), 128):
            idx = order[s:s + 128]
            loss = nn.functional.cross_entropy(net((xtr[idx] - MEAN) / STD), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            acc = float(torch.cat([net((xte[s:s + 1000] - MEAN) / STD).argmax(1) for s in range(0, len(xte), 1000)])
                        .eq(yte).float().mean())
        print(f"epoch {epoch + 1}: test accuracy {acc:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    _save_atomic(net.state_dict(), RESULTS / "fashion_cnn.pt")
    onnx_path = RESULTS / "fashion_cnn.onnx"
    torch.onnx.export(net, (torch.zeros(1, 1, 28, 28),), str(onnx_path), dynamo=False,
                      input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "batch"}})
    (RESULTS / "fashion_classes.txt").write_text("\n".join(CLASSES) + "\n")
    (RESULTS / "fashion_cnn.json").write_text(json.dumps(
        {"mean": [MEAN], "std": [STD], "input_size": 28, "channels": 1, "classes": "fashion_classes.txt"}, indent=1) + "\n")
    data = _results()
    data["train"] = {"epochs": epochs, "seed": seed, "test_accuracy": acc, "seconds": round(time.perf_counter() - t0, 1),
                     "threads": torch.get_num_threads(), "command": f"python benchmarks/fashion_mnist.py train --epochs {epochs}"}
    _write_results(data)


def load_trained():
    import preimage

    net = FashionCNN()
    net.load_state_dict(torch.load(RESULTS / "fashion_cnn.pt", weights_only=True))
    return preimage.load_model(net, mean=MEAN, std=STD, input_size=28, classes=CLASSES)


def pictures(steps: int, per_class: int) -> None:
    import preimage
    from preimage.viz import grid

    model = load_trained()
    xte, yte = load_split("test")
    # the first test image of a few classes: a top, a trouser, a sandal, a bag, an ankle boot
    picks = [0, 1, 5, 8, 9]
    idx = [int((yte == c).nonzero()[0]) for c in picks]
    images = xte[idx]
    errors: dict[str, list[float]] = {}
    cells = [images[i] for i in range(len(idx))]
    labels: list[str | None] = [CLASSES[c] for c in picks]
    t0 = time.perf_counter()
    for layer in LAYERS:
        inv = preimage.invert(model, images, layers=[layer], steps=steps, seed=0)
        errors[layer] = [round(m["feature_error"][layer], 4) for m in inv.metrics]
        cells += [inv.image[i] for i in range(len(idx))]
        labels += [None] * len(idx)
    seconds = time.perf_counter() - t0
    up = [torch.nn.functional.interpolate(c[None], scale_factor=4, mode="nearest")[0] for c in cells]
    IMAGES.mkdir(parents=True, exist_ok=True)
    grid(up, labels=labels, ncols=len(idx), row_labels=["original", *LAYERS]).save(IMAGES / "fashion_layers.png")
    dream = preimage.visualize_class(model, list(range(10)), steps=per_class, seed=0)
    up = [torch.nn.functional.interpolate(dream.image[i][None], scale_factor=4, mode="nearest")[0] for i in range(10)]
    grid(up, labels=[f"{CLASSES[c]} p={p:.2f}" for c, p in zip(dream.classes, dream.prob)], ncols=5
         ).save(IMAGES / "fashion_dream.png")
    data = _results()
    data["pictures"] = {
        "images": [f"test[{i}] ({CLASSES[c]})" for i, c in zip(idx, picks)], "preset": "default", "steps": steps,
        "feature_error": errors, "seconds": round(seconds, 1),
        "dream": {"steps": per_class, "prob": [round(p, 4) for p in dream.prob]},
        "command": f"python benchmarks/fashion_mnist.py pictures --steps {steps} --dream-steps {per_class}",
    }
    _write_results(data)
    print(json.dumps(data["pictures"], indent=1))


def samples() -> None:
    """The first test image of each class as a 28 x 28 grey PNG (for the CLI examples)."""
    import preimage

    xte, yte = load_split("test")
    folder = RESULTS / "fashion_samples"
    for c, name in enumerate(CLASSES):
        i = int((yte == c).nonzero()[0])
        preimage.save_image(xte[i], folder / f"{name.lower().replace('/', '_').replace(' ', '_')}.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["train", "pictures", "samples"])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=200, help="inversion steps per layer")
    p.add_argument("--dream-steps", type=int, default=256, help="class visualization steps")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.what == "train":
        train(args.epochs, args.seed)
    elif args.what == "samples":
        samples()
    else:
        pictures(args.steps, args.dream_steps)


if __name__ == "__main__":
    main()
