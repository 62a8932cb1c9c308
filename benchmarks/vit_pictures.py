"""Pictures of the tiny Fashion-MNIST ViT (benchmarks/train_vit_fmnist.py) for docs/models.md.

    nice -n 10 .venv/bin/python benchmarks/vit_pictures.py

Writes six test images (one per chosen class, 28 x 28 grey PNGs) to benchmarks/results/fmnist/, runs
the same ``preimage`` commands a user would (printed, and listed in vit_pictures.json) into
out/vit-pictures/, and assembles docs/images/vit_fmnist_invert.png, vit_fmnist_rollout.png and
vit_fmnist_dream.png from their outputs, and vit_fmnist_units.png (MLP units, Python API: see
``unit_pictures``) (cells enlarged 4x, nearest neighbour). The grey images
enter the 3-channel model as three identical channels.
"""
from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_vit_fmnist import CLASSES, MODEL, load_split  # noqa: E402

from preimage.cli import main  # noqa: E402
from preimage.images import load_tensor, save_image  # noqa: E402
from preimage.io import write_json  # noqa: E402
from preimage.viz import grid  # noqa: E402

WEIGHTS = "benchmarks/results/vit_fmnist.pth"
SHOWN = (0, 1, 3, 7, 8, 9)  # T-shirt/top, Trouser, Dress, Sneaker, Bag, Ankle boot
LAYERS = ("blocks.0", "blocks.1", "blocks.3", "blocks.3.cls")
OUT = Path("out/vit-pictures")
ENSEMBLE = ["--copies", "4", "--color-shift", "0.5", "--noise", "0.2", "--jitter", "2"]


def run(argv: list[str], log: list[dict]) -> int:
    cmd = "preimage " + " ".join(shlex.quote(a) for a in argv)
    print(cmd, file=sys.stderr, flush=True)
    start = time.perf_counter()
    code = main(argv)
    log.append({"command": cmd, "exit": code, "seconds": round(time.perf_counter() - start, 1)})
    if code not in (0, 1):
        raise SystemExit(f"failed ({code}): {cmd}")
    return code


def big(t: torch.Tensor, k: int = 4) -> torch.Tensor:
    return torch.nn.functional.interpolate(t[None] if t.dim() == 3 else t, scale_factor=k, mode="nearest")[0]


