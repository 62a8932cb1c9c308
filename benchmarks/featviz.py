"""Feature-visualization benchmark on the embedded efficientnet_lite0 (issue 15).

    nice -n 10 OMP_NUM_THREADS=1 .venv/bin/python benchmarks/featviz.py --parts sweep,activation,lucent,throughput

Every score is a channel's *spatial-mean activation on the saved 8-bit visualization* (decoded again,
no transforms, at the size it was made) divided by the channel's *photo maximum*: the largest
spatial-mean activation over all crops of all bundled photos (``preimage.images.SAMPLES``, 22
photos of scikit-image; each resized so its shorter side is 224 px and again 448 px, then every
224 x 224 window at a stride of 112 px, plus the last window of each row and column).

Parts (each writes benchmarks/results/featviz_PART.json; featviz.md collects the tables):

- ``sweep``: the robustness transforms (pad, jitter, scale, rotation) compared on 8 channels
  (4 of blocks.4, 4 of blocks.5) at 128 px, 128 steps. Besides the ratio on the saved PNG as it is,
  the *robust ratio*: the mean over 8 fixed random perturbations of the saved PNG (shift up to
  ±12 px, scale 0.85-1.15, rotation ±10°), i.e. whether the picture still excites the channel when it
  is not seen pixel-aligned. The default recipe is the one with the best robust ratio.
- ``activation``: 32 channels (evenly spaced) of each of blocks.4 and blocks.5 at 224 px, the default
  recipe (256 steps), one batch of 32 per layer. Target: median ratio >= 3, none below 1.
- ``lucent``: torch-lucent's ``render_vis`` with its own defaults (fft + decorrelated image, Adam
  5e-2, its standard transforms) against ``preimage.visualize_objective`` with its defaults, the
  same channels (the first CHANNELS_LUCENT of each layer's 32), the same steps (256), the same batch
  (one batch per layer), lite0's normalization wrapped in front of the network for Lucent; median
  ratio and wall time per step.
- ``pictures``: docs/images/featviz_neuron_channel.png (a channel and its neuron at the centre of
  the map) and featviz_diversity.png (four images of the channel, diversity 0 and 1).
- ``throughput``: channels per minute at 128 and 224 px (one batch of the 32 blocks.5 channels,
  256 steps each, from the median time of a step; CPU time and wall time).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import preimage  # noqa: E402
from preimage.images import SAMPLES, load_image, save_image, to_tensor  # noqa: E402
from preimage.layers import FeatureExtractor  # noqa: E402
from preimage.objectives import channel  # noqa: E402
from preimage.tasks.featviz import visualize_objective  # noqa: E402
from preimage.tasks.fool import png_roundtrip  # noqa: E402
from preimage.transforms import rotate  # noqa: E402
from preimage.viz import grid  # noqa: E402

LAYERS = ("blocks.4", "blocks.5")
CHANNELS_LUCENT = 4  # per layer (to keep the whole benchmark near 30 minutes of one core)
SWEEP = {  # name -> FeatVizConfig overrides
    "none": dict(pad=0, jitter=0, scales=(), rotate=0.0),
    "jitter": dict(pad=0, jitter=16, scales=(), rotate=0.0),
    "jitter+scale": dict(pad=0, jitter=16, scales=(0.9, 0.95, 1.0, 1.05, 1.1), rotate=0.0),
    "jitter+scale+rotate": dict(pad=0, jitter=16, scales=(0.9, 0.95, 1.0, 1.05, 1.1), rotate=5.0),
    "pad+jitter+scale+rotate": dict(pad=16, jitter=16, scales=(0.9, 0.95, 1.0, 1.05, 1.1), rotate=5.0),
    "lucid (pad 12, jitter 8, scale 0.9-1.1, rotate 10)": dict(pad=12, jitter=8, scales=tuple(1 + (i - 5) / 50 for i in range(11)), rotate=10.0),
    # the last part of the steps without transforms (polish), after jitter + scale + rotate
    "jitter+scale+rotate, polish 0.05": dict(pad=0, jitter=16, scales=(0.9, 0.95, 1.0, 1.05, 1.1), rotate=5.0, polish=0.05),
    "jitter+scale+rotate, polish 0.1": dict(pad=0, jitter=16, scales=(0.9, 0.95, 1.0, 1.05, 1.1), rotate=5.0, polish=0.1),
    "jitter+scale+rotate, polish 0.2": dict(pad=0, jitter=16, scales=(0.9, 0.95, 1.0, 1.05, 1.1), rotate=5.0, polish=0.2),
}
OUT = ROOT / "benchmarks/results"


def channels_of(model, layer: str, n: int = 32) -> list[int]:
    c = preimage.list_layers(model)
    c = next(i.shape[0] for i in c if i.name == layer)
    step = c / n
    return [int(i * step) for i in range(n)]


def windows(length: int, size: int = 224, stride: int = 112) -> list[int]:
    starts = list(range(0, max(1, length - size + 1), stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def photo_max(model, layers=LAYERS) -> dict[str, torch.Tensor]:
    """Per layer, each channel's max over all crops of all bundled photos of the spatial-mean activation."""
    fx = FeatureExtractor(model, list(layers))
    best = {layer: None for layer in layers}
    crops = 0
    for name in SAMPLES:
        img = load_image(f"sample:{name}")
        for short in (224, 448):
            w, h = img.size
            k = short / min(w, h)
            x = to_tensor(img.resize((max(short, round(w * k)), max(short, round(h * k)))))
            batch = [x[:, :, t:t + 224, l:l + 224] for t in windows(x.shape[2]) for l in windows(x.shape[3])]
            crops += len(batch)
            with torch.no_grad():
                feats = fx(model.normalize(torch.cat(batch)))
            for layer in layers:
                m = feats[layer].mean((2, 3)).max(0).values
                best[layer] = m if best[layer] is None else torch.maximum(best[layer], m)
    return {"crops": crops, **best}


