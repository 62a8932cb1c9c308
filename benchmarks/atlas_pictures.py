"""Pictures and throughput of the channel atlas and DeepDream on the embedded efficientnet_lite0.

    nice -n 10 .venv/bin/python benchmarks/atlas_pictures.py          # one torch thread

Runs, through the Python API with the commands' defaults (the equivalent commands are recorded):

- ``preimage atlas --layer blocks.5 --channels 0:32`` (every bundled photo; 32 channels in one batch
  at 128 px, 256 steps) and writes docs/images/atlas_lite0_blocks5.png (its first 16 channels) and
  the throughput (channels visualized per minute, the optimization alone; then the photo pass);
- ``preimage dream --image sample:chelsea --layer blocks.N`` for N = 2..5 (defaults: 4 octaves,
  scale 1.4, 10 steps per octave) and writes docs/images/deepdream_chelsea.png (photo | blocks.4)
  and docs/images/deepdream_layers.png (the four layers), with each layer's activation norm before
  and after.

Raw results: benchmarks/results/atlas_pictures.json and .md (with the load average during the run).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from preimage.images import save_image  # noqa: E402
from preimage.io import atomic_write, versions, write_json  # noqa: E402
from preimage.models import load_model  # noqa: E402
from preimage.tasks.atlas import channel_atlas  # noqa: E402
from preimage.tasks.deepdream import deep_dream  # noqa: E402
from preimage.viz import grid  # noqa: E402

IMAGES = ROOT / "docs" / "images"
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", default="0:32")
    ap.add_argument("--steps", type=int, default=None, help="atlas steps (default: the command's, 256)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shown", type=int, default=16, help="channels in the docs picture")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model("efficientnet_lite0")
    record: dict = {"threads": args.threads, "versions": versions(), "load_average_start": os.getloadavg()}

    # -- the atlas --------------------------------------------------------------------------------
    cmd = f"preimage atlas --layer blocks.5 --channels {args.channels}" + (f" --steps {args.steps}" if args.steps else "")
    print(cmd, file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    atlas = channel_atlas(model, "blocks.5", args.channels, seed=0, progress=True,
                          **({"steps": args.steps} if args.steps else {}))
    wall = time.perf_counter() - t0
    k = args.shown
    shown = replace(atlas, channels=atlas.channels[:k], images=atlas.images[:k], activation=atlas.activation[:k],
                    examples=atlas.examples[:k])
    save_image(shown.grid(), IMAGES / "atlas_lite0_blocks5.png")
    best_crop = [max((e.activation for e in ex), default=float("nan")) for ex in atlas.examples]
    record["atlas"] = {
        "command": cmd, "layer": "blocks.5", "channels": atlas.channels, "config": atlas.config.__dict__,
        "photos": len(atlas.sources), "batch": atlas.config.batch,
        "seconds_optimization": round(atlas.seconds, 1), "seconds_photos_and_crops": round(atlas.seconds_examples, 1),
        "seconds_wall": round(wall, 1), "channels_per_minute": round(atlas.channels_per_minute, 2),
        "activation_visualization": [round(a, 3) for a in atlas.activation],
        "activation_best_crop": [round(a, 3) for a in best_crop],
        "ratio_visualization_to_best_crop": [round(a / b, 2) if b > 0 else None
                                             for a, b in zip(atlas.activation, best_crop)],
    }

    # -- DeepDream --------------------------------------------------------------------------------
    dreams = {}
    for layer in ("blocks.2", "blocks.3", "blocks.4", "blocks.5"):
        cmd = f"preimage dream --image sample:chelsea --layer {layer}"
        print(cmd, file=sys.stderr, flush=True)
        r = deep_dream(model, "sample:chelsea", layer=layer, seed=0)
        dreams[layer] = r
        record.setdefault("deepdream", []).append({
            "command": cmd, "seconds": round(r.seconds, 1), "size": list(r.images[0].shape[-2:]),
            "norm_before": round(r.before[0].norm, 1), "norm_after": round(r.after[0].norm, 1),
            "norm_gain": round(r.after[0].norm / r.before[0].norm, 3)})
    r4 = dreams["blocks.4"]
    save_image(grid([r4.photos[0][0], r4.images[0][0]], labels=["sample:chelsea", "DeepDream, blocks.4"]),
               IMAGES / "deepdream_chelsea.png")
    half = [torch.nn.functional.interpolate(r.images[0], scale_factor=0.5, mode="bilinear", antialias=True,
                                            align_corners=False)[0].clamp(0, 1) for r in dreams.values()]
    save_image(grid(half, ncols=4, labels=list(dreams)), IMAGES / "deepdream_layers.png")
    record["load_average_end"] = os.getloadavg()
    write_json(RESULTS / "atlas_pictures.json", record)
    a = record["atlas"]
    ratios = sorted(x for x in a["ratio_visualization_to_best_crop"] if x is not None)
    md = [
        "# Channel atlas and DeepDream on the embedded efficientnet_lite0",
        "",
        f"Command: `nice -n 10 .venv/bin/python benchmarks/atlas_pictures.py` ({args.threads} torch thread; "
        f"load average {record['load_average_start'][0]:.1f} at the start, {record['load_average_end'][0]:.1f} at "
        "the end, on a 2-core machine shared with other jobs).",
        "",
        "| run | channels | size | steps | batch | optimization (s) | channels / minute | photos + crops (s) |",
        "|---|---|---|---|---|---|---|---|",
        f"| `{a['command']}` | {len(a['channels'])} | {a['config']['size']} | {a['config']['steps']} | {a['batch']} | "
        f"{a['seconds_optimization']} | {a['channels_per_minute']} | {a['seconds_photos_and_crops']} |",
        "",
        f"Activation (the channel's spatial mean) on its saved 8-bit visualization divided by that on its best "
        f"crop (of {a['photos']} photos, crops resized to {a['config']['size']} px): median "
        f"{ratios[len(ratios) // 2]:.1f}x, min {ratios[0]:.1f}x over {len(ratios)} channels with a positive best crop.",
        "",
        "| DeepDream | size | seconds | ‖Φ‖ before | ‖Φ‖ after | gain |",
        "|---|---|---|---|---|---|",
        *[f"| `{d['command']}` | {d['size'][1]}x{d['size'][0]} | {d['seconds']} | {d['norm_before']} | "
          f"{d['norm_after']} | {d['norm_gain']:.2f}x |" for d in record["deepdream"]],
        "",
    ]
    atomic_write(RESULTS / "atlas_pictures.md", "\n".join(md).encode())
    print("\n".join(md))


if __name__ == "__main__":
    main()