def main_() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=WEIGHTS)
    ap.add_argument("--steps", type=int, default=None, help="steps of every run (default: each command's own)")
    ap.add_argument("--docs", default=str(ROOT / "docs/images"), help="where the assembled pictures go")
    ap.add_argument("--results", default=str(ROOT / "benchmarks/results/vit_pictures.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = ["--model", MODEL, "--weights", args.weights, "--quiet", "--force"]
    steps = ["--steps", str(args.steps)] if args.steps else []
    x, y = load_split("test")
    data = ROOT / "benchmarks/results/fmnist"
    files = []
    for c in SHOWN:
        i = int((y == c).nonzero()[0])
        name = CLASSES[c].split("/")[0].lower().replace(" ", "_")
        path = data / f"{name}.png"
        save_image(x[i, :1].expand(3, -1, -1), path)
        files.append(str(path.relative_to(ROOT)))
    log: list[dict] = []
    for layer in LAYERS:
        run(["invert", *files, "--layer", layer, "--preset", "fast", "-o", str(OUT / f"invert_{layer}"),
             *model, *steps], log)
    run(["saliency", *files, "--method", "rollout,vanilla", "-o", str(OUT / "saliency"), *model], log)
    classes = [str(c) for c in range(10)]
    dream_cls = [a for c in classes for a in ("--class", c)]
    run(["dream", *dream_cls, "--jitter", "2", "-o", str(OUT / "dream_plain"), *model, *steps], log)
    run(["dream", *dream_cls, *ENSEMBLE, "-o", str(OUT / "dream_ensemble"), *model, *steps], log)

    names = [Path(f).stem for f in files]
    # inversions: one row per image, original then one column per layer
    cells, labels = [], []
    errors = {}
    for n, f in zip(names, files):
        cells.append(big(load_tensor(f)))
        labels.append(n)
        for layer in LAYERS:
            cells.append(big(load_tensor(str(OUT / f"invert_{layer}" / f"{n}.png"))))
            m = json.loads((OUT / f"invert_{layer}" / "manifest.json").read_text())["metrics"][n]
            errors.setdefault(layer, {})[n] = m["feature_error"][layer]
            labels.append(f"{layer} {m['feature_error'][layer]:.2f}")
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    grid(cells, ncols=len(LAYERS) + 1, labels=labels).save(docs / "vit_fmnist_invert.png")
    # rollout and vanilla gradient overlays
    cells, labels = [], []
    sal = json.loads((OUT / "saliency" / "saliency.json").read_text())
    for n, f, meta in zip(names, files, sal["images"]):
        cells += [big(load_tensor(f)), big(load_tensor(str(OUT / "saliency" / f"{n}_rollout.png"))),
                  big(load_tensor(str(OUT / "saliency" / f"{n}_rollout_overlay.png"))),
                  big(load_tensor(str(OUT / "saliency" / f"{n}_vanilla_overlay.png")))]
        labels += [f"{CLASSES[meta['class']]} {meta['prob']:.0%}", "rollout", "rollout overlay", "gradient overlay"]
    grid(cells, ncols=4, labels=labels).save(docs / "vit_fmnist_rollout.png")
    # class visualization, without and with augmentation ensembling
    cells, labels, probs = [], [], {}
    for kind in ("plain", "ensemble"):
        meta = json.loads((OUT / f"dream_{kind}" / "dream.json").read_text())
        for c in range(10):
            stem = f"{c:04d}_class_{c}"
            cells.append(big(load_tensor(str(OUT / f"dream_{kind}" / f"{stem}.png"))))
        p = [float(v) for v in _dream_probs(meta)]
        probs[kind] = dict(zip(CLASSES, p))
        labels += [f"{CLASSES[c]} {p[c]:.0%}" for c in range(10)]
    grid(cells, ncols=10, labels=labels, row_labels=["fourier", "+ ensembling"]).save(docs / "vit_fmnist_dream.png")
    units = unit_pictures(docs / "vit_fmnist_units.png", x[:2000], args.weights, steps=args.steps or 256)
    write_json(Path(args.results),
               {"model": MODEL, "weights": args.weights, "images": files, "commands": log,
                "feature_error": errors, "dream_prob": probs,
                "rollout_classes": [CLASSES[m["class"]] for m in sal["images"]], "units": units})
    print("wrote docs/images/vit_fmnist_invert.png, vit_fmnist_rollout.png, vit_fmnist_dream.png", file=sys.stderr)


UNIT_LAYER = "blocks.2.mlp.act"


def unit_pictures(path: Path, pool: torch.Tensor, weights: str, count: int = 8, steps: int = 256, seed: int = 0
                  ) -> dict:
    """Feature visualization of MLP hidden units (Ghiasi et al. 2022) through the Python API: for the
    ``count`` units of UNIT_LAYER with the largest mean activation over ``pool``, maximize the unit's
    spatial mean from a Fourier-parameterized image with augmentation ensembling; beside each, the
    image of ``pool`` that excites it most."""
    import preimage
    from preimage.layers import FeatureExtractor
    from preimage.objectives import Objective
    from preimage.optimize import optimize
    from preimage.params import Fourier
    from preimage.transforms import ensemble

    model = preimage.load_model(MODEL, weights=weights)
    with torch.no_grad():
        acts = FeatureExtractor(model, [UNIT_LAYER])(model.normalize(pool))[UNIT_LAYER].mean((2, 3))
    units = acts.mean(0).topk(count).indices
    wanted = units.clone()

    def unit_mean(s) -> torch.Tensor:  # -mean activation of image i's unit, one value per row
        a = s.features[UNIT_LAYER]
        idx = wanted.repeat(a.shape[0] // len(wanted))
        return -a[torch.arange(a.shape[0]), idx].mean((1, 2))

    g = torch.Generator().manual_seed(seed)
    param = Fourier((count, 3, model.input_size, model.input_size), sd=0.01, generator=g)
    res = optimize(param, Objective(unit_mean, "unit", [UNIT_LAYER]), model, steps=steps, optimizer="adam",
                   lr=0.05, transforms=ensemble(4, jitter_pixels=2, shift=0.5, noise=0.2), generator=g)
    best = acts[:, units].argmax(0)
    cells, labels = [], []
    for k, u in enumerate(units.tolist()):
        cells += [big(res.image[k].clamp(0, 1)), big(pool[best[k]])]
        labels += [f"unit {u}", f"top image ({acts[best[k], u]:.1f})"]
    grid(cells, ncols=4, labels=labels).save(path)
    return {"layer": UNIT_LAYER, "units": units.tolist(), "steps": steps, "final_loss": res.history[-1]["loss"]}


def _dream_probs(meta: dict) -> list[float]:
    return [c["prob"] for c in meta["images"]]


if __name__ == "__main__":
    main_()
