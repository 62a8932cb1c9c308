"""Class-visualization benchmark on the embedded efficientnet_lite0 (issue 4's bar: p >= 0.9).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/classviz.py [--presets fourier,classic] [--seed 0]

Ten ImageNet classes, one batch per preset, ``preimage.visualize_class`` at the preset's defaults and
the model's input size (224). The score is the probability of the target class for the saved 8-bit
PNG decoded again (``ClassVizResult.prob``), and whether it is the top-1 class.

Writes benchmarks/results/classviz.json and classviz.md (and the grids classviz_PRESET.png).
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

import preimage  # noqa: E402
from preimage.images import save_image  # noqa: E402
from preimage.tasks.classviz import visualize_class  # noqa: E402
from preimage.viz import grid  # noqa: E402

CLASSES = ["goldfish", "flamingo", "tarantula", "jellyfish", "golden retriever", "monarch", "pizza",
           "volcano", "beacon", "strawberry"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="fourier,classic")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    args = ap.parse_args()
    model = preimage.load_model("efficientnet_lite0")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for preset in [p.strip() for p in args.presets.split(",") if p.strip()]:
        start = time.perf_counter()
        r = visualize_class(model, CLASSES, preset=preset, seed=args.seed)
        seconds = time.perf_counter() - start
        rows = [{"class": c, "name": n, "prob": p, "top1": t, "top1_name": model.classes[t]}
                for c, n, p, t in zip(r.classes, r.class_names, r.prob, r.top1)]
        results[preset] = {
            "config": r.config.__dict__ | {"scales": list(r.config.scales)}, "seconds": seconds, "rows": rows,
            "mean_prob": statistics.mean(r.prob), "min_prob": min(r.prob),
            "at_least_0.9": sum(p >= 0.9 for p in r.prob), "top1_correct": sum(t == c for t, c in zip(r.top1, r.classes)),
        }
        labels = [f"{n} {p:.2f}" for n, p in zip(r.class_names, r.prob)]
        save_image(grid(list(r.image), labels=labels, ncols=5), out / f"classviz_{preset}.png")
        print(preset, f"{seconds:.0f}s", [round(p, 3) for p in r.prob], flush=True)
        record = {
            "command": "OMP_NUM_THREADS=2 .venv/bin/python benchmarks/classviz.py " + " ".join(sys.argv[1:]),
            "model": model.name, "classes": CLASSES, "seed": args.seed, "presets": results,
            "machine": {"python": platform.python_version(), "torch": torch.__version__,
                        "threads": torch.get_num_threads()},
        }
        (out / "classviz.json").write_text(json.dumps(record, indent=1))
        lines = ["# Class visualization on the embedded efficientnet_lite0", "",
                 f"Command: `{record['command']}`", "",
                 "Probability of the target class for the saved 8-bit PNG (224 px), seed "
                 f"{args.seed}; the issue's bar is p >= 0.9.", "",
                 "| preset | steps | classes with p >= 0.9 | top-1 correct | mean p | min p | seconds (10 images, one batch) |",
                 "|---|---|---|---|---|---|---|"]
        for name, res in results.items():
            lines.append(f"| {name} | {res['config']['steps']} | {res['at_least_0.9']}/10 | {res['top1_correct']}/10 | "
                         f"{res['mean_prob']:.3f} | {res['min_prob']:.3f} | {res['seconds']:.0f} |")
        lines += ["", "| class | " + " | ".join(f"p ({n})" for n in results) + " |",
                  "|---|" + "---|" * len(results)]
        for i, c in enumerate(CLASSES):
            cells = []
            for res in results.values():
                row = res["rows"][i]
                cells.append(f"{row['prob']:.3f}" + ("" if row["top1"] == row["class"] else f" (top-1: {row['top1_name']})"))
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        (out / "classviz.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
