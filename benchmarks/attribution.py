"""Attribution benchmark on the embedded efficientnet_lite0: faithfulness, a sanity check, and speed vs Captum.

    nice -n 10 .venv/bin/python benchmarks/attribution.py [--steps 16] [--random-photos 8] [--time-photos 4]

1. **Deletion / insertion** (Petsiuk, Das & Saenko 2018, RISE): for every bundled photo (``sample:NAME``,
   all of ``preimage.images.SAMPLES``) and every method, the explained class is the prediction; pixels are
   ranked by the map (ties broken by a seeded random order) and removed (set to black) or inserted
   (into a copy blurred with σ = 5 px) in ``--steps`` equal chunks; the score is the area under the curve
   of p(class) against the fraction of pixels (trapezoid rule). Lower deletion and higher insertion are
   better. Baselines: a uniform random map and a centre prior ``-‖(i, j) - centre‖²``.
2. **Model randomization** (Adebayo et al. 2018): the parameters of the top layers are re-drawn from a
   seeded normal with each tensor's own mean and std (cascading: ``classifier``, then also ``conv_head``,
   ``bn2`` and ``blocks.6``), the maps recomputed for the same class, and the Spearman rank correlation of
   each map with the original one averaged over the first ``--random-photos`` photos. A map that explains
   the model should change (low correlation).
3. **Speed** (run first, before anything else has loaded the machine): seconds per image for a batch of
   ``--time-photos`` photos, preimage against Captum 0.9 with the same settings (batch 32 rows per pass),
   alternating runs (and which goes first), the median of ``--repeats`` calls after a warm-up call. Captum's
   GuidedBackprop hooks ``nn.ReLU`` only, so on EfficientNet-Lite (ReLU6) it computes the plain gradient;
   the guided methods are therefore timed again on a copy of the model with ReLU for ReLU6, where both
   libraries apply the guided rule.

Settings are the CLI defaults except where noted: SmoothGrad 25 samples σ 0.15; Grad-CAM on ``bn2``;
IG 32 Gauss-Legendre steps from black; occlusion 32 px windows, stride 16, grey 0.5. One CPU thread.

Writes benchmarks/results/attribution.json and attribution.md, and docs/images/attribution_grid.png.
"""
from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import preimage  # noqa: E402
from preimage.images import SAMPLES, load_batch  # noqa: E402
from preimage.io import atomic_write, versions, write_json  # noqa: E402
from preimage.models import Model  # noqa: E402
from preimage.tasks.saliency import saliency  # noqa: E402
from preimage.transforms import gaussian_blur  # noqa: E402

METHODS = ["vanilla", "smoothgrad", "gradxinput", "gradcam", "gradcam++", "guided-backprop", "guided-gradcam",
           "ig", "occlusion"]
BASELINE_MAPS = ["random", "centre"]
SETTINGS = dict(samples=25, noise=0.15, steps=32, baseline="black", window=32, stride=16, fill=0.5, batch_size=32)
GRID_PHOTOS = ["chelsea", "coffee", "astronaut", "rocket"]


def compute_maps(model: Model, pixels: torch.Tensor, classes: list[int], chunk: int = 4) -> dict[str, torch.Tensor]:
    out: dict[str, list[torch.Tensor]] = {m: [] for m in METHODS}
    for s in range(0, pixels.shape[0], chunk):
        r = saliency(model, pixels[s:s + chunk], target=classes[s:s + chunk], method=METHODS, seed=0, **SETTINGS)
        for m in METHODS:
            out[m].append(r.maps[m])
    return {m: torch.cat(v) for m, v in out.items()}