def activations(model, layer: str, chans: list[int], images: torch.Tensor) -> torch.Tensor:
    """Spatial-mean activation of chans[i] on images[i] (already 8-bit)."""
    with torch.no_grad():
        f = FeatureExtractor(model, [layer])(model.normalize(images))[layer].mean((2, 3))
    return f[torch.arange(len(chans)), torch.tensor(chans)]


def perturbations(images: torch.Tensor, n: int = 8, seed: int = 1234) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        dy, dx = torch.randint(-12, 13, (2,), generator=g).tolist()
        s = 0.85 + 0.3 * float(torch.rand((), generator=g))
        a = -10 + 20 * float(torch.rand((), generator=g))
        x = torch.roll(images, (dy, dx), (-2, -1))
        x = torch.nn.functional.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False, antialias=s < 1)
        out.append(rotate(x, a, fill=0.5).clamp(0, 1))
    return out


def score(model, layer, chans, images, pmax, robust=False) -> dict:
    png = png_roundtrip(images)
    act = activations(model, layer, chans, png)
    ratio = (act / pmax[chans]).tolist()
    row = {"activation": act.tolist(), "ratio": ratio}
    if robust:
        rob = torch.stack([activations(model, layer, chans, p) for p in perturbations(png)]).mean(0)
        row["robust_ratio"] = (rob / pmax[chans]).tolist()
    return row


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def run_ours(model, layer, chans, size, steps, seed=0, **overrides):
    start = time.perf_counter()
    r = visualize_objective(model, channel(layer, chans), batch=len(chans), size=size, seed=seed,
                            labels=[f"{layer}:{c}" for c in chans], steps=steps, **overrides)
    return r.image, time.perf_counter() - start


def part_sweep(model, pmax, args) -> dict:
    """Every recipe of SWEEP (``--recipes A,B``: only those, merged into the saved rows of the others)."""
    wanted = [r for r in args.recipes.split(";") if r] if args.recipes else list(SWEEP)
    unknown = [r for r in wanted if r not in SWEEP]
    if unknown:
        raise SystemExit(f"unknown recipes {unknown}; choose from {list(SWEEP)}")
    saved = OUT / "featviz_sweep.json"
    rows = json.loads(saved.read_text())["rows"] if args.recipes and saved.exists() else {}
    for name in wanted:
        over = SWEEP[name]
        ratios, robust, secs = [], [], 0.0
        for layer in LAYERS:
            chans = channels_of(model, layer)[::8]
            img, s = run_ours(model, layer, chans, 128, 128, seed=args.seed, **over)
            sc = score(model, layer, chans, img, pmax[layer], robust=True)
            ratios += sc["ratio"]
            robust += sc["robust_ratio"]
            secs += s
        rows[name] = {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in over.items()},
                      "ratio": summary(ratios), "robust_ratio": summary(robust), "seconds": secs,
                      "ratios": ratios, "robust_ratios": robust}
        print(f"sweep {name}: ratio {statistics.median(ratios):.2f} robust {statistics.median(robust):.2f} "
              f"{secs:.0f}s", flush=True)
    rows = {k: rows[k] for k in SWEEP if k in rows}  # the table in SWEEP's order
    return {"size": 128, "steps": 128, "channels": {l: channels_of(model, l)[::8] for l in LAYERS}, "rows": rows}


