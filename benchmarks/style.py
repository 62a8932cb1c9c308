"""Style transfer benchmark: quality of the defaults and speed against a plain PyTorch loop.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/style.py [--steps 200] [--speed-steps 40] [--repeats 3]

Quality: 3 content photos (scikit-image's chelsea, astronaut, coffee) x 2 styles (a procedural
painting-like image of swirling brush strokes, made here, and scikit-image's brick texture) with
``preimage.stylize`` at its defaults on the embedded efficientnet_lite0; records the content and style
terms at the start and end, and their ratio.

Speed: wall time per step of the engine (``stylize``) and of a plain PyTorch loop of the same method
(same layers, weights, Adam, lr drop, clamp), written out by hand below; both truncated after the
deepest layer, one thread, alternating runs, median over repeats. The plain loop exists only here, as
the baseline.

Writes benchmarks/results/style.json and style.md; with --images, the triptychs of two pairs to
docs/images/.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import preimage  # noqa: E402
from preimage.objectives import gram_matrix  # noqa: E402
from preimage.tasks.style import STYLE_PRESETS, _load, stylize  # noqa: E402

CONTENTS = ["sample:chelsea", "sample:astronaut", "sample:coffee"]


def painting(size: int = 384, seed: int = 0) -> Image.Image:
    """A painting-like style image: short thick strokes of a night-sky palette that follow the flow
    around a few vortices (no photo or download needed)."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, size), (20, 30, 70))
    draw = ImageDraw.Draw(img)
    palette = np.array([(25, 45, 120), (40, 80, 170), (230, 200, 60), (250, 240, 150), (30, 110, 140),
                        (15, 20, 50), (200, 120, 40)])
    centres = rng.uniform(0, size, (4, 2))
    spins = rng.choice([-1, 1], 4)
    for _ in range(5000):
        x, y = rng.uniform(0, size, 2)
        vx, vy = 0.3, 0.0
        for (cx, cy), s in zip(centres, spins):
            dx, dy = x - cx, y - cy
            r2 = dx * dx + dy * dy + 200
            vx += s * -dy * 60 / r2
            vy += s * dx * 60 / r2
        n = math.hypot(vx, vy) + 1e-6
        length = rng.uniform(6, 16)
        colour = np.clip(palette[rng.integers(len(palette))] + rng.integers(-20, 20, 3), 0, 255)
        draw.line([(x, y), (x + length * vx / n, y + length * vy / n)], fill=tuple(int(v) for v in colour),
                  width=int(rng.integers(2, 5)))
    return img.filter(ImageFilter.SMOOTH)


# -- the baseline: the same method as a plain PyTorch loop ------------------------------------

