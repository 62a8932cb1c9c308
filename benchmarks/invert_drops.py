"""A shorter run with the preset's learning-rate drop moved into it, against the same run with the drop
left at step 480 of 600 (and so never reached): feature error and PSNR per photo and stage.

    python benchmarks/invert_drops.py [--photos chelsea coffee] [--stages blocks.1 blocks.3 blocks.5 conv_head]
        [--steps 150 300] [--jobs 2]

``preimage invert --steps N`` (and ``invert(steps=N)``) moves the default's drop from 480 of 600 to
0.8 N; ``decay_steps=(480,)`` gives the run without it. Each inversion runs on one thread. Writes
benchmarks/results/invert_drops.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
VARIANTS = {"moved": {}, "at 480": {"decay_steps": (480,)}}


def one(job: tuple[str, str, int, str]) -> dict:
    import torch

    torch.set_num_threads(1)
    import preimage

    photo, stage, steps, variant = job
    model = preimage.load_model("efficientnet_lite0")
    res = preimage.invert(model, f"sample:{photo}", layers=[stage], steps=steps, **VARIANTS[variant])
    m = res.metrics[0]
    return {"photo": photo, "stage": stage, "steps": steps, "variant": variant,
            "decay_steps": list(res.config.decay_steps),
            "feature_error": round(m["feature_error"][stage], 4), "psnr": round(m["psnr"], 2)}


def table(rows: list[dict], steps: list[int], stages: list[str]) -> list[str]:
    lines = ["| stage | steps | median feature error, drop moved | ... drop at 480 | median PSNR dB, moved | ... at 480 "
             "| photos closer with the drop moved |", "|---|---|---|---|---|---|---|"]
    for stage in stages:
        for n in steps:
            at = {v: {r["photo"]: r for r in rows if r["stage"] == stage and r["steps"] == n and r["variant"] == v}
                  for v in VARIANTS}
            photos = sorted(at["moved"])
            fe = {v: statistics.median(at[v][p]["feature_error"] for p in photos) for v in VARIANTS}
            ps = {v: statistics.median(at[v][p]["psnr"] for p in photos) for v in VARIANTS}
            closer = sum(at["moved"][p]["feature_error"] < at["at 480"][p]["feature_error"] for p in photos)
            lines.append(f"| {stage} | {n} | {fe['moved']:.3f} | {fe['at 480']:.3f} | {ps['moved']:.1f} | "
                         f"{ps['at 480']:.1f} | {closer}/{len(photos)} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", nargs="+", default=["chelsea", "coffee"])
    ap.add_argument("--stages", nargs="+", default=["blocks.1", "blocks.3", "blocks.5", "conv_head"])
    ap.add_argument("--steps", nargs="+", type=int, default=[150, 300])
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    jobs = [(p, s, n, v) for s in args.stages for n in args.steps for p in args.photos for v in VARIANTS]
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(one, jobs))
    command = ("python benchmarks/invert_drops.py --photos " + " ".join(args.photos) + " --stages "
               + " ".join(args.stages) + " --steps " + " ".join(map(str, args.steps)) + f" --jobs {args.jobs}")
    (RESULTS / "invert_drops.json").write_text(json.dumps({"command": command, "rows": rows}, indent=1) + "\n")
    lines = ["# The default preset with fewer steps: the lr drop moved into the run, or left at step 480", "",
             f"Photos: {', '.join(args.photos)}; efficientnet_lite0; one thread per inversion. `{command}`", "",
             *table(rows, args.steps, args.stages), ""]
    (RESULTS / "invert_drops.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
