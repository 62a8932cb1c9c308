"""How often can the judge agree? Cross-model recognition of the bundled photos themselves.

The deep-layer benchmark (benchmarks/invert_deep.py) judges each pre-image of efficientnet_lite0 by
efficientnet_lite2's top-1 class: does lite2 give the pre-image the class it gives the photo? This
script measures what that verdict can reach on the bundled photos, with no optimization:

    # 1. the photo itself, changed in ways a pre-image of deep features is not held to (detail, a shift,
    #    colour): PSNR, lite0's feature error at the deep stages, and each embedded classifier's top-1
    #    agreement with its own class for the unchanged photo
    python benchmarks/judge_ceiling.py photo
    # 2. saved pre-images (DIR/<photo>_<stage>.png, as invert_deep.py writes them): the same agreement
    #    for lite0 (the inverted network itself), lite1 and lite2
    python benchmarks/judge_ceiling.py preimages benchmarks/results/invert_deep_screen/pyr_tv2_learned_seed1 --tag _seed1
    # 3. the pre-images of several seeds (one folder each): lite2's verdict on each seed's image, on any
    #    seed's, on each image low-passed (Gaussian blur, half resolution) and on the seeds' mean image,
    #    with lite0's feature error and PSNR (do the verdicts rest on detail that differs from seed to seed?)
    python benchmarks/judge_ceiling.py smoothed benchmarks/results/invert_deep_screen/pyr_tv2_learned{,_seed1,_seed2,_seed3} \
        --photos chelsea coffee astronaut rocket camera clock grass retina --stages conv_head --tag _seeds

    # 4. pre-images of several recipes moved by 1 and 2 px: lite0's feature error and verdict, lite2's
    python benchmarks/judge_ceiling.py shifted benchmarks/results/invert_deep_screen/{pyr_tv2_learned,pyr_tv2_jit_all_j1,pyr_tv2_jit_all} \
        --stages conv_head
    # 5. lite2's verdict on those pre-images read at 224 px (lite0's grid), 260 px (its own) and 300 px
    python benchmarks/judge_ceiling.py sizes benchmarks/results/invert_deep_screen/{pyr_tv2_learned,pyr_tv2_jit_all} --stages conv_head

Writes benchmarks/results/judge_ceiling_<mode><tag>.{json,md}.
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DEEP = ["blocks.5", "blocks.6", "conv_head"]
NETS = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
SIZE = 224
#: the 21 distinct bundled photos (sample:cat is chelsea)
PHOTOS = ["chelsea", "coffee", "astronaut", "rocket", "camera", "immunohistochemistry", "coins", "clock", "retina",
          "brick", "moon", "page", "text", "hubble_deep_field", "colorwheel", "cell", "microaneurysms", "grass",
          "gravel", "checkerboard", "logo"]


def _nets():
    import preimage

    return {n: preimage.load_model(n) for n in NETS}


def _short(name: str) -> str:
    return name.replace("efficientnet_", "")


def _resample(x, factor: int):
    """Down by ``factor`` (antialiased), then back up (bilinear): the photo without its finest detail."""
    import torch.nn.functional as F

    small = F.interpolate(x, scale_factor=1 / factor, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(small, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)


def _shift(x, pixels: int):
    """The content moved ``pixels`` right and down, the uncovered border filled by reflection."""
    from preimage.metrics import shift

    return shift(x, pixels)


def _jpeg(x, quality: int):
    import torch

    from preimage.images import to_pil, to_tensor
    from PIL import Image

    out = []
    for im in x:
        buf = io.BytesIO()
        to_pil(im).save(buf, format="JPEG", quality=quality)
        out.append(to_tensor(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    return torch.cat(out)


def variants(ref) -> dict:
    grey = ref.mean(1, keepdim=True)
    return {
        "the photo": ref,
        "half resolution (112 px, upsampled)": _resample(ref, 2),
        "quarter resolution (56 px, upsampled)": _resample(ref, 4),
        "shifted 1 px": _shift(ref, 1),
        "shifted 2 px": _shift(ref, 2),
        "shifted 4 px": _shift(ref, 4),
        "shifted 8 px": _shift(ref, 8),
        "shifted 16 px": _shift(ref, 16),
        "JPEG quality 20": _jpeg(ref, 20),
        "saturation x0.5": grey + 0.5 * (ref - grey),
        "greyscale": grey.expand_as(ref),
        "brightness +0.1": (ref + 0.1).clamp(0, 1),
    }


def photo(photos: list[str], tag: str = "") -> None:
    """Each change of the photo: median PSNR, median feature error of lite0 at the deep stages, and
    how many photos each network still gives its own class for the unchanged photo."""
    import torch

    from preimage.images import load_batch
    from preimage.layers import FeatureExtractor
    from preimage.metrics import feature_error, judge_recognition, psnr

    nets = _nets()
    ref = load_batch([f"sample:{p}" for p in photos], SIZE, channels=3)[0]
    model = nets["efficientnet_lite0"]
    ex = FeatureExtractor(model, DEEP)
    rows = []
    with torch.no_grad():
        target = ex(model.normalize(ref))
        for name, v in variants(ref).items():
            f = ex(model.normalize(v))
            changed = (v - ref).flatten(1).abs().amax(1) > 1e-6  # a change of colour leaves grey photos as they are
            row = {"variant": name, "changed": int(changed.sum()),
                   "psnr": statistics.median(psnr(v, ref)[changed].tolist()) if changed.any() else None,
                   **{s: statistics.median(feature_error(f[s], target[s])[changed].tolist()) if changed.any() else 0.0
                      for s in DEEP}}
            for n, net in nets.items():
                agrees = judge_recognition(net, v, ref)["agrees"]
                row[n] = int(agrees.sum())
                row[f"{n}_photos"] = [p for p, a in zip(photos, agrees.tolist()) if a]
            rows.append(row)
        classes = {n: judge_recognition(net, ref, ref) for n, net in nets.items()}  # p: of its own top class
    names = {n: nets[n].classes for n in NETS}
    per_photo = [{"photo": p, **{n: names[n][int(classes[n]["original_class"][i])] for n in NETS},
                  **{f"{n}_p": float(classes[n]["p"][i]) for n in NETS}} for i, p in enumerate(photos)]
    same = sum(len({int(classes[n]["original_class"][i]) for n in NETS}) == 1 for i in range(len(photos)))
    lite0_lite2 = sum(int(classes[NETS[0]]["original_class"][i]) == int(classes[NETS[2]]["original_class"][i])
                      for i in range(len(photos)))
    k = len(photos)
    lines = ["| the photo, changed | photos changed | median PSNR dB | " + " | ".join(f"lite0 error {s}" for s in DEEP) + " | "
             + " | ".join(f"{_short(n)} agrees" for n in NETS) + " |",
             "|---|---|---|" + "---|" * (len(DEEP) + len(NETS))]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['changed']} | {'—' if r['psnr'] is None else format(r['psnr'], '.1f')} | " + " | ".join(f"{r[s]:.3f}" for s in DEEP) + " | "
                     + " | ".join(f"{r[n]}/{k}" for n in NETS) + " |")
    lines += ["", "PSNR and feature error: medians over the photos the change changes (a change of colour leaves "
              "the grey ones as they are); agreement: over every photo.", "",
              f"The three networks give the photo the same top-1 class on {same} of {k} photos; lite0 and "
              f"lite2 on {lite0_lite2}.", "",
              "| photo | " + " | ".join(f"{_short(n)}: class (p)" for n in NETS) + " |",
              "|---|" + "---|" * len(NETS)]
    lines += [f"| {r['photo']} | " + " | ".join(f"{r[n]} ({r[n + '_p']:.2f})" for n in NETS) + " |"
              for r in per_photo]
    _write(f"photo{tag}", {"photos": photos, "rows": rows, "per_photo": per_photo, "same_class": same,
                           "lite0_lite2_same": lite0_lite2}, lines)


def preimages(folder: Path, photos: list[str], stages: list[str], tag: str = "") -> None:
    """Each network's top-1 agreement on saved pre-images, against its own class for the photo."""
    from preimage.images import load_batch
    from preimage.metrics import judge_recognition

    nets = _nets()
    rows = []
    for s in stages:
        have = [p for p in photos if (folder / f"{p}_{s}.png").is_file()]
        if not have:
            raise SystemExit(f"no pre-images of {s} in {folder}")
        ref = load_batch([f"sample:{p}" for p in have], SIZE, channels=3)[0]
        x = load_batch([str(folder / f"{p}_{s}.png") for p in have], SIZE, channels=3)[0]
        row = {"stage": s, "photos": len(have)}
        for n, net in nets.items():
            agrees = judge_recognition(net, x, ref)["agrees"]
            row[n], row[f"{n}_photos"] = int(agrees.sum()), [p for p, a in zip(have, agrees.tolist()) if a]
        rows.append(row)
    lines = [f"Pre-images in `{folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder}`: "
             "each network's top-1 class for the pre-image against its class for the photo.", "",
             "| stage | " + " | ".join(f"{_short(n)} agrees" for n in NETS) + " |", "|---|" + "---|" * len(NETS)]
    lines += [f"| {r['stage']} | " + " | ".join(f"{r[n]}/{r['photos']}" for n in NETS) + " |" for r in rows]
    _write(f"preimages{tag}", {"folder": str(folder), "photos": photos, "rows": rows}, lines)