def plain_loop(model, content: torch.Tensor, style: torch.Tensor, steps: int) -> tuple[torch.Tensor, float, float]:
    """Gatys et al. with the efficientnet preset, by hand: returns (image, style loss, seconds/step)."""
    cfg = STYLE_PRESETS["efficientnet"]
    net = model.net
    wanted = {int(n.split(".")[1]) for n in (*cfg.style_layers, cfg.content_layer)}
    last = max(wanted)

    def feats(pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        x = net.bn1(net.conv_stem((pixels - 0.5) / 0.5))
        out = {}
        for i in range(last + 1):
            x = net.blocks[i](x)
            out[f"blocks.{i}"] = x
        return out

    def gram(f: torch.Tensor) -> torch.Tensor:
        b, c, h, w = f.shape
        f = f.reshape(c, h * w)
        return f @ f.t() / (c * h * w)

    with torch.no_grad():
        p = feats(content)[cfg.content_layer]
        s = feats(style)
        targets = {n: gram(s[n]) for n in cfg.style_layers}
    img = content.clone().requires_grad_(True)
    opt = torch.optim.Adam([img], lr=cfg.lr)
    start = time.perf_counter()
    for t in range(steps):
        if t == cfg.lr_drop_step:
            for g in opt.param_groups:
                g["lr"] = cfg.lr_drop_to
        opt.zero_grad()
        f = feats(img)
        c_loss = cfg.content_weight * (f[cfg.content_layer] - p).pow(2).sum()
        s_loss = sum(cfg.style_weight * w * (gram(f[n]) - targets[n]).pow(2).sum()
                     for n, w in zip(cfg.style_layers, cfg.style_layer_weights))
        x_in = (img - 0.5) / 0.5
        tv = cfg.tv_weight * ((x_in[..., :, 1:] - x_in[..., :, :-1]).pow(2).sum()
                              + (x_in[..., 1:, :] - x_in[..., :-1, :]).pow(2).sum())
        (c_loss + s_loss + tv).backward()
        opt.step()
        with torch.no_grad():
            img.clamp_(0, 1)
    seconds = (time.perf_counter() - start) / steps
    with torch.no_grad():
        f = feats(img)
        s_end = float(sum(cfg.style_weight * w * (gram(f[n]) - targets[n]).pow(2).sum()
                          for n, w in zip(cfg.style_layers, cfg.style_layer_weights)))
    return img.detach(), s_end, seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200, help="steps of each quality run (default: the preset's 200)")
    ap.add_argument("--speed-steps", type=int, default=40, help="steps of each timed run")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each loop")
    ap.add_argument("--images", action="store_true", help="write two triptychs to docs/images/")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = preimage.load_model()
    paint_path = Path(args.out) / "style_painting.png"
    paint_path.parent.mkdir(parents=True, exist_ok=True)
    painting().save(paint_path)
    styles = {"painting": str(paint_path), "brick": "sample:brick"}

    rows = []
    keep = {}
    for c in CONTENTS:
        for s_name, s_src in styles.items():
            t0 = time.perf_counter()
            res = stylize(model, c, s_src, steps=args.steps)
            wall = time.perf_counter() - t0
            L = res.losses
            row = {
                "content": c, "style": s_name, "steps": res.result.steps, "status": res.status,
                "size": list(res.image.shape[-2:]),
                "style_start": L["style"]["start"], "style_end": L["style"]["end"],
                "style_drop": L["style"]["start"] / max(L["style"]["end"], 1e-30),
                "content_start": L["content"]["start"], "content_end": L["content"]["end"],
                "tv_start": L["tv"]["start"], "tv_end": L["tv"]["end"],
                "seconds": round(wall, 2), "seconds_per_step": round(res.result.seconds / max(1, res.result.steps), 4),
            }
            rows.append(row)
            keep[(c, s_name)] = res
            print(f"{c:18s} {s_name:9s} style {row['style_start']:.3g} -> {row['style_end']:.3g} "
                  f"({row['style_drop']:.1f}x)  content {row['content_start']:.2g} -> {row['content_end']:.3g}  "
                  f"{row['seconds_per_step']:.3f} s/step", flush=True)

    # speed: engine vs plain loop on the same pair, alternating
    content = _load("sample:chelsea", STYLE_PRESETS["efficientnet"].image_size, "c")[0]
    style = _load(styles["painting"], STYLE_PRESETS["efficientnet"].style_size, "s")[0]
    engine_t, plain_t = [], []
    engine_end = plain_end = float("nan")
    for _ in range(args.repeats):
        res = stylize(model, content, style, steps=args.speed_steps)
        engine_t.append(res.result.seconds / res.result.steps)
        engine_end = res.losses["style"]["end"]
        _, plain_end, sec = plain_loop(model, content, style, args.speed_steps)
        plain_t.append(sec)
    speed = {
        "pair": "chelsea x painting", "size": list(content.shape[-2:]), "steps": args.speed_steps,
        "repeats": args.repeats,
        "engine_s_per_step": statistics.median(engine_t), "plain_s_per_step": statistics.median(plain_t),
        "engine_runs": engine_t, "plain_runs": plain_t,
        "overhead": statistics.median(engine_t) / statistics.median(plain_t) - 1,
        "engine_style_end": engine_end, "plain_style_end": plain_end,
    }
    print(f"speed ({args.speed_steps} steps, median of {args.repeats}): engine {speed['engine_s_per_step']:.4f} s/step, "
          f"plain loop {speed['plain_s_per_step']:.4f} s/step ({100 * speed['overhead']:+.1f}%); "
          f"final style loss engine {engine_end:.4g}, plain {plain_end:.4g}")

    meta = {"command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/style.py " + " ".join(argv or sys.argv[1:]),
            "torch": torch.__version__, "python": platform.python_version(), "threads": 1,
            "cpu": platform.processor() or platform.machine(), "model": model.name,
            "config": STYLE_PRESETS["efficientnet"].as_dict()}
    out = Path(args.out)
    (out / "style.json").write_text(json.dumps({"meta": meta, "quality": rows, "speed": speed}, indent=2) + "\n")
    lines = ["| content | style | size | style start | style end | drop | content start | content end | s/step |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['content'].split(':')[-1]} | {r['style']} | {r['size'][0]}x{r['size'][1]} | "
                     f"{r['style_start']:.3g} | {r['style_end']:.3g} | {r['style_drop']:.1f}x | "
                     f"{r['content_start']:.2g} | {r['content_end']:.3g} | {r['seconds_per_step']:.3f} |")
    lines += ["", f"Speed, chelsea x painting at {speed['size'][0]}x{speed['size'][1]}, {args.speed_steps} steps, "
              f"median of {args.repeats} alternating runs, 1 thread: engine {speed['engine_s_per_step']:.4f} s/step, "
              f"plain PyTorch loop {speed['plain_s_per_step']:.4f} s/step ({100 * speed['overhead']:+.1f}%)."]
    (out / "style.md").write_text("\n".join(lines) + "\n")
    if args.images:
        img_dir = ROOT / "docs" / "images"
        img_dir.mkdir(parents=True, exist_ok=True)
        keep[("sample:chelsea", "painting")].triptych().save(img_dir / "style_chelsea_painting.png")
        keep[("sample:coffee", "brick")].triptych().save(img_dir / "style_coffee_brick.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
