"""Captioning benchmark on the built-in procedural scenes (issue 13's targets).

    nice -n 10 .venv/bin/python benchmarks/caption.py [--epochs 8] [--hidden 128] [--wordvec 64] [--threads 1]

1. Builds the default shapes data (6000 train / 500 val / 1000 test scenes, 5 captions each,
   EfficientNet-Lite0 ``head`` features pooled 2 x 2 and PCA'd to 512; cached after the first run)
   and records how long the features took.
2. Trains a vanilla RNN and an LSTM captioner with :func:`preimage.train.fit` (same seed, same
   settings) into ``--runs`` (default ``out/bench-caption/{rnn,lstm}``) and records the seconds of
   every epoch.
3. Scores both on the 1000 test scenes (greedy decoding, and beam search 3 for both) beside the
   most-frequent-caption and nearest-neighbour baselines: BLEU-1..4 and CIDEr.
4. Draws example test captions (correct and wrong) and one per-word saliency explanation.

Writes benchmarks/results/caption.json and caption.md, docs/images/caption_examples.png and
docs/images/caption_explain.png.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from preimage.captioning.data import default_cache_dir, load_shapes  # noqa: E402
from preimage.captioning.evaluate import evaluate_run  # noqa: E402
from preimage.captioning.task import CaptionTask, TrainConfig, load_captioner  # noqa: E402
from preimage.io import atomic_write, write_json  # noqa: E402
from preimage.train import fit  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--wordvec", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cells", default="rnn,lstm")
    ap.add_argument("--runs", default=str(ROOT / "out/bench-caption"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    ap.add_argument("--images", default=str(ROOT / "docs/images"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = load_shapes(cache_dir=default_cache_dir())
    data_seconds = time.perf_counter() - t0
    print(f"data: {data.splits['train'].captions.shape[0]} train captions, {len(data.vocab)} words "
          f"({data_seconds:.0f} s)", flush=True)
    results: dict = {"command": "nice -n 10 .venv/bin/python benchmarks/caption.py " + " ".join(sys.argv[1:]),
                     "settings": vars(args), "data": data.source, "vocab_size": len(data.vocab),
                     "data_seconds": round(data_seconds, 1), "machine": platform.platform(),
                     "cpu_threads": args.threads, "runs": {}}
    for cell in [c.strip() for c in args.cells.split(",") if c.strip()]:
        cfg = TrainConfig(cell=cell, hidden_dim=args.hidden, wordvec_dim=args.wordvec, batch_size=args.batch_size,
                          lr=args.lr, eval_images=200)
        run = Path(args.runs) / cell
        res = fit(CaptionTask(data, cfg, seed=args.seed), run, epochs=args.epochs, seed=args.seed,
                  callbacks=[lambda r, c=cell: print(f"{c} epoch {r['epoch']}: loss {r['loss']:.3f} "
                                                     f"val BLEU-4 {r.get('val_bleu4', 0):.3f} CIDEr "
                                                     f"{r.get('val_cider', 0):.3f} ({r['seconds']:.0f} s)", flush=True)])
        if res.status != "done":
            raise SystemExit(f"{cell}: {res.message}")
        entry = {"config": cfg.to_dict(), "epochs": res.history["epochs"],
                 "seconds_per_epoch": [e["seconds"] for e in res.history["epochs"]]}
        for beam in (1, 3):
            t = time.perf_counter()
            rep = evaluate_run(run, split="test", beam_size=beam, cache_dir=default_cache_dir(), examples=1000)
            entry[f"test_beam{beam}"] = {"scores": rep["scores"], "exact_match": rep["exact_match"],
                                         "decode_seconds": rep["decode_seconds"],
                                         "eval_seconds": round(time.perf_counter() - t, 1)}
            if beam == 1:
                entry["examples"] = rep["examples"]
                results["most_frequent_caption"] = rep["most_frequent_caption"]
            print(cell, f"beam {beam}", json.dumps(rep["scores"]), flush=True)
        results["runs"][cell] = entry
    write_json(Path(args.out) / "caption.json", results)
    atomic_write(Path(args.out) / "caption.md", table(results).encode())
    pictures(results, data, Path(args.runs), Path(args.images))
    print(table(results))


def table(results: dict) -> str:
    lines = [f"Command: `{results['command']}`", "",
             f"Test: 1000 procedural scenes, 5 reference captions each; vocabulary {results['vocab_size']} words; "
             f"features (render + EfficientNet-Lite0 + PCA) {results['data_seconds']:.0f} s "
             f"(0 when cached); {results['cpu_threads']} CPU thread(s) on a shared 2-core machine.", "",
             "| method | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | CIDEr | exact | s/epoch |",
             "|---|---|---|---|---|---|---|---|"]
    baselines_done = False
    for cell, entry in results["runs"].items():
        for beam in (1, 3):
            block = entry[f"test_beam{beam}"]
            for label, s in block["scores"].items():
                is_model = label.startswith(cell)
                if not is_model and baselines_done:
                    continue
                spe = sum(entry["seconds_per_epoch"]) / len(entry["seconds_per_epoch"]) if is_model else None
                exact = f"{block['exact_match']:.3f}" if is_model else ""
                lines.append(f"| {label} | " + " | ".join(f"{s[k]:.3f}" for k in ("bleu1", "bleu2", "bleu3", "bleu4", "cider"))
                             + f" | {exact} | {'' if spe is None else f'{spe:.0f}'} |")
        baselines_done = True
    lines.append("")
    lines.append(f"Most frequent training caption: \"{results.get('most_frequent_caption', '')}\". "
                 "exact: share of test images whose caption is one of its references.")
    return "\n".join(lines) + "\n"


def pictures(results: dict, data, runs: Path, images_dir: Path) -> None:
    """Example test captions (correct and wrong) and a per-word explanation."""
    from preimage.captioning.explain import explain_caption
    from preimage.captioning.features import image_tensor
    from preimage.images import save_image
    from preimage.viz import grid

    cell = "lstm" if "lstm" in results["runs"] else next(iter(results["runs"]))
    examples = results["runs"][cell]["examples"]
    right = [e for e in examples if e["matches_a_reference"]][:4]
    wrong = [e for e in examples if not e["matches_a_reference"]][:4]
    cells, labels = [], []
    for e in right + wrong:
        cells.append(image_tensor(data.image(e["image"]), 192))
        labels.append(("ok: " if e["matches_a_reference"] else "wrong: ") + e["caption"])
    if cells:
        save_image(grid(cells, ncols=4, labels=labels, font_size=11), images_dir / "caption_examples.png")
    loaded = load_captioner(runs / cell)
    pick = next((e for e in right if len(e["caption"].split()) >= 6), right[0] if right else examples[0])
    x = image_tensor(data.image(pick["image"]), loaded.pipeline.spec.input_size)[None]
    ex = explain_caption(loaded, x)
    save_image(ex.picture(ncols=6), images_dir / "caption_explain.png")
    results["pictures"] = {"examples": [e["image"] for e in right + wrong], "explained": pick["image"],
                           "explained_caption": ex.caption}


if __name__ == "__main__":
    main()
