"""Inversion quality of HOG and dense SIFT on every bundled photo (Mahendran & Vedaldi, CVPR 2015, Table 1).

For each photo x (224 x 224, the models' default input) we invert Φ = HOG or DSIFT with the
``shallow`` preset and report, over the photos, the mean and standard deviation of

    err(x) = ||Φ(x̂) - Φ(x)||² / ||Φ(x)||²                         (this project's normalization)
    err_paper(x) = ||Φ(x̂) - Φ(x)||² / mean_{i,j} ||Φ(x_i) - Φ(x_j)||²   (the deep-goggle evaluation code)

The second one is how the paper's evaluation script (``experiment_shallow_quantitative.m`` in
aravindhm/deep-goggle) normalizes: by the mean squared distance between the representations of all
pairs of images of the set (the diagonal included), not by the norm of each image's own target.

Run (single-threaded, about 25 minutes on one CPU core)::

    OMP_NUM_THREADS=1 python benchmarks/shallow.py

writes ``benchmarks/results/shallow.json`` and ``.md`` and the figure
``docs/images/shallow_chelsea.png`` (original | HOG glyph | HOG inversion | DSIFT inversion).
``--quick`` runs 3 photos for 100 steps and writes nothing unless ``--out`` is given;
``--models 'hog:uoctti'`` measures other specs (the figure is drawn only for the default pair).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from preimage.images import SAMPLES, load_tensor  # noqa: E402
from preimage.io import atomic_write, versions, write_json  # noqa: E402
from preimage.models import load_model  # noqa: E402
from preimage.tasks.invert import INVERT_PRESETS, invert  # noqa: E402
from preimage.tasks.shallow import glyph_figure, gray  # noqa: E402

#: every bundled sample that is a photograph (colorwheel, checkerboard and logo are drawn, not photographed)
PHOTOS = [s for s in SAMPLES if s not in ("colorwheel", "checkerboard", "logo")]
MODELS = ("hog", "dsift")


def _sq_errors(model, images: torch.Tensor, recon: torch.Tensor) -> tuple[list[float], list[float]]:
    with torch.no_grad():
        f0 = model.net(images).flatten(1).double()
        f = model.net(recon).flatten(1).double()
    diff = (f - f0).pow(2).sum(1)
    own = diff / f0.pow(2).sum(1)
    pair = torch.cdist(f0, f0).pow(2).mean()  # mean over all N^2 pairs, as pdist2 + mean in the paper's code
    return own.tolist(), (diff / pair).tolist()


def _stats(xs: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0,
            "min": min(xs), "max": max(xs)}


def run(photos: list[str], steps: int | None, size: int, models: tuple[str, ...] = MODELS) -> dict:
    out: dict = {"photos": photos, "size": size, "models": {}}
    recons: dict[str, torch.Tensor] = {}
    for name in models:
        model = load_model(name, input_size=size)
        t = time.time()
        overrides = {"steps": steps} if steps else {}
        if steps:
            overrides["decay_steps"] = tuple(int(steps * f) for f in (0.25, 0.5, 0.75))
        inv = invert(model, [f"sample:{p}" for p in photos], layers=["features"], preset="shallow", **overrides)
        seconds = time.time() - t
        own, paper = _sq_errors(model, inv.reference, inv.image)
        recons[name] = inv.image
        out["models"][name] = {
            "spec": model.name, "config": inv.config.as_dict(), "status": inv.status, "seconds": round(seconds, 1),
            "error": _stats(own), "error_paper_normalization": _stats(paper),
            "per_image": {p: {"error": e, "error_paper_normalization": q, "psnr": m["psnr"], "ssim": m["ssim"]}
                          for p, e, q, m in zip(photos, own, paper, inv.metrics)},
        }
        print(f"{name}: error {out['models'][name]['error']['mean']:.4f} ± {out['models'][name]['error']['std']:.4f}"
              f" ({seconds:.0f} s)", file=sys.stderr, flush=True)
    out["reference"] = torch.cat([load_tensor(f"sample:{p}", size) for p in photos])
    out["recons"] = recons
    return out


def markdown(res: dict) -> str:
    lines = [
        "# HOG and dense SIFT inversion error",
        "",
        f"{len(res['photos'])} bundled photos at {res['size']}x{res['size']}, preset `shallow` "
        f"({next(iter(res['models'].values()))['config']['steps']} steps). Regenerate: `OMP_NUM_THREADS=1 python benchmarks/shallow.py`.",
        "",
        "| representation | ‖Φ(x̂)−Φ(x)‖²/‖Φ(x)‖² mean ± std | min – max | paper normalization (mean pairwise ‖Φ(xᵢ)−Φ(xⱼ)‖²) mean ± std |",
        "|---|---|---|---|",
    ]
    for name, r in res["models"].items():
        e, p = r["error"], r["error_paper_normalization"]
        lines.append(f"| {name} (`{r['spec']}`) | {e['mean']:.4f} ± {e['std']:.4f} | {e['min']:.4f} – {e['max']:.4f} "
                     f"| {p['mean']:.4f} ± {p['std']:.4f} |")
    lines += ["", "Per photo (error, this project's normalization):", "",
              "| photo | " + " | ".join(res["models"]) + " |", "|---|" + "---|" * len(res["models"])]
    for ph in res["photos"]:
        lines.append(f"| {ph} | " + " | ".join(f"{r['per_image'][ph]['error']:.4f}" for r in res["models"].values()) + " |")
    lines += ["", f"Machine: {platform.machine()}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} thread(s); seconds: "
              + ", ".join(f"{n} {r['seconds']}" for n, r in res["models"].items()), ""]
    return "\n".join(lines)


def figure(res: dict, photo: str = "chelsea"):
    from PIL import Image

    from preimage.images import encode_png

    i = res["photos"].index(photo)
    hog = load_model("hog", input_size=res["size"])
    err = {n: r["per_image"][photo]["error"] for n, r in res["models"].items()}
    img = glyph_figure(res["reference"][i], [(f"HOG inversion ({err['hog']:.3f})", res["recons"]["hog"][i]),
                                              (f"DSIFT inversion, gray ({err['dsift']:.3f})", gray(res["recons"]["dsift"][i]))],
                       model=hog, font_size=11)
    # a 256-colour palette keeps the docs figure small (the HOG inversion's colour noise is costly)
    return encode_png(img.quantize(256, method=Image.Quantize.MEDIANCUT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="3 photos, 100 steps, print only")
    p.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--out", default=None, help="results folder (default: benchmarks/results, none with --quick)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--models", default=";".join(MODELS),
                   help="model specs separated by ';', e.g. 'hog;hog:uoctti;dsift' (default: hog;dsift)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    photos = ["chelsea", "astronaut", "camera"] if args.quick else PHOTOS
    steps = args.steps or (100 if args.quick else None)
    models = tuple(m.strip() for m in args.models.split(";") if m.strip())
    res = run(photos, steps, args.size, models)
    md = markdown(res)
    print(md)
    out = Path(args.out) if args.out else (None if args.quick else ROOT / "benchmarks" / "results")
    if out is not None:
        data = {k: v for k, v in res.items() if k not in ("reference", "recons")}
        data["presets"] = {"shallow": INVERT_PRESETS["shallow"].as_dict()}
        data["versions"] = versions()
        write_json(out / "shallow.json", data)
        atomic_write(out / "shallow.md", md.encode())
        if "chelsea" in photos and set(MODELS) <= set(res["models"]):
            atomic_write((ROOT / "docs" / "images" if not args.quick else out) / "shallow_chelsea.png", figure(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
