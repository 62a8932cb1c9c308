"""Fit the shipped colour starts of efficientnet_lite0 (preimage/data/colour_starts.pt) and measure them.

The maps (:mod:`preimage.starts`) are fitted on the photos of Debian's wallpaper packages and the
three photos that ship with scikit-learn and matplotlib, and measured on the bundled ``sample:``
photos, which they never see:

    apt-get install mate-backgrounds lomiri-wallpapers plasma-workspace-wallpapers
    python benchmarks/colour_start.py fit                 # writes preimage/data/colour_starts.pt
    python benchmarks/colour_start.py fit --lams 0.01 0.03 0.1 0.3 1 --no-write   # the ridge weight
    python benchmarks/colour_start.py fit --chroma --no-write --tag _chroma   # the colourfulness head
    python benchmarks/colour_start.py fit --stages blocks.4 --out benchmarks/results/colour_starts_blocks4.pt --tag _blocks4
    python benchmarks/colour_start.py cost                # what the start adds to an inversion

``fit`` reports, per stage and ridge weight, the PSNR of the predicted start against each bundled
photo (with ``--chroma`` with the maps' colourfulness head and without it, and the head's
colourfulness against each photo's own), and of a plain grey start (0.5 everywhere), in
benchmarks/results/colour_start_fit.{json,md}.
What the start does to the inversions is measured by benchmarks/invert_deep.py (recipe
``pyr_tv2_learned``, then the default preset).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DEEP = ["blocks.5", "blocks.6", "conv_head"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["fit", "cost"])
    ap.add_argument("--stages", nargs="+", default=DEEP)
    ap.add_argument("--lams", nargs="+", type=float, default=[0.3], help="ridge weights to measure; the first is shipped")
    ap.add_argument("--crops", type=int, default=24)
    ap.add_argument("--grey", type=float, default=0.3)
    ap.add_argument("--chroma", action="store_true", help="fit the maps with their colourfulness head (the "
                    "shipped ones have none) and measure them with and without it")
    ap.add_argument("--no-write", dest="write", action="store_false", help="measure only")
    ap.add_argument("--out", type=Path, default=None, help="write the maps to this file instead of the shipped one")
    ap.add_argument("--tag", default=None, help="suffix of the results files (default: none when writing "
                    "the maps, _lams when measuring only)")
    args = ap.parse_args()
    if args.mode == "cost":
        cost(args.stages)
        return

    import torch

    torch.set_num_threads(2)
    import preimage
    from preimage.images import SAMPLES, load_batch
    from preimage.layers import FeatureExtractor
    from preimage.metrics import psnr
    import torch.nn.functional as F

    from preimage.starts import SHIPPED, WALLPAPERS, _chroma, fit_colour_starts, natural_photos, save_starts

    photos = natural_photos()
    if len(photos) < 30:
        sys.exit(f"only {len(photos)} photos found; install Debian's {', '.join(WALLPAPERS)}")
    model = preimage.load_model("efficientnet_lite0")
    test = [s for s in SAMPLES if s != "cat"]  # cat is chelsea
    ref = load_batch([f"sample:{p}" for p in test], model.input_size, channels=3)[0]
    with torch.no_grad():
        feats = FeatureExtractor(model, args.stages)(model.normalize(ref))
    grey = [psnr(torch.full_like(ref[i:i + 1], 0.5), ref[i:i + 1]).item() for i in range(len(test))]
    rows, shipped = [], []
    t0 = time.perf_counter()
    fits = fit_colour_starts(model, args.stages, photos, lams=args.lams, crops=args.crops, grey=args.grey,
                             chroma=args.chroma)
    for stage, fit in zip([s for s in args.stages for _ in args.lams], fits):  # layer-major
        for head, start in ((args.chroma, fit), (False, dataclasses.replace(fit, chroma_weight=None)))[:1 + args.chroma]:
            pred = start.predict(feats[stage], tuple(ref.shape[-2:]))
            ps = [psnr(pred[i:i + 1], ref[i:i + 1]).item() for i in range(len(test))]
            rows.append({"stage": stage, "lam": fit.lam, "chroma": head, "psnr": dict(zip(test, ps)),
                         "median": statistics.median(ps)})
            if head:  # the head's colourfulness against each photo's own, on the map's cell grid
                rows[-1]["chroma_pred"] = dict(zip(test, start.chroma(feats[stage]).tolist()))
            print(json.dumps({"stage": stage, "lam": fit.lam, "chroma": head, "median": round(rows[-1]["median"], 2)}),
                  flush=True)
        if fit.lam == args.lams[0]:
            shipped.append(fit)
    seconds = time.perf_counter() - t0
    dest = args.out or SHIPPED
    if args.write:
        save_starts(shipped, dest)
    lines = [f"Start PSNR (dB) against each bundled photo: the colour start fitted on {len(photos)} photos "
             f"({args.crops} crops each, {args.grey:.0%} made grey)"
             + (", with its colourfulness head (head: yes) and without it (the map alone)," if args.chroma else "")
             + " and a grey start (0.5).", "",
             "| stage | λ | head | median | " + " | ".join(test) + " |", "|---|---|---|---|" + "---|" * len(test)]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['lam']:g} | {'yes' if r['chroma'] else 'no'} | {r['median']:.2f} | "
                     + " | ".join(f"{r['psnr'][p]:.1f}" for p in test) + " |")
    lines.append("| grey | — | — | " + f"{statistics.median(grey):.2f} | " + " | ".join(f"{v:.1f}" for v in grey) + " |")
    h, w = feats[args.stages[0]].shape[-2:]
    own = _chroma(F.interpolate(ref, size=(h * fits[0].cells, w * fits[0].cells), mode="area")).tolist()
    heads = [r for r in rows if "chroma_pred" in r]
    if heads:
        lines += ["", "Colourfulness (the RMS distance of the cells' colours from their grey): each photo's own, and "
                  "the head's prediction from the features.", "",
                  "| stage | λ | " + " | ".join(test) + " |", "|---|---|" + "---|" * len(test),
                  "| photo | — | " + " | ".join(f"{v:.3f}" for v in own) + " |"]
        lines += [f"| {r['stage']} | {r['lam']:g} | " + " | ".join(f"{r['chroma_pred'][p]:.3f}" for p in test) + " |"
                  for r in heads]
    lines.append("")
    where = dest.resolve().relative_to(ROOT) if dest.resolve().is_relative_to(ROOT) else dest
    lines.append(f"{len(fits)} fits in {seconds:.0f} s" + (f"; λ = {args.lams[0]:g} written to {where}."
                                                          if args.write else "."))
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = args.tag if args.tag is not None else ("" if args.write and args.out is None else "_lams")
    (RESULTS / f"colour_start_fit{tag}.json").write_text(json.dumps({"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "photos": [str(p) for p in photos],
                                                                       "rows": rows, "grey": dict(zip(test, grey)),
                                                                       "colourfulness": dict(zip(test, own)),
                                                                       "seconds": seconds}, indent=2) + "\n")
    (RESULTS / f"colour_start_fit{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def cost(stages: list[str], repeats: int = 20) -> None:
    """Milliseconds the learned start adds to an inversion (one thread): the first call of a process
    (which loads the shipped maps) and the median of later ones, per stage."""
    import torch

    torch.set_num_threads(1)
    import preimage
    from preimage.images import load_tensor
    from preimage.layers import FeatureExtractor
    from preimage.tasks.invert import _learned_start

    model = preimage.load_model("efficientnet_lite0")
    x = load_tensor("sample:chelsea", model.input_size)
    lines = ["| stage | first call ms | later calls ms (median) |", "|---|---|---|"]
    for s in stages:
        feats = FeatureExtractor(model, [s])(model.normalize(x))
        times = []
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            _learned_start(model, [s], feats, required=True)
            times.append((time.perf_counter() - t0) * 1000)
        lines.append(f"| {s} | {times[0]:.1f} | {statistics.median(times[1:]):.2f} |")
    lines.append(f"sample:chelsea, one thread; the first call of the process loads the maps. {repeats} later calls.")
    (RESULTS / "colour_start_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
