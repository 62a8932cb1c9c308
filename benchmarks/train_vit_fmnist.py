"""Train a tiny Vision Transformer on Fashion-MNIST, to have a ViT with real (local) weights offline.

    nice -n 10 .venv/bin/python benchmarks/train_vit_fmnist.py [--epochs 2] [--seed 0]

The network is timm's ``VisionTransformer`` at a small size (Dosovitskiy et al. 2021): 28 x 28 input,
4 x 4 patches (a 7 x 7 grid of patch tokens plus one class token), width 64, 4 blocks of 4 heads,
MLP ratio 4 (256 hidden units per block), 10 classes — in preimage's model syntax::

    timm:vit_tiny_patch16_224,img_size=28,patch_size=4,embed_dim=64,depth=4,num_heads=4,num_classes=10

The grey images enter as 3 identical channels, normalized with timm's ViT statistics (mean = std =
0.5), so the model is used like any RGB timm model. Training: AdamW (lr 2e-3, weight decay 0.05),
linear warm-up over 200 steps then cosine decay, batch 128, label smoothing 0.1, random shifts of up
to 2 pixels and horizontal flips; one torch thread; run by :func:`preimage.train.fit` (checkpoints in
``--run``; rerunning the same command resumes). Data: Debian's ``dataset-fashion-mnist``
(/usr/share/datasets/fashion-mnist/, IDX files, gzip), read by the small reader below.

Writes benchmarks/results/vit_fmnist.pth (float16 state_dict, loadable with ``--weights``),
vit_fmnist.json (accuracy, time, settings) and vit_fmnist.md.
"""
from __future__ import annotations

