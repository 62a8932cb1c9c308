"""Where the colour of deep pre-images comes from, measured on the embedded efficientnet_lite0.

The default preset's deep-layer recipe (a Laplacian pyramid, benchmarks/invert_deep.py) keeps the
photo's geometry at blocks.5, blocks.6 and conv_head but not its colours, and PSNR follows the colours.
Three measurements say why, and one candidate recipe is tried:

    # 1. how far a colour photo's own features move when its colours change (no optimization)
    python benchmarks/invert_colour.py shift
    # 2. a global colour map (3x3 matrix + offset) fitted to the feature loss, starting from the default's
    #    saved reconstructions (benchmarks/results/invert_deep_table/pyr_tv2/): does the colour move?
    python benchmarks/invert_colour.py colourmap
    # 3. the default deep recipe from other starts: the photo's mean colour and its 7x7 layout (oracles:
    #    information the features are not given), and a colour layout predicted from the features by
    #    ridge regression fitted on the other photos that ship with the dependencies (a learned start)
    python benchmarks/invert_colour.py start --jobs 2
    # the rows of start next to the default's, and the figure docs/images/deep_colour_starts.png
    python benchmarks/invert_colour.py start-summary benchmarks/results/invert_colour_start_*.jsonl \
        --default benchmarks/results/invert_deep_table_{before,deep,deep3,deep4}.jsonl
    python benchmarks/invert_colour.py figure

Writes benchmarks/results/invert_colour_<mode>.{json,md} (``start`` also ``.jsonl`` rows in the format
of invert_deep.py, so its summary mode can put them next to the table's ``before``/``default`` rows).
Each inversion runs on one thread, 600 steps (the default preset).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DEEP = ["blocks.5", "blocks.6", "conv_head"]
TEN = ["chelsea", "coffee", "astronaut", "rocket", "camera", "immunohistochemistry", "coins", "clock", "retina",
       "brick"]
#: the bundled photos in colour (the others are grey, and a change of colour does nothing to them)
COLOUR = ["chelsea", "coffee", "astronaut", "rocket", "immunohistochemistry", "retina", "colorwheel", "logo",
          "hubble_deep_field"]
JUDGE = "efficientnet_lite2"
SIZE = 224


def _model():
    import preimage

    return preimage.load_model("efficientnet_lite0")


def _photos(names: list[str]):
    from preimage.images import load_batch

    return load_batch([f"sample:{p}" for p in names], SIZE, channels=3)[0]


def shift(photos: list[str]) -> None:
    """Feature error and PSNR of the photo under global colour changes, median over photos."""
    import torch

    from preimage.layers import FeatureExtractor
    from preimage.metrics import feature_error, psnr

    model, ref = _model(), _photos(photos)
    mean, grey = ref.mean((2, 3), keepdim=True), ref.mean(1, keepdim=True)
    variants = {
        "brightness +0.1": (ref + 0.1).clamp(0, 1), "brightness -0.1": (ref - 0.1).clamp(0, 1),
        "contrast x0.5": mean + 0.5 * (ref - mean), "saturation x0.5": grey + 0.5 * (ref - grey),
        "greyscale": grey.expand_as(ref), "channels rotated (RGB->BRG)": ref[:, [2, 0, 1]],
        "mean colour moved to grey": (ref - mean + 0.5).clamp(0, 1), "flat mean colour": mean.expand_as(ref),
    }
    ex = FeatureExtractor(model, DEEP)
    rows = []
    with torch.no_grad():
        target = ex(model.normalize(ref))
        for name, v in variants.items():
            f = ex(model.normalize(v))
            rows.append({"variant": name, "psnr": statistics.median(psnr(v, ref).tolist()),
                         **{s: statistics.median(feature_error(f[s], target[s]).tolist()) for s in DEEP}})
    lines = ["| the photo, changed | median PSNR dB | " + " | ".join(f"feature error {s}" for s in DEEP) + " |",
             "|---|---|" + "---|" * len(DEEP)]
    lines += [f"| {r['variant']} | {r['psnr']:.1f} | " + " | ".join(f"{r[s]:.3f}" for s in DEEP) + " |" for r in rows]
    lines.append(f"Medians over {len(photos)} photos: {', '.join(photos)}.")
    _write("shift", {"photos": photos, "rows": rows}, lines)


def colourmap(photos: list[str], steps: int = 150) -> None:
    """From each saved reconstruction of the default's deep recipe, fit ``x' = A (x - 0.5) + 0.5 + b``
    (A 3x3, b 3) to the normalized feature loss alone (Adam, lr 0.01): the error and PSNR before and
    after, and how far A and b moved."""
    import torch

    from preimage.images import load_tensor
    from preimage.layers import FeatureExtractor
    from preimage.metrics import feature_error, psnr

    torch.set_num_threads(2)
    model = _model()
    folder = RESULTS / "invert_deep_table" / "pyr_tv2"
    rows = []
    for ph in photos:
        ref = _photos([ph])
        for s in DEEP:
            path = folder / f"{ph}_{s}.png"
            if not path.exists():
                continue
            rec = load_tensor(path, SIZE)
            ex = FeatureExtractor(model, [s])
            with torch.no_grad():
                target = ex(model.normalize(ref))[s]
            a = torch.eye(3, requires_grad=True)
            b = torch.zeros(3, 1, 1, requires_grad=True)
            opt = torch.optim.Adam([a, b], lr=0.01)

            def mapped() -> torch.Tensor:
                return (torch.einsum("dc,bchw->bdhw", a, rec - 0.5) + 0.5 + b).clamp(0, 1)

            with torch.no_grad():
                e0 = feature_error(ex(model.normalize(rec))[s], target).item()
            for _ in range(steps):
                loss = feature_error(ex(model.normalize(mapped()))[s], target).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                x = mapped()
                e1 = feature_error(ex(model.normalize(x))[s], target).item()
            rows.append({"photo": ph, "stage": s, "error_before": e0, "error_after": e1,
                         "psnr_before": psnr(rec, ref).item(), "psnr_after": psnr(x, ref).item(),
                         "matrix_change": (a.detach() - torch.eye(3)).abs().max().item(),
                         "offset_change": b.detach().abs().max().item()})
    lines = ["| stage | photos | median error before → after | median PSNR before → after dB | "
             "largest change of A / b |", "|---|---|---|---|---|"]
    for s in DEEP:
        sel = [r for r in rows if r["stage"] == s]
        if sel:
            med = lambda k: statistics.median(r[k] for r in sel)  # noqa: E731
            lines.append(f"| {s} | {len(sel)} | {med('error_before'):.3f} → {med('error_after'):.3f} | "
                         f"{med('psnr_before'):.2f} → {med('psnr_after'):.2f} | "
                         f"{max(r['matrix_change'] for r in sel):.3f} / {max(r['offset_change'] for r in sel):.3f} |")
    lines.append(f"{steps} Adam steps (lr 0.01) per reconstruction, from {folder.relative_to(ROOT)}.")
    _write("colourmap", {"steps": steps, "rows": rows}, lines)


# --- the learned start: ridge regression from a layer's features to the image's coarse colours ---------

def reference_sources() -> list[str]:
    """Photos that ship with the dependencies: scikit-image's samples (cat is chelsea), scikit-learn's
    two and matplotlib's portrait."""
    import os

    import matplotlib
    import sklearn

    from preimage.images import SAMPLES

    here = [os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images", f) for f in ("china.jpg", "flower.jpg")]
    here.append(os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg"))
    return [f"sample:{s}" for s in SAMPLES if s != "cat"] + here


def fit_start(model, stage: str, exclude: str, *, crops: int = 8, cells: int = 4,
              lams=(0.01, 0.1, 1.0, 10.0)) -> tuple:
    """Ridge regression from ``stage``'s features (standardized) to the coarse colours, fitted on every
    reference photo but ``exclude``; the weight λ is chosen by 4-fold cross-validation over photos.
    Returns the map (a :class:`preimage.starts.ColourStart`) and the cross-validation errors."""
    import torch

    from preimage.layers import FeatureExtractor
    from preimage.starts import ColourStart, _crops, _ridge, _rows

    ex = FeatureExtractor(model, [stage])
    gen = torch.Generator().manual_seed(0)
    parts = []
    with torch.no_grad():
        for src in reference_sources():
            if src == f"sample:{exclude}":
                continue
            imgs = _crops(src, crops, SIZE, gen)
            parts.append(_rows(ex(model.normalize(imgs))[stage], imgs, cells))
    x = torch.cat([p[0] for p in parts])
    mu, sd = x.mean(0), x.std(0) + 1e-6
    parts = [((px - mu) / sd, py) for px, py in parts]
    folds = [list(range(i, len(parts), 4)) for i in range(4)]
    cv = {}
    for lam in lams:
        err = 0.0
        for fold in folds:
            train = [p for i, p in enumerate(parts) if i not in fold]
            xs, ys = torch.cat([p[0] for p in train]), torch.cat([p[1] for p in train])
            ym = ys.mean(0)
            wt = _ridge(xs, ys - ym, lam)
            err += sum(((parts[i][0] @ wt + ym - parts[i][1]) ** 2).sum().item() for i in fold)
        cv[lam] = err
    lam = min(cv, key=cv.get)
    xs, ys = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    ym = ys.mean(0)
    start = ColourStart(model=model.name, layer=stage, mean=mu, std=sd, weight=_ridge(xs, ys - ym, lam), bias=ym,
                        cells=cells, lam=lam, crops=crops, grey=0.0)
    return start, {"photos": len(parts), "cv": cv}


def make_start(model, kind: str, photo: str, stage: str) -> tuple[Path, dict]:
    """Write the start image of ``kind`` (mean, layout, learned) for ``photo`` at ``stage`` of ``model``."""
    import torch
    import torch.nn.functional as F

    from preimage.images import save_image
    from preimage.layers import FeatureExtractor
    from preimage.metrics import psnr

    ref = _photos([photo])
    info: dict = {}
    if kind == "mean":
        x = ref.mean((2, 3), keepdim=True).expand_as(ref)
    elif kind == "layout":
        x = F.interpolate(F.interpolate(ref, size=(7, 7), mode="area"), size=ref.shape[-2:], mode="bilinear",
                          align_corners=False)
    else:
        fit, cv = fit_start(model, stage, photo)
        with torch.no_grad():
            x = fit.predict(FeatureExtractor(model, [stage])(model.normalize(ref))[stage], tuple(ref.shape[-2:]))
        info = {"lambda": fit.lam, "reference_photos": cv["photos"]}
    info["start_psnr"] = psnr(x, ref).item()
    path = RESULTS / "invert_colour" / "starts" / f"{kind}_{photo}_{stage}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(x[0], path)
    return path, info


_CACHE: dict = {}


def one(job: tuple[str, str, str]) -> dict:
    import torch

    torch.set_num_threads(1)
    import preimage
    from preimage.images import save_image
    from preimage.tasks.invert import invert

    kind, photo, stage = job
    if not _CACHE:
        _CACHE.update(model=_model(), judge=preimage.load_model(JUDGE))
    path, info = make_start(_CACHE["model"], kind, photo, stage)
    t0 = time.perf_counter()
    res = invert(_CACHE["model"], f"sample:{photo}", layers=[stage], init=str(path), judge=_CACHE["judge"])
    seconds = time.perf_counter() - t0
    out = RESULTS / "invert_colour" / kind
    out.mkdir(parents=True, exist_ok=True)
    save_image(res.image[0], out / f"{photo}_{stage}.png")
    m, j = res.metrics[0], res.metrics[0]["judge"]
    return {"recipe": f"start_{kind}", "photo": photo, "stage": stage, "status": res.status,
            "steps": res.result.steps, "deep_recipe": res.effective["deep_recipe"],
            "feature_error": m["feature_error"][stage], "psnr": m["psnr"], "ssim": m["ssim"],
            "tv_ratio": m["tv_ratio"], "judge_agrees": j["agrees"], "judge_rank": j["rank"],
            "judge_p": j["p_original_class"], "judge_original": j["original_class"], "judge_class": j["class"],
            "seconds": seconds, **info}


def start(kinds: list[str], photos: list[str], stages: list[str], jobs: int, tag: str = "") -> None:
    todo = [(k, p, s) for k in kinds for p in photos for s in stages if not (k != "learned" and s != stages[0])]
    rows = []
    t0 = time.perf_counter()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(jobs) as pool, open(RESULTS / f"invert_colour_start{tag}.jsonl", "w") as raw:
        for row in pool.map(one, todo):
            rows.append(row)
            print(json.dumps(row), file=raw, flush=True)
            print(json.dumps(row), flush=True)
    print(f"{len(todo)} inversions, {jobs} jobs of one thread: {time.perf_counter() - t0:.0f} s.")


def start_summary(files: list[str], default_files: list[str]) -> None:
    """Medians per start and stage of the ``start`` rows, next to free pixels and the default from the
    grey start (``before`` and ``pyr_tv2``/``default`` rows of invert_deep.py's table for the same photos
    and stages), and every row."""
    rows = [json.loads(ln) for f in files for ln in Path(f).read_text().splitlines() if ln.strip()]
    base = [json.loads(ln) for f in default_files for ln in Path(f).read_text().splitlines() if ln.strip()]
    label = {"before": "free pixels (grey start)", "pyr_tv2": "default (grey start)", "default": "default (grey start)"}
    base = {(label[r["recipe"]], r["photo"], r["stage"]): {**r, "recipe": label[r["recipe"]]} for r in base
            if r["recipe"] in label}
    keys = {(r["photo"], r["stage"]) for r in rows}
    names = {"start_mean": "the photo's mean colour (oracle)", "start_layout": "the photo's 7x7 layout (oracle)",
             "start_learned": "learned (ridge regression)"}
    table = [base[k] for k in sorted(base) if k[1:] in keys] + [{**r, "recipe": names.get(r["recipe"], r["recipe"])}
                                                                 for r in rows]
    lines = ["| start | stage | photos | median start PSNR dB | median PSNR dB | judge top-1 agrees | median TV ratio | "
             "median feature error |", "|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["recipe"] for r in table):
        for s in DEEP:
            sel = [r for r in table if r["recipe"] == name and r["stage"] == s]
            if not sel:
                continue
            med = lambda k: statistics.median(r[k] for r in sel)  # noqa: E731
            sp = f"{med('start_psnr'):.1f}" if "start_psnr" in sel[0] else "—"
            lines.append(f"| {name} | {s} | {len(sel)} | {sp} | {med('psnr'):.1f} | "
                         f"{sum(r['judge_agrees'] for r in sel)}/{len(sel)} | {med('tv_ratio'):.2f} | "
                         f"{med('feature_error'):.3f} |")
    lines += ["", "| start | stage | photo | start PSNR dB | PSNR dB | TV ratio | feature error | judge agrees, rank |",
              "|---|---|---|---|---|---|---|---|"]
    for r in table:
        sp = f"{r['start_psnr']:.1f}" if "start_psnr" in r else "—"
        lines.append(f"| {r['recipe']} | {r['stage']} | {r['photo']} | {sp} | {r['psnr']:.1f} | {r['tv_ratio']:.2f} | "
                     f"{r['feature_error']:.3f} | {'yes' if r['judge_agrees'] else 'no'}, {r['judge_rank']} |")
    _write("start", {"files": files, "default_files": default_files, "rows": table}, lines)


def figure(photos: list[str], stage: str = "blocks.5") -> None:
    """docs/images/deep_colour_starts.png: per photo, the photo, the default's pre-image from the grey
    start (benchmarks/results/invert_deep_table/pyr_tv2/) and from each start of ``start`` (the start
    image beside its pre-image), at ``stage``; the numbers are PSNR."""
    from PIL import Image, ImageDraw

    from preimage.images import load_tensor, to_pil
    from preimage.metrics import psnr

    tile, pad, label = 128, 4, 16
    cols = [("photo", None, None), ("default", RESULTS / "invert_deep_table" / "pyr_tv2", None)]
    for kind in ("mean", "layout", "learned"):
        cols += [(f"{kind} start", None, RESULTS / "invert_colour" / "starts" / f"{kind}_{{photo}}_{stage}.png"),
                 (f"from {kind}", RESULTS / "invert_colour" / kind, None)]
    canvas = Image.new("RGB", (len(cols) * (tile + pad) + pad, len(photos) * (tile + label + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i, ph in enumerate(photos):
        ref = load_tensor(f"sample:{ph}", SIZE)
        for j, (name, folder, start_path) in enumerate(cols):
            path = Path(str(start_path).format(photo=ph)) if start_path else (folder / f"{ph}_{stage}.png" if folder else None)
            x, y = pad + j * (tile + pad), pad + i * (tile + label + pad)
            if path is None:
                img, text = to_pil(ref[0]), ph
            elif path.exists():
                t = load_tensor(path, SIZE)
                img, text = to_pil(t[0]), f"{name} {psnr(t, ref).item():.1f}"
            else:
                continue
            draw.text((x + 2, y + 3), text, fill="black")
            canvas.paste(img.resize((tile, tile)), (x, y + label))
    dest = ROOT / "docs" / "images" / "deep_colour_starts.png"
    canvas.save(dest)
    print(dest)


def _write(mode: str, data: dict, lines: list[str]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"invert_colour_{mode}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (RESULTS / f"invert_colour_{mode}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["shift", "colourmap", "start", "start-summary", "figure"])
    ap.add_argument("files", nargs="*", help="start-summary: the start rows (.jsonl)")
    ap.add_argument("--default", nargs="*", default=[], help="start-summary: invert_deep.py table rows (.jsonl)")
    ap.add_argument("--tag", default="", help="start: suffix of the rows file")
    ap.add_argument("--photos", nargs="+", default=None,
                    help="default: the bundled colour photos for shift, the ten of the deep-layer comparison else")
    ap.add_argument("--stages", nargs="+", default=["blocks.5", "conv_head"],
                    help="start: the oracle starts run at the first stage only, the learned one at each")
    ap.add_argument("--starts", nargs="+", default=["mean", "layout", "learned"], choices=["mean", "layout", "learned"])
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    if args.mode == "shift":
        shift(args.photos or COLOUR)
    elif args.mode == "colourmap":
        colourmap(args.photos or TEN)
    elif args.mode == "figure":
        figure(args.photos or ["rocket", "camera", "clock", "retina"], args.stages[0])
    elif args.mode == "start":
        start(args.starts, args.photos or TEN, args.stages, args.jobs, args.tag)
    else:
        start_summary(args.files, args.default)


if __name__ == "__main__":
    main()