def _blur(x, sigma: float):
    """A separable Gaussian blur of std ``sigma`` px (reflected borders)."""
    import torch
    import torch.nn.functional as F

    r = int(3 * sigma + 0.5)
    k = torch.exp(-torch.arange(-r, r + 1, dtype=x.dtype) ** 2 / (2 * sigma**2))
    k = (k / k.sum()).repeat(x.shape[1], 1, 1, 1)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(-1, 1, 1, 2 * r + 1), groups=x.shape[1])
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(-1, 1, 2 * r + 1, 1), groups=x.shape[1])


def _saved(folders: list[Path], photos: list[str], stage: str, model):
    """The photos with a pre-image of ``stage`` in every folder, the photos, each folder's pre-images,
    ``model``'s extractor at ``stage`` and the photos' features there."""
    import torch

    from preimage.images import load_batch
    from preimage.layers import FeatureExtractor

    have = [p for p in photos if all((f / f"{p}_{stage}.png").is_file() for f in folders)]
    if not have:
        raise SystemExit(f"no photo has a pre-image of {stage} in every folder")
    ref = load_batch([f"sample:{p}" for p in have], SIZE, channels=3)[0]
    runs = [load_batch([str(f / f"{p}_{stage}.png") for p in have], SIZE, channels=3)[0] for f in folders]
    ex = FeatureExtractor(model, [stage])
    with torch.no_grad():
        target = ex(model.normalize(ref))[stage]
    return have, ref, runs, ex, target