import argparse
import gzip
import io
import math
import platform
import struct
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = Path("/usr/share/datasets/fashion-mnist")
ARCH = "vit_tiny_patch16_224"
KWARGS = dict(img_size=28, patch_size=4, embed_dim=64, depth=4, num_heads=4, num_classes=10)
MODEL = "timm:" + ",".join([ARCH] + [f"{k}={v}" for k, v in KWARGS.items()])
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format, optionally gzipped) as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images N x 3 x 28 x 28 in [0, 1], labels N)``; the grey channel repeated three times."""
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(DATA / f"{prefix}-images-idx3-ubyte.gz")
    y = read_idx(DATA / f"{prefix}-labels-idx1-ubyte.gz")
    pixels = torch.from_numpy(x.copy()).float().div_(255).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    return pixels, torch.from_numpy(y.astype(np.int64))


def augment(x: torch.Tensor, g: torch.Generator, shift: int = 2) -> torch.Tensor:
    """Random shift (zero padding, up to ``shift`` pixels) and horizontal flip, per image."""
    b = x.shape[0]
    padded = F.pad(x, (shift,) * 4)
    dy = torch.randint(0, 2 * shift + 1, (b,), generator=g)
    dx = torch.randint(0, 2 * shift + 1, (b,), generator=g)
    h, w = x.shape[-2:]
    rows = (dy[:, None] + torch.arange(h)[None])[:, None, :, None].expand(b, x.shape[1], h, w + 2 * shift)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, None, :].expand(b, x.shape[1], h, w)
    out = out.gather(3, cols)
    flip = torch.rand(b, generator=g) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


@torch.no_grad()
def accuracy(model, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    correct = 0
    for s in range(0, x.shape[0], batch):
        correct += int((model(x[s:s + batch]).argmax(1) == y[s:s + batch]).sum())
    return correct / x.shape[0]


class ViTTask:
    """The classification task for :func:`preimage.train.fit` (the one training loop): AdamW with a
    warm-up + cosine learning rate computed from the global step (so a resumed run keeps it)."""

    kind = "vit-fmnist"

    def __init__(self, model, data: dict[str, torch.Tensor], *, epochs: int, batch: int, lr: float,
                 warmup: int = 200) -> None:
        self.model, self.data = model, data
        self.epochs, self.batch, self.lr, self.warmup = epochs, batch, lr, warmup
        for p in model.net.parameters():
            p.requires_grad_(True)
        self.opt = torch.optim.AdamW(model.net.parameters(), lr=lr, weight_decay=0.05)

    def modules(self) -> dict:
        return {"vit": self.model.net}

    def optimizers(self) -> dict:
        return {"adamw": self.opt}

    def config(self) -> dict:
        return {"model": MODEL, "epochs": self.epochs, "batch": self.batch, "lr": self.lr, "warmup": self.warmup,
                "weight_decay": 0.05, "label_smoothing": 0.1, "shift": 2, "flip": True}

    def num_batches(self) -> int:
        return math.ceil(self.data["x_train"].shape[0] / self.batch)

    def batches(self, epoch: int, generator: torch.Generator):
        order = torch.randperm(self.data["x_train"].shape[0], generator=generator)
        for i in range(self.num_batches()):
            yield (epoch - 1) * self.num_batches() + i, order[i * self.batch:(i + 1) * self.batch]

    def _lr(self, step: int) -> float:
        total = self.epochs * self.num_batches()
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        return self.lr * 0.5 * (1 + math.cos(math.pi * (step - self.warmup) / max(1, total - self.warmup)))

    def train_step(self, batch, generator: torch.Generator) -> dict[str, float]:
        step, idx = batch
        for group in self.opt.param_groups:
            group["lr"] = self._lr(step)
        xb = augment(self.data["x_train"][idx], generator)
        loss = F.cross_entropy(self.model(xb), self.data["y_train"][idx], label_smoothing=0.1)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": float(loss.detach())}

    def end_epoch(self, epoch: int, out: Path) -> dict[str, float]:
        self.model.net.eval()
        return {"test_accuracy": accuracy(self.model, self.data["x_test"], self.data["y_test"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run", default="out/train-vit-fmnist", help="checkpoints and logs (rerun to resume)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    args = ap.parse_args()
    torch.set_num_threads(1)

    import preimage
    from preimage.io import atomic_write, write_json
    from preimage.train import fit

    model = preimage.load_model(MODEL, weights="none")  # the exact network the weights will be used with
    x_train, y_train = load_split("train")
    x_test, y_test = load_split("test")
    data = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    task = ViTTask(model, data, epochs=args.epochs, batch=args.batch, lr=args.lr)
    res = fit(task, args.run, epochs=args.epochs, seed=args.seed, log_every=100)
    if res.status != "done":
        raise SystemExit(f"training {res.status}: {res.message}")
    model.net.eval()
    acc = res.history["epochs"][-1]["test_accuracy"]
    train_seconds = sum(e.get("seconds", 0.0) for e in res.history["epochs"])
    state = {k: v.detach().half() for k, v in model.net.state_dict().items()}
    out = Path(args.out)
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(out / "vit_fmnist.pth", buf.getvalue())
    # the float16 file is what users load: measure its accuracy too
    reloaded = preimage.load_model(MODEL, weights=str(out / "vit_fmnist.pth"))
    acc16 = accuracy(reloaded, x_test, y_test)
    result = {
        "model": MODEL, "classes": CLASSES, "epochs": args.epochs, "batch": args.batch, "lr": args.lr,
        "seed": args.seed, "parameters": sum(p.numel() for p in model.net.parameters()),
        "train_seconds": round(train_seconds, 1), "test_accuracy": acc, "test_accuracy_float16_file": acc16,
        "test_images": int(x_test.shape[0]), "threads": 1, "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__, "epochs_log": res.history["epochs"],
    }
    write_json(out / "vit_fmnist.json", result)
    md = (
        "# Tiny ViT on Fashion-MNIST\n\n"
        f"`nice -n 10 .venv/bin/python benchmarks/train_vit_fmnist.py --epochs {args.epochs} --seed {args.seed}`\n\n"
        "| model | parameters | epochs | training time (1 thread, shared machine) | test accuracy | test accuracy of the float16 file |\n"
        "|---|---|---|---|---|---|\n"
        f"| `{MODEL}` | {result['parameters']:,} | {args.epochs} | {train_seconds:.0f} s | {acc:.2%} | {acc16:.2%} |\n"
    )
    atomic_write(out / "vit_fmnist.md", md.encode())
    print(f"test accuracy {acc:.4f} (float16 file {acc16:.4f}) after {train_seconds:.0f} s")


if __name__ == "__main__":
    main()