def part_activation(model, pmax, args) -> dict:
    out = {}
    layers = [layer for layer in args.layers.split(",") if layer]
    for layer in layers:
        chans = channels_of(model, layer)
        img, secs = run_ours(model, layer, chans, 224, args.steps, seed=args.seed)
        sc = score(model, layer, chans, img, pmax[layer])
        out[layer] = {"channels": chans, "seconds": secs, **sc, "summary": summary(sc["ratio"])}
        save_image(grid(list(img), labels=[f"{c}: {r:.1f}x" for c, r in zip(chans, sc["ratio"])], ncols=8),
                   OUT / f"featviz_{layer.replace('.', '_')}.png")
        print(f"activation {layer}: median {statistics.median(sc['ratio']):.2f}x min {min(sc['ratio']):.2f}x "
              f"{secs:.0f}s", flush=True)
    return activation_summary({"size": 224, "steps": args.steps, "layers": out})


def activation_summary(record: dict) -> dict:
    allr = [r for row in record["layers"].values() for r in row["ratio"]]
    return {**record, "all": summary(allr), "target_met": statistics.median(allr) >= 3 and min(allr) >= 1}


def merge_activation() -> None:
    """featviz_activation.json from per-layer runs (``--layers blocks.4`` and ``--layers blocks.5`` run
    as two processes write featviz_activation_LAYER.json)."""
    parts = sorted(OUT.glob("featviz_activation_blocks*.json"))
    records = [json.loads(p.read_text()) for p in parts]
    merged = {k: v for k, v in records[0].items() if k not in ("layers", "all", "target_met", "command")}
    merged["commands"] = [r["command"] for r in records]
    merged["layers"] = {k: v for r in records for k, v in r["layers"].items()}
    (OUT / "featviz_activation.json").write_text(json.dumps(activation_summary(merged), indent=1) + "\n")