def smoothed(folders: list[Path], photos: list[str], stages: list[str], tag: str = "") -> None:
    """lite2's verdict on the pre-images of several runs (seeds), each alone, any of them, each low-passed,
    and the runs' mean image; with lite0's feature error and PSNR."""
    import torch

    from preimage.metrics import feature_error, judge_recognition, psnr

    nets = _nets()
    model, judge = nets["efficientnet_lite0"], nets["efficientnet_lite2"]
    changes = {"as saved": lambda x: x, "Gaussian blur σ 0.7 px": lambda x: _blur(x, 0.7),
               "Gaussian blur σ 1.5 px": lambda x: _blur(x, 1.5), "half resolution": lambda x: _resample(x, 2)}
    rows = []
    for s in stages:
        have, ref, runs, ex, target = _saved(folders, photos, s, model)
        with torch.no_grad():

            def score(x) -> dict:
                x = x.clamp(0, 1)
                return {"agrees": judge_recognition(judge, x, ref)["agrees"].tolist(),
                        "feature_error": feature_error(ex(model.normalize(x))[s], target).tolist(),
                        "psnr": psnr(x, ref).tolist()}

            for name, change in changes.items():
                each = [score(change(x)) for x in runs]
                rows.append({"stage": s, "images": f"each run, {name}", "photos": have, "runs": each})
                if name == "as saved":  # restarts kept by the objective: per photo, the run closest to the features
                    best = [min(range(len(runs)), key=lambda k: each[k]["feature_error"][i]) for i in range(len(have))]
                    rows.append({"stage": s, "images": "per photo, the run with the lowest feature error",
                                 "photos": have, "runs": [{key: [each[k][key][i] for i, k in enumerate(best)]
                                                           for key in each[0]}]})
            rows.append({"stage": s, "images": "the mean of the first two runs",
                         "photos": have, "runs": [score(sum(runs[:2]) / 2)]})
            if len(runs) > 2:
                rows.append({"stage": s, "images": f"the mean of all {len(runs)} runs", "photos": have,
                             "runs": [score(sum(runs) / len(runs))]})
    lines = [f"Pre-images of {len(folders)} runs (" + ", ".join(f"`{f.name}`" for f in folders) + "): lite2's "
             "top-1 class against its class for the photo (per run, then on any run), lite0's feature error "
             "and PSNR (medians over photos and runs).", "",
             "| stage | images | lite2 agrees, per run | on any run | median feature error | median PSNR dB |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        n = len(r["photos"])
        any_run = sum(any(run["agrees"][i] for run in r["runs"]) for i in range(n))
        fe = statistics.median(v for run in r["runs"] for v in run["feature_error"])
        ps = statistics.median(v for run in r["runs"] for v in run["psnr"])
        per = ", ".join(f"{sum(run['agrees'])}" for run in r["runs"])
        lines.append(f"| {r['stage']} | {r['images']} | {per} of {n} | {any_run}/{n} | {fe:.3f} | {ps:.1f} |")
    _write(f"smoothed{tag}", {"folders": [str(f) for f in folders], "rows": rows}, lines)


def shifted(folders: list[Path], photos: list[str], stages: list[str], tag: str = "") -> None:
    """Saved pre-images of several recipes (one folder each), as saved and moved by 1 and 2 px: lite0's
    feature error and verdict, and lite2's (does a pre-image hold its fit, and lite0's class, when the
    pixel grid moves under it, as the photo nearly does?)."""
    import torch

    from preimage.metrics import feature_error, judge_recognition

    nets = _nets()
    model, judge = nets["efficientnet_lite0"], nets["efficientnet_lite2"]
    rows = []
    for s in stages:
        have, ref, runs, ex, target = _saved(folders, photos, s, model)
        with torch.no_grad():
            for name, x in [("the photo", ref)] + [(f.name, x) for f, x in zip(folders, runs)]:
                for px in (0, 1, 2):
                    y = _shift(x, px) if px else x
                    rows.append({"stage": s, "images": name, "shift": px, "photos": have,
                                 "feature_error": feature_error(ex(model.normalize(y))[s], target).tolist(),
                                 "lite0": judge_recognition(model, y, ref)["agrees"].tolist(),
                                 "lite2": judge_recognition(judge, y, ref)["agrees"].tolist()})
    lines = ["Pre-images as saved and moved right and down by 1 and 2 px (the border reflected): lite0's "
             "feature error to the photo's features (median) and top-1 agreement, and lite2's.", "",
             "| stage | images | shift px | median lite0 feature error | lite0 agrees | lite2 agrees |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        n = len(r["photos"])
        lines.append(f"| {r['stage']} | {r['images']} | {r['shift']} | {statistics.median(r['feature_error']):.3f} | "
                     f"{sum(r['lite0'])}/{n} | {sum(r['lite2'])}/{n} |")
    _write(f"shifted{tag}", {"folders": [str(f) for f in folders], "rows": rows}, lines)


def sizes(folders: list[Path], photos: list[str], stages: list[str], tag: str = "") -> None:
    """lite2's verdict on saved pre-images of several recipes when it reads them (and the photo) at
    224 px, lite0's own grid, at its own 260 px (the benchmark's judge), and at 300 px."""
    from preimage.metrics import judge_recognition

    nets = _nets()
    model, judge = nets["efficientnet_lite0"], nets["efficientnet_lite2"]
    px = (224, 260, 300)
    rows = []
    for s in stages:
        have, ref, runs, _, _ = _saved(folders, photos, s, model)
        for f, x in zip(folders, runs):
            rows.append({"stage": s, "images": f.name, "photos": have,
                         **{str(n): int(judge_recognition(judge, x, ref, input_size=n)["agrees"].sum()) for n in px}})
    lines = ["lite2's top-1 agreement on saved pre-images, both images resized to each size before it classifies them.",
             "", "| stage | images | " + " | ".join(f"lite2 at {n} px" for n in px) + " |", "|---|---|" + "---|" * len(px)]
    lines += [f"| {r['stage']} | {r['images']} | " + " | ".join(f"{r[str(n)]}/{len(r['photos'])}" for n in px) + " |"
              for r in rows]
    _write(f"sizes{tag}", {"folders": [str(f) for f in folders], "rows": rows}, lines)


def _write(mode: str, data: dict, lines: list[str]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"judge_ceiling_{mode}.json").write_text(json.dumps(data, indent=2) + "\n")
    (RESULTS / f"judge_ceiling_{mode}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["photo", "preimages", "smoothed", "shifted", "sizes"])
    ap.add_argument("folders", nargs="*", type=Path,
                    help="preimages: the folder of <photo>_<stage>.png; smoothed, shifted, sizes: one such folder per run "
                         "or recipe")
    ap.add_argument("--photos", nargs="+", default=PHOTOS)
    ap.add_argument("--stages", nargs="+", default=DEEP)
    ap.add_argument("--tag", default="", help="suffix of the results files")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.mode == "photo":
        photo(args.photos, args.tag)
    elif args.mode == "preimages":
        if len(args.folders) != 1:
            ap.error("preimages needs the folder of saved pre-images")
        preimages(args.folders[0].resolve(), args.photos, args.stages, args.tag)
    elif args.mode in ("shifted", "sizes"):
        if not args.folders:
            ap.error(f"{args.mode} needs one or more folders of saved pre-images")
        (shifted if args.mode == "shifted" else sizes)([f.resolve() for f in args.folders], args.photos, args.stages,
                                                       args.tag)
    else:
        if len(args.folders) < 2:
            ap.error("smoothed needs the folders of two or more runs")
        smoothed([f.resolve() for f in args.folders], args.photos, args.stages, args.tag)


if __name__ == "__main__":
    main()