def baseline_maps(b: int, h: int, w: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    return {"random": torch.rand(b, h, w, generator=g), "centre": (-(yy**2 + xx**2)).expand(b, h, w).clone()}


def order(m: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Pixel indices from most to least important; ties in a seeded random order."""
    flat = m.flatten()
    perm = torch.randperm(flat.numel(), generator=g)
    return perm[torch.argsort(flat[perm], descending=True, stable=True)]


def curves(model: Model, image: torch.Tensor, cls: int, m: torch.Tensor, steps: int, g: torch.Generator
           ) -> tuple[float, float, list[float], list[float]]:
    """Deletion and insertion AUCs (and curves) of one map on one image."""
    _, h, w = image.shape
    idx = order(m, g)
    n = h * w
    blurred = gaussian_blur(image[None], 5.0)[0]
    dels, ins = [], []
    for k in range(steps + 1):
        keep = torch.zeros(n, dtype=torch.bool)
        keep[idx[: round(k * n / steps)]] = True
        mask = keep.view(1, h, w).float()
        dels.append(image * (1 - mask))
        ins.append(blurred * (1 - mask) + image * mask)
    with torch.no_grad():
        p = torch.cat([model(torch.stack(batch)).softmax(1)[:, cls]
                       for batch in (dels[:steps // 2 + 1], dels[steps // 2 + 1:], ins[:steps // 2 + 1],
                                     ins[steps // 2 + 1:])])
    d, i = p[: steps + 1], p[steps + 1:]

    def auc(y: torch.Tensor) -> float:
        return float(((y[1:] + y[:-1]) / 2).mean())

    return auc(d), auc(i), d.tolist(), i.tolist()


def randomized(model: Model, modules: list[str], seed: int) -> Model:
    net = copy.deepcopy(model.net)
    g = torch.Generator().manual_seed(seed)
    named = dict(net.named_modules())
    for name in modules:
        for p in named[name].parameters():
            mean, std = float(p.mean()), float(p.std()) if p.numel() > 1 else 0.0
            p.data = torch.randn(p.shape, generator=g) * std + mean
    return Model(name=f"{model.name}-random-{modules[-1]}", net=net, input_size=model.input_size, mean=model.mean,
                 std=model.std, classes=model.classes)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a.flatten().numpy(), b.flatten().numpy()).statistic)


def relu_copy(model: Model) -> Model:
    """The model with every ReLU6 replaced by a ReLU: what Captum's GuidedBackprop hooks."""
    net = copy.deepcopy(model.net)
    for parent in list(net.modules()):
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.ReLU6):
                setattr(parent, name, torch.nn.ReLU())
    return Model(name=f"{model.name}-relu", net=net, input_size=model.input_size, mean=model.mean, std=model.std,
                 classes=model.classes, channels_last=model.channels_last)


def time_method(model: Model, m: str, x: torch.Tensor, c: list[int], repeats: int) -> dict[str, float | None]:
    """Seconds per image of one method, preimage and Captum alternating (who goes first alternates too):
    the median of ``repeats`` calls after one warm-up call each (and the fastest call, ``*_min``)."""
    import statistics

    theirs = captum_runs(model).get(m)
    runs = {"preimage": lambda: saliency(model, x, target=c, method=m, seed=0, **SETTINGS)}
    if theirs is not None:
        runs["captum"] = lambda: theirs(x.clone(), c)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(repeats + 1):
        for k in (list(runs) if r % 2 else list(runs)[::-1]):
            t = time.perf_counter()
            runs[k]()
            if r:  # the first round warms up
                times[k].append(time.perf_counter() - t)
    n = x.shape[0]
    out: dict[str, float | None] = {"preimage": None, "captum": None}
    for k, v in times.items():
        out[k], out[f"{k}_min"] = statistics.median(v) / n, min(v) / n
    return out


def captum_runs(model: Model) -> dict[str, object]:
    from captum.attr import (GuidedBackprop, GuidedGradCam, InputXGradient, IntegratedGradients, LayerAttribution,
                             LayerGradCam, NoiseTunnel, Occlusion, Saliency)

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model.net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return model(x)

    f = Logits()
    bn2 = model.net.bn2
    size = (model.input_size, model.input_size)
    s = SETTINGS

    def gradcam(x, c):
        return LayerAttribution.interpolate(LayerGradCam(f, bn2).attribute(x, target=c, relu_attributions=True),
                                            size, interpolate_mode="bilinear")

    return {
        "vanilla": lambda x, c: Saliency(f).attribute(x, target=c),
        "smoothgrad": lambda x, c: NoiseTunnel(Saliency(f)).attribute(
            x, nt_type="smoothgrad", nt_samples=s["samples"], stdevs=s["noise"], target=c,
            nt_samples_batch_size=s["batch_size"]),
        "gradxinput": lambda x, c: InputXGradient(f).attribute(x, target=c),
        "gradcam": gradcam,
        "guided-backprop": lambda x, c: GuidedBackprop(f).attribute(x, target=c),
        "guided-gradcam": lambda x, c: GuidedGradCam(f, bn2).attribute(x, target=c, interpolate_mode="bilinear"),
        "ig": lambda x, c: IntegratedGradients(f).attribute(x, torch.zeros_like(x), target=c, n_steps=s["steps"],
                                                            internal_batch_size=s["batch_size"]),
        "occlusion": lambda x, c: Occlusion(f).attribute(
            x, sliding_window_shapes=(3, s["window"], s["window"]), strides=(3, s["stride"], s["stride"]),
            baselines=s["fill"], target=c, perturbations_per_eval=s["batch_size"]),
    }


def draw_grid(path: str, model, photos, pixels, classes, maps) -> None:
    """Photos x methods: each photo beside the heat map of every method (GRID_PHOTOS only)."""
    import torch.nn.functional as F

    from preimage.viz import grid, heatmap, normalize_map

    cells, labels = [], []
    half = model.input_size // 2
    for p in GRID_PHOTOS:
        if p not in photos:
            continue
        i = photos.index(p)
        cells.append(F.interpolate(pixels[i:i + 1], size=(half, half), mode="area")[0])
        labels.append(f"{p}: {model.classes[classes[i]]}"[:24])
        for m in METHODS:
            h = heatmap(normalize_map(maps[m][i]))
            cells.append(F.interpolate(h[None], size=(half, half), mode="area")[0])
            labels.append(m)
    if cells:
        sheet = grid(cells, ncols=len(METHODS) + 1, labels=labels, font_size=11)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        sheet.save(path + ".tmp.png")
        Path(path + ".tmp.png").replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", default=",".join(SAMPLES))
    ap.add_argument("--steps", type=int, default=16, help="deletion/insertion chunks (default: 16)")
    ap.add_argument("--random-photos", type=int, default=8)
    ap.add_argument("--time-photos", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    ap.add_argument("--grid", default=str(ROOT / "docs/images/attribution_grid.png"))
    ap.add_argument("--render", metavar="JSON", help="only rewrite attribution.md from a saved attribution.json")
    ap.add_argument("--speed-only", dest="speed_only", action="store_true",
                    help="only time preimage against Captum and replace the speed of a saved attribution.json")
    ap.add_argument("--grid-only", dest="grid_only", action="store_true",
                    help="only draw the photos x methods grid (maps of the grid's photos; no scores)")
    args = ap.parse_args()
    if args.render:
        import json

        atomic_write(Path(args.out) / "attribution.md", markdown(json.loads(Path(args.render).read_text())).encode())
        return
    torch.set_num_threads(1)
    start = time.perf_counter()
    model = preimage.load_model("efficientnet_lite0")
    photos = [p.strip() for p in args.photos.split(",") if p.strip()]
    pixels, _, _ = load_batch([f"sample:{p}" for p in photos], model.input_size)
    with torch.no_grad():
        probs = torch.cat([model(pixels[s:s + 8]).softmax(1) for s in range(0, len(photos), 8)])
    classes = probs.argmax(1).tolist()
    if args.grid_only:
        keep = [i for i, p in enumerate(photos) if p in GRID_PHOTOS]
        photos, pixels, classes = [photos[i] for i in keep], pixels[keep], [classes[i] for i in keep]
        draw_grid(args.grid, model, photos, pixels, classes, compute_maps(model, pixels, classes))
        return
    log = lambda text: print(f"[{time.perf_counter() - start:7.1f}s] {text}", file=sys.stderr, flush=True)  # noqa: E731
    out = Path(args.out)
    if args.speed_only and not (out / "attribution.json").exists():
        raise SystemExit(f"--speed-only replaces the speed of {out / 'attribution.json'}, which does not exist")

    # 1. speed vs Captum (same settings, same batch), first, before anything else has warmed or loaded the
    # machine; the guided methods also on a copy with ReLU for ReLU6, where Captum does the same work
    t2 = time.perf_counter()
    n = min(args.time_photos, len(photos))
    x, c = pixels[:n].clone(), classes[:n]
    speed = {m: time_method(model, m, x, c, args.repeats) for m in METHODS}
    relu = relu_copy(model)
    speed_relu = {m: time_method(relu, m, x, c, args.repeats) for m in ("guided-backprop", "guided-gradcam")}
    for key, row in [*speed.items(), *((f"{k} (ReLU copy)", v) for k, v in speed_relu.items())]:
        log(f"speed {key}: preimage {row['preimage']:.4f} s/image, captum {row['captum']}")
    t_speed = time.perf_counter() - t2
    if args.speed_only:
        import json

        result = json.loads((out / "attribution.json").read_text())
        result["speed"] = {"photos": photos[:n], "repeats": args.repeats, "seconds_per_image": speed,
                           "relu_copy": speed_relu}
        result["seconds"]["speed"] = t_speed
        result["speed_command"] = ("nice -n 10 .venv/bin/python benchmarks/attribution.py "
                                   + " ".join(sys.argv[1:]))
        write_json(out / "attribution.json", result)
        atomic_write(out / "attribution.md", markdown(result).encode())
        return

    # 2. maps and deletion / insertion
    t0 = time.perf_counter()
    maps = compute_maps(model, pixels, classes)
    log(f"maps of {len(METHODS)} methods on {len(photos)} photos")
    maps.update(baseline_maps(len(photos), *pixels.shape[-2:], seed=args.seed))
    t_maps = time.perf_counter() - t0
    g = torch.Generator().manual_seed(args.seed)
    faith: dict[str, dict[str, object]] = {}
    for m in METHODS + BASELINE_MAPS:
        rows = [curves(model, pixels[i], classes[i], maps[m][i], args.steps, g) for i in range(len(photos))]
        faith[m] = {"deletion": sum(r[0] for r in rows) / len(rows), "insertion": sum(r[1] for r in rows) / len(rows),
                    "per_photo": {p: {"deletion": r[0], "insertion": r[1], "deletion_curve": r[2],
                                      "insertion_curve": r[3]} for p, r in zip(photos, rows)}}
        log(f"deletion/insertion {m}: {faith[m]['deletion']:.3f} / {faith[m]['insertion']:.3f}")
    t_faith = time.perf_counter() - t0 - t_maps

    # 3. model randomization
    t1 = time.perf_counter()
    k = min(args.random_photos, len(photos))
    cascade = [["classifier"], ["classifier", "bn2", "conv_head", "blocks.6"]]
    sanity: dict[str, dict[str, float]] = {}
    for level in cascade:
        rmodel = randomized(model, level, seed=args.seed)
        rmaps = compute_maps(rmodel, pixels[:k], classes[:k])
        key = "+".join(level)
        sanity[key] = {m: sum(spearman(maps[m][i], rmaps[m][i]) for i in range(k)) / k for m in METHODS}
        log(f"randomized {key}: " + ", ".join(f"{m} {v:.2f}" for m, v in sanity[key].items()))
    t_sanity = time.perf_counter() - t1

    draw_grid(args.grid, model, photos, pixels, classes, maps)

    total = time.perf_counter() - start
    result = {
        "model": model.name, "input_size": model.input_size, "photos": photos,
        "classes": {p: model.classes[c_] for p, c_ in zip(photos, classes)},
        "settings": SETTINGS, "deletion_insertion_steps": args.steps, "insertion_blur_sigma": 5.0,
        "faithfulness": faith, "randomization": {"photos": photos[:k], "spearman": sanity},
        "speed": {"photos": photos[:n], "repeats": args.repeats, "seconds_per_image": speed,
                  "relu_copy": speed_relu},
        "seconds": {"maps": t_maps, "deletion_insertion": t_faith, "randomization": t_sanity, "speed": t_speed,
                    "total": total},
        "threads": torch.get_num_threads(), "platform": platform.platform(), "versions": versions(),
        "command": "nice -n 10 .venv/bin/python benchmarks/attribution.py " + " ".join(sys.argv[1:]),
    }
    write_json(out / "attribution.json", result)
    atomic_write(out / "attribution.md", markdown(result).encode())
    log(f"done in {total:.0f} s")


def confident(r: dict, threshold: float = 0.5) -> list[str]:
    """Photos whose explained class starts at p >= threshold (the first point of every deletion curve)."""
    first = next(iter(r["faithfulness"].values()))["per_photo"]
    return [p for p, v in first.items() if v["deletion_curve"][0] >= threshold]


def normalized(f: dict, photos: list[str]) -> tuple[float, float]:
    """Deletion and insertion AUCs of ``photos`` with each curve divided by the photo's p(class):
    curves of photos the model is unsure of are not swamped by confident ones."""
    d = [v["deletion"] / v["deletion_curve"][0] for p, v in f["per_photo"].items() if p in photos]
    i = [v["insertion"] / v["deletion_curve"][0] for p, v in f["per_photo"].items() if p in photos]
    return sum(d) / len(d), sum(i) / len(i)


def markdown(r: dict) -> str:
    lines = [f"# Attribution benchmark ({r['model']}, {r['input_size']} px, {len(r['photos'])} photos, "
             f"{r['threads']} thread)", "", f"`{r['command']}`", "",
             *([f"Speed re-measured by `{r['speed_command']}`.", ""] if r.get("speed_command") else []),
             f"Deletion / insertion: {r['deletion_insertion_steps']} steps; randomization: "
             f"{len(r['randomization']['photos'])} photos; speed: batch of {len(r['speed']['photos'])} photos, "
             f"{'median' if 'preimage_min' in next(iter(r['speed']['seconds_per_image'].values())) else 'best'} "
             f"of {r['speed']['repeats']}.", "",
             "Deletion and insertion: the mean AUC of p(class) over all photos, then over the "
             f"{len(confident(r))} photos whose class starts at p >= 0.5 ({', '.join(confident(r))}) with each "
             "curve divided by the photo's p(class) (1 = the score never drops / is restored at once).", "",
             "| method | deletion AUC ↓ | insertion AUC ↑ | deletion, p≥0.5, normalized ↓ | insertion, p≥0.5, "
             "normalized ↑ | Spearman, classifier re-drawn | Spearman, top block re-drawn "
             "| preimage s/image | Captum s/image |", "|---|---|---|---|---|---|---|---|---|"]
    levels = list(r["randomization"]["spearman"])
    for m, f in r["faithfulness"].items():
        sp = [r["randomization"]["spearman"][lv].get(m) for lv in levels]
        speed = r["speed"]["seconds_per_image"].get(m, {})
        cap = speed.get("captum")
        ours = f"{speed['preimage']:.4f}" if speed else ""
        theirs = "" if not speed else ("n/a" if cap is None else f"{cap:.4f}")
        nd, ni = normalized(f, confident(r))
        lines.append(f"| {m} | {f['deletion']:.3f} | {f['insertion']:.3f} | {nd:.3f} | {ni:.3f} | "
                     + " | ".join("" if v is None else f"{v:.2f}" for v in sp) + f" | {ours} | {theirs} |")
    relu = r["speed"].get("relu_copy")
    if relu:
        lines += ["", "Guided methods on a copy of the model with ReLU for ReLU6 (Captum applies the guided rule "
                  "there too):", "", "| method | preimage s/image | Captum s/image | ratio |", "|---|---|---|---|"]
        lines += [f"| {m} | {v['preimage']:.4f} | {v['captum']:.4f} | {v['preimage'] / v['captum']:.2f} |"
                  for m, v in relu.items()]
    sec = r["seconds"]
    lines += ["", f"Wall time: {sec['total']:.0f} s (maps {sec['maps']:.0f} s, deletion/insertion "
              f"{sec['deletion_insertion']:.0f} s, randomization {sec['randomization']:.0f} s, speed "
              f"{sec['speed']:.0f} s).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
