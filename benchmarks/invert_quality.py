"""Quality of inversion on the embedded models, stage by stage: the original algorithm vs the default
preset (and optionally others), on bundled photos.

    python benchmarks/invert_quality.py [--photos chelsea coffee astronaut] [--presets original default] [--jobs 2]
    python benchmarks/invert_quality.py --models efficientnet_lite1 efficientnet_lite2 --photos chelsea \
        --presets default --out invert_stability

Every reconstruction is also judged by another embedded network (``--judge``, default
efficientnet_lite2; ``--judge none`` turns it off): its top-1 agreement with the judge's class for the
photo and the rank of that class (:func:`preimage.metrics.judge_recognition`).

Writes benchmarks/results/<out>.{json,md} (``--out`` defaults to invert_quality) and, for
efficientnet_lite0 with the default preset, the "what each layer remembers" grid
docs/images/layers_<photo>.png for the first two photos.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
STAGES = [f"blocks.{i}" for i in range(7)] + ["conv_head"]


LITE0 = "efficientnet_lite0"


def image_dir(model: str, preset: str) -> Path:
    sub = preset if model == LITE0 else f"{model}/{preset}"
    return RESULTS / "invert_quality" / sub


def one(job: tuple[str, str, str, str, str]) -> dict:
    import torch

    torch.set_num_threads(1)
    import preimage
    from preimage.tasks.invert import invert

    model_name, preset, photo, stage, judge_name = job
    model = preimage.load_model(model_name)
    judge = preimage.load_model(judge_name) if judge_name != "none" else None
    t0 = time.perf_counter()
    res = invert(model, f"sample:{photo}", layers=[stage], preset=preset, judge=judge)
    m = res.metrics[0]
    out = image_dir(model_name, preset)
    out.mkdir(parents=True, exist_ok=True)
    from preimage.images import save_image

    save_image(res.image[0], out / f"{photo}_{stage}.png")
    return {"model": model_name, "input_size": model.input_size, "preset": preset, "photo": photo, "stage": stage,
            "status": res.status,
            "feature_error": m["feature_error"][stage], "tv_ratio": m["tv_ratio"], "psnr": m["psnr"],
            "ssim": m["ssim"], "top1_agrees": m["top1_agrees"], "steps": res.result.steps,
            "judge": m.get("judge"),
            "seconds": time.perf_counter() - t0}


#: the layer grid's layout: tile side, padding, label height, columns
TILE, PAD, LABEL, COLS = 224, 6, 22, 5


def grid(photo: str, preset: str) -> None:
    draw_layers(photo, image_dir(LITE0, preset))


def draw_layers(photo: str, folder: Path) -> None:
    """docs/images/layers_PHOTO.png: the photo, then ``folder/PHOTO_STAGE.png`` for every stage found."""
    from PIL import Image, ImageDraw

    from preimage.images import load_tensor, to_pil

    tiles = [("original", to_pil(load_tensor(f"sample:{photo}", TILE)))]
    for s in STAGES:
        path = folder / f"{photo}_{s}.png"
        if path.exists():
            tiles.append((s, Image.open(path).convert("RGB")))
    rows = (len(tiles) + COLS - 1) // COLS
    canvas = Image.new("RGB", (COLS * (TILE + PAD) + PAD, rows * (TILE + LABEL + PAD) + PAD), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (name, img) in enumerate(tiles):
        x, y = PAD + (i % COLS) * (TILE + PAD), PAD + (i // COLS) * (TILE + LABEL + PAD)
        draw.text((x + 2, y + 4), name, fill="black")
        canvas.paste(img.resize((TILE, TILE)), (x, y + LABEL))
    dest = ROOT / "docs" / "images" / f"layers_{photo}.png"
    dest.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(dest)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=[LITE0])
    ap.add_argument("--photos", nargs="+", default=["chelsea", "coffee", "astronaut"])
    ap.add_argument("--presets", nargs="+", default=["original", "default"])
    ap.add_argument("--stages", nargs="+", default=STAGES)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--judge", default="efficientnet_lite2", help="the judging classifier (none: off)")
    ap.add_argument("--out", default="invert_quality", help="name of the results files in benchmarks/results")
    args = ap.parse_args()
    jobs = [(m, p, ph, s, args.judge) for m in args.models for p in args.presets for ph in args.photos for s in args.stages]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = []
        for r in pool.map(one, jobs):
            rows.append(r)
            print(json.dumps(r), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    seconds = time.perf_counter() - t0
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"rows": rows, "seconds": seconds}, indent=2) + "\n")
    by = {(r["model"], r["preset"], r["photo"], r["stage"]): r for r in rows}
    lines = []
    for model, photo in [(m, ph) for m in args.models for ph in args.photos]:
        title = photo if args.models == [LITE0] else f"{model}, {photo}"
        judged = args.judge != "none"
        cols = ["error", "TV ratio"] + (["judge agrees, rank"] if judged else [])
        lines += [f"**{title}**", "", "| stage | " + " | ".join(f"{p} {c}" for p in args.presets for c in cols) + " |",
                  "|---|" + "---|" * len(cols) * len(args.presets)]
        for s in args.stages:
            cells = []
            for p in args.presets:
                r = by[(model, p, photo, s)]
                if r["status"] == "diverged":
                    cells += ["diverged"] + ["—"] * (len(cols) - 1)
                else:
                    cells += [f"{r['feature_error']:.3f}", f"{r['tv_ratio']:.2f}"]
                    if judged:
                        cells.append(f"{'yes' if r['judge']['agrees'] else 'no'}, {r['judge']['rank']}")
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(f"One run, {args.jobs} jobs: {seconds:.0f} s.")
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if "default" in args.presets and LITE0 in args.models:
        for photo in args.photos[:2]:
            grid(photo, "default")


if __name__ == "__main__":
    main()