def lucent_render(model, layer, chans, steps, seed):
    import numpy as np
    from lucent.optvis import objectives, param, render

    torch.manual_seed(seed)
    np.random.seed(seed)
    mean = torch.tensor(model.mean).view(1, -1, 1, 1)
    std = torch.tensor(model.std).view(1, -1, 1, 1)

    class Wrapped(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net((x - mean) / std)

    wrapped = Wrapped(model.net).eval()
    name = "net_" + layer.replace(".", "_")
    obj = objectives.channel(name, chans[0], batch=0)
    for i, c in enumerate(chans[1:], start=1):
        obj = obj + objectives.channel(name, c, batch=i)
    param_f = lambda: param.image(224, batch=len(chans))  # noqa: E731  (Lucent's default image)
    start = time.perf_counter()
    imgs = render.render_vis(wrapped, obj, param_f, thresholds=(steps,), preprocess=False, progress=False,
                             show_image=False, verbose=False)
    secs = time.perf_counter() - start
    return torch.as_tensor(imgs[-1]).permute(0, 3, 1, 2).float(), secs


def part_lucent(model, pmax, args) -> dict:
    try:
        import lucent  # noqa: F401
    except ImportError:
        raise SystemExit("the lucent part needs torch-lucent: pip install -e .[bench]") from None
    out, pics = {}, []
    for layer in LAYERS:
        chans = channels_of(model, layer)[:args.lucent_channels]
        ours, t_ours = run_ours(model, layer, chans, 224, args.steps, seed=args.seed)
        theirs, t_theirs = lucent_render(model, layer, chans, args.steps, args.seed)
        so = score(model, layer, chans, ours, pmax[layer], robust=True)
        st = score(model, layer, chans, theirs, pmax[layer], robust=True)
        out[layer] = {"channels": chans, "preimage": {**so, "seconds": t_ours, "s_per_step": t_ours / args.steps},
                      "lucent": {**st, "seconds": t_theirs, "s_per_step": t_theirs / args.steps}}
        for a, b in zip(ours, theirs):
            pics += [a, b]
        save_image(grid(list(ours), labels=[f"{c}: {r:.1f}x" for c, r in zip(chans, so["ratio"])], ncols=8),
                   OUT / f"featviz_{layer.replace('.', '_')}.png")  # preimage's sheet, as the activation part's
        print(f"lucent {layer}: preimage median {statistics.median(so['ratio']):.2f}x {t_ours:.0f}s, "
              f"lucent median {statistics.median(st['ratio']):.2f}x {t_theirs:.0f}s", flush=True)
    labels = []
    for layer in LAYERS:
        for c, ra, rb in zip(out[layer]["channels"], out[layer]["preimage"]["ratio"], out[layer]["lucent"]["ratio"]):
            labels += [f"{layer}:{c} preimage {ra:.1f}x", f"lucent {rb:.1f}x"]
    save_image(grid(pics, labels=labels, ncols=8), OUT / "featviz_lucent.png")
    sums = {lib: summary([r for l in LAYERS for r in out[l][lib]["ratio"]]) for lib in ("preimage", "lucent")}
    robust = {lib: summary([r for l in LAYERS for r in out[l][lib]["robust_ratio"]]) for lib in ("preimage", "lucent")}
    steps = {lib: sum(out[l][lib]["seconds"] for l in LAYERS) / (args.steps * len(LAYERS)) for lib in ("preimage", "lucent")}
    import lucent

    wins = sum(a > b for l in LAYERS for a, b in zip(out[l]["preimage"]["ratio"], out[l]["lucent"]["ratio"]))
    return {"size": 224, "steps": args.steps, "batch": args.lucent_channels, "layers": out, "summary": sums,
            "robust_summary": robust, "preimage_wins": wins,
            "s_per_step": steps, "lucent_version": getattr(lucent, "__version__", "0.1.8")}


def part_throughput(model, pmax, args) -> dict:
    """Channels per minute at 128 and 224 px: the 32 channels of blocks.5 in one batch; the time of one
    step is the median of 8 steps after 2 warm-up steps, in wall time and in CPU time of this process
    (on a shared machine the CPU time is what one free core would take); a channel takes
    ``args.steps`` steps, so channels per minute = 60 · 32 / (steps · seconds per step)."""
    from preimage.optimize import optimize
    from preimage.params import Fourier
    from preimage.tasks.featviz import FeatVizConfig, robust_transforms

    layer = "blocks.5"
    chans = channels_of(model, layer)
    rows = {}
    for size in (128, 224):
        wall, cpu = [], []

        def timer(step):
            now = (time.perf_counter(), time.process_time())
            if step.step > 2:
                wall.append(now[0] - timer.last[0])
                cpu.append(now[1] - timer.last[1])
            timer.last = now

        timer.last = (time.perf_counter(), time.process_time())
        g = torch.Generator().manual_seed(args.seed)
        param = Fourier((len(chans), 3, size, size), generator=g)
        optimize(param, channel(layer, chans), model, steps=10, lr=0.05, generator=g, callbacks=[timer],
                 transforms=robust_transforms(model, FeatVizConfig()))
        w, c = statistics.median(wall), statistics.median(cpu)
        rows[size] = {"channels": len(chans), "steps": args.steps, "s_per_step_wall": w, "s_per_step_cpu": c,
                      "channels_per_minute_wall": 60 * len(chans) / (args.steps * w),
                      "channels_per_minute_cpu": 60 * len(chans) / (args.steps * c)}
        print(f"throughput {size}px: {rows[size]['channels_per_minute_cpu']:.2f} channels/min (CPU time), "
              f"{rows[size]['channels_per_minute_wall']:.2f} (wall)", flush=True)
    return {"layer": layer, "batch": len(chans), "rows": rows}


def part_pictures(model, pmax, args) -> dict:
    """The docs' pictures: a neuron beside its channel, and a batch of four with and without diversity."""
    layer, c = args.picture.split(":")
    c = int(c)
    docs = ROOT / "docs/images"
    size = args.picture_size
    chan = visualize_objective(model, f"{layer}:{c}", size=size, seed=args.seed, steps=args.steps)
    from preimage.expr import unit_shapes

    h, w = unit_shapes(model, [layer], size)[layer][1:]
    at = (h // 2, w // 2)
    neur = visualize_objective(model, f"{layer}:{c}@{at[0]},{at[1]}", size=size, seed=args.seed, steps=args.steps)
    ratio = lambda v: v / float(pmax[layer][c])  # noqa: E731
    save_image(grid([chan.image[0], neur.image[0]],
                    labels=[f"channel {layer}:{c} ({ratio(chan.values[0]):.1f}x)",
                            f"neuron {layer}:{c}@{at[0]},{at[1]}"], ncols=2), docs / "featviz_neuron_channel.png")
    rows, out = [], {"channel": chan.values, "neuron": neur.values}
    for w in (0.0, 1.0):
        r = visualize_objective(model, f"{layer}:{c}", batch=4, diversity=w, size=size, seed=args.seed, steps=args.steps)
        rows += list(r.image)
        out[f"diversity_{w:g}"] = [ratio(v) for v in r.values]
    labels = [f"diversity 0: {v:.1f}x" for v in out["diversity_0"]] + [f"diversity 1: {v:.1f}x" for v in out["diversity_1"]]
    save_image(grid(rows, labels=labels, ncols=4), docs / "featviz_diversity.png")
    print("pictures", out, flush=True)
    return {"objective": args.picture, "size": size, "steps": args.steps, "neuron_at": list(at), **out}


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table: the header, its rule, one line per row."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["|" + "|".join(f" {c} " if c else " " for c in r) + "|" for r in rows]


def write_report() -> str:
    """featviz.md: the tables of every part whose results exist."""
    def load(name):
        f = OUT / f"featviz_{name}.json"
        return json.loads(f.read_text()) if f.exists() else None

    md = ["# Feature-visualization benchmark (efficientnet_lite0)", "",
          "Ratio = a channel's spatial-mean activation on the saved 8-bit visualization / its maximum over "
          "all 224-px crops of the bundled photos. Generated by `benchmarks/featviz.py --report`.", ""]
    sw = load("sweep")
    if sw:
        md += [f"## Transforms ({sw['size']} px, {sw['steps']} steps, channels {sw['channels']})", "",
               *("`" + c + "`" for c in sw.get("commands", [sw["command"]])), ""]
        md += _table(["recipe", "median ratio", "min ratio", "median robust ratio", "min robust ratio"],
                     [[k, f"{v['ratio']['median']:.2f}", f"{v['ratio']['min']:.2f}", f"{v['robust_ratio']['median']:.2f}",
                       f"{v['robust_ratio']['min']:.2f}"] for k, v in sw["rows"].items()])
        md.append("")
    act = load("activation")
    if act:
        md += [f"## Activation reached ({act['size']} px, {act['steps']} steps, one batch of 32 channels per layer)", ""]
        md += ["`" + c + "`" for c in act.get("commands", [act.get("command", "")])] + [""]
        a = act["all"]
        md += _table(["layer", "channels", "median ratio", "min ratio", "max ratio", "channels < 1x", "seconds"],
                     [[layer, str(len(r)), f"{statistics.median(r):.2f}", f"{min(r):.2f}", f"{max(r):.2f}",
                       str(sum(x < 1 for x in r)), f"{row['seconds']:.0f}"]
                      for layer, row in act["layers"].items() for r in [row["ratio"]]]
                     + [["all", str(a["n"]), f"{a['median']:.2f}", f"{a['min']:.2f}", f"{a['max']:.2f}", "", ""]])
        md += ["",
               f"Target (median >= 3x, none < 1x): {'met' if act['target_met'] else 'NOT met'}.", ""]
    lu = load("lucent")
    if lu:
        md += [f"## Against Lucent ({lu['size']} px, {lu['steps']} steps, batches of {lu['batch']} channels per layer)", "",
               "`" + lu["command"] + "`", ""]
        md += _table(["library", "median ratio", "min ratio", "median robust ratio", f"seconds per step (batch of {lu['batch']})"],
                     [[lib, f"{lu['summary'][lib]['median']:.2f}", f"{lu['summary'][lib]['min']:.2f}",
                       f"{lu['robust_summary'][lib]['median']:.2f}" if "robust_summary" in lu else "—",
                       f"{lu['s_per_step'][lib]:.2f}"] for lib in ("preimage", "lucent")])
        md.append("")
        if "preimage_wins" in lu:
            n = sum(len(r["channels"]) for r in lu["layers"].values())
            md += [f"preimage reaches the higher ratio on {lu['preimage_wins']} of {n} channels.", ""]
        for layer, row in lu["layers"].items():
            md.append(f"- {layer} channels {row['channels']}: preimage " + ", ".join(f"{x:.2f}" for x in row["preimage"]["ratio"])
                      + "; lucent " + ", ".join(f"{x:.2f}" for x in row["lucent"]["ratio"]))
        md.append("")
    th = load("throughput")
    if th:
        md += [f"## Throughput ({th['layer']}, one batch of {th['batch']} channels, one thread)", "",
               "`" + th["command"] + "`", ""]
        md += _table(["size", "steps per channel", "s per step (CPU)", "s per step (wall)", "channels per minute (CPU)",
                      "channels per minute (wall)"],
                     [[str(size), str(row["steps"]), f"{row['s_per_step_cpu']:.2f}", f"{row['s_per_step_wall']:.2f}",
                       f"{row['channels_per_minute_cpu']:.2f}", f"{row['channels_per_minute_wall']:.2f}"]
                      for size, row in th["rows"].items()])
        md.append("")
    pi = load("pictures")
    if pi:
        md += [f"## Pictures ({pi['objective']}, {pi['steps']} steps)", "",
               "ratios, diversity 0: " + ", ".join(f"{x:.2f}" for x in pi["diversity_0"])
               + "; diversity 1: " + ", ".join(f"{x:.2f}" for x in pi["diversity_1"]), ""]
    text = "\n".join(md)
    (OUT / "featviz.md").write_text(text)
    return text


PARTS = {"pictures": part_pictures, "sweep": part_sweep, "activation": part_activation, "lucent": part_lucent, "throughput": part_throughput}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="sweep,activation,lucent,throughput")
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--layers", default=",".join(LAYERS), help="layers of the activation part")
    ap.add_argument("--recipes", default="", help="sweep: only these recipes (names separated by ';'), merged "
                    "into the saved table")
    ap.add_argument("--lucent-channels", dest="lucent_channels", type=int, default=CHANNELS_LUCENT,
                    help="lucent: the first N of each layer's 32 channels (default: %(default)s)")
    ap.add_argument("--merge", action="store_true", help="merge per-layer activation results, write featviz.md, exit")
    ap.add_argument("--report", action="store_true", help="write featviz.md from the saved results and exit")
    ap.add_argument("--picture-size", dest="picture_size", type=int, default=224, help="side of the docs' pictures")
    ap.add_argument("--picture", default="blocks.5:12", help="the channel of the docs' pictures (part pictures)")
    args = ap.parse_args()
    if args.merge:
        merge_activation()
    if args.merge or args.report:
        print(write_report())
        return
    torch.set_num_threads(args.threads)
    model = preimage.load_model("efficientnet_lite0")
    OUT.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    cache = OUT / "featviz_photo_max.json"
    if cache.exists():  # the photos and the model are fixed: computed once
        raw = json.loads(cache.read_text())
        pm = {"crops": raw["crops"], **{k: torch.tensor(v) for k, v in raw["max"].items()}}
    else:
        pm = photo_max(model)
        cache.write_text(json.dumps({"crops": pm["crops"], "max": {k: pm[k].tolist() for k in LAYERS}}) + "\n")
    print(f"photo maxima over {pm['crops']} crops in {time.perf_counter() - start:.0f}s", flush=True)
    for part in [p.strip() for p in args.parts.split(",") if p.strip()]:
        result = PARTS[part](model, pm, args)
        record = {"command": "nice -n 10 .venv/bin/python benchmarks/featviz.py " + shlex.join(sys.argv[1:]),
                  "part": part, "photo_crops": pm["crops"], "threads": args.threads,
                  "machine": f"{platform.machine()}, torch {torch.__version__}", **result}
        name = part if part != "activation" or args.layers == ",".join(LAYERS) else f"activation_{args.layers}"
        if part == "lucent" and args.lucent_channels == 32:  # the same 64 channels, recipe, size and steps as
            act = {"size": 224, "steps": args.steps, "from": "the preimage half of the lucent part", "layers": {
                l: {"channels": r["channels"], "seconds": r["preimage"]["seconds"], "ratio": r["preimage"]["ratio"],
                    "activation": r["preimage"]["activation"], "summary": summary(r["preimage"]["ratio"])}
                for l, r in result["layers"].items()}}  # the activation part: its table too
            keep = {k: record[k] for k in ("command", "photo_crops", "threads", "machine")}
            (OUT / "featviz_activation.json").write_text(json.dumps({**keep, "part": "activation",
                                                                     **activation_summary(act)}, indent=1) + "\n")
        saved = OUT / f"featviz_{name}.json"
        if part == "sweep" and args.recipes and saved.exists():  # rows merged: keep every command that made them
            before = json.loads(saved.read_text())
            record["commands"] = before.get("commands", [before["command"]]) + [record["command"]]
        (OUT / f"featviz_{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"total {time.perf_counter() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
