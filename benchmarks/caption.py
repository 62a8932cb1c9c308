"""Captioning benchmark on the built-in procedural scenes (issue 13's targets).

    nice -n 10 .venv/bin/python benchmarks/caption.py train --cell rnn &    # the two cells in parallel
    nice -n 10 .venv/bin/python benchmarks/caption.py train --cell lstm
    nice -n 10 .venv/bin/python benchmarks/caption.py report

1. Builds the default shapes data (6000 train / 500 val / 1000 test scenes, 5 captions each,
   EfficientNet-Lite0 ``head`` features pooled 2 x 2 and PCA'd to 512; cached after the first run)
   and records how long the features took.
2. ``train --cell C``: trains a vanilla RNN or an LSTM captioner with :func:`preimage.train.fit`
   (the same seed and settings for both; defaults: hidden 128, word vectors 64, batch 100, Adam
   lr 5e-3, 8 epochs — smaller than the notes' 512/256 so that both train in minutes on a CPU)
   into ``--runs`` (default ``out/bench-caption/C``), records the seconds of every epoch, then
   scores it on the 1000 test scenes (greedy decoding and beam search 3) beside the
   most-frequent-caption and nearest-neighbour baselines: BLEU-1..4 and CIDEr. Writes
   ``RUNS/caption_C.json`` (every test caption).
3. ``report``: marks each greedy test caption true or false of its scene (one of the sentences the
   generator can say about it), merges both cells into benchmarks/results/caption.json (24
   examples each) and caption.md, and draws example test captions of the LSTM (true and false:
   docs/images/caption_examples.png) and one per-word saliency explanation
   (docs/images/caption_explain.png).
"""
from __future__ import annotations

import argparse
import json
import os
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
    ap.add_argument("step", choices=("train", "report"), help="train one cell (run one per cell, in parallel), "
                                                               "or merge the cells' results into the report")
    ap.add_argument("--cell", default="lstm", choices=("rnn", "lstm"))
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--wordvec", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
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
    if args.step == "report":
        cells = {}
        for cell in ("rnn", "lstm"):
            path = Path(args.runs) / f"caption_{cell}.json"
            if path.is_file():
                cells[cell] = json.loads(path.read_text())
        if not cells:
            raise SystemExit("no caption_{rnn,lstm}.json in " + args.out)
        results = {"runs": {c: r["run"] for c, r in cells.items()},
                   **{k: v for k, v in next(iter(cells.values())).items() if k not in ("run", "command")}}
        for entry in results["runs"].values():
            true_of_scene(entry)
        pictures(results, data, Path(args.runs), Path(args.images))
        for entry in results["runs"].values():
            entry["examples"] = entry["examples"][:24]
        write_json(Path(args.out) / "caption.json", results)
        atomic_write(Path(args.out) / "caption.md", table(results).encode())
        print(table(results))
        return
    cell = args.cell
    cfg = TrainConfig(cell=cell, hidden_dim=args.hidden, wordvec_dim=args.wordvec, batch_size=args.batch_size,
                      lr=args.lr, eval_images=200)
    run = Path(args.runs) / cell
    load_before = os.getloadavg()
    res = fit(CaptionTask(data, cfg, seed=args.seed), run, epochs=args.epochs, seed=args.seed,
              callbacks=[lambda r: print(f"{cell} epoch {r['epoch']}: loss {r['loss']:.3f} "
                                         f"val BLEU-4 {r.get('val_bleu4', 0):.3f} CIDEr "
                                         f"{r.get('val_cider', 0):.3f} ({r['seconds']:.0f} s)", flush=True)])
    if res.status != "done":
        raise SystemExit(f"{cell}: {res.message}")
    entry = {"config": cfg.to_dict(), "epochs": res.history["epochs"],
             "seconds_per_epoch": [e["seconds"] for e in res.history["epochs"]],
             "load_average_before": load_before, "load_average_after": os.getloadavg()}
    out: dict = {"command": (f"nice -n 10 .venv/bin/python benchmarks/caption.py train --cell {cell} "
                             + " ".join(a for a in sys.argv[1:] if a not in ("train", "--cell", cell))).strip(),
                 "settings": {k: v for k, v in vars(args).items() if k not in ("cell", "step")},
                 "data": data.source, "vocab_size": len(data.vocab), "data_seconds": round(data_seconds, 1),
                 "machine": platform.platform(), "cpu_threads": args.threads}
    for beam in (1, 3):
        t = time.perf_counter()
        rep = evaluate_run(run, split="test", beam_size=beam, cache_dir=default_cache_dir(), examples=1000)
        entry[f"test_beam{beam}"] = {"scores": rep["scores"], "exact_match": rep["exact_match"],
                                     "decode_seconds": rep["decode_seconds"],
                                     "eval_seconds": round(time.perf_counter() - t, 1)}
        if beam == 1:
            entry["examples"] = rep["examples"]
            out["most_frequent_caption"] = rep["most_frequent_caption"]
        print(cell, f"beam {beam}", json.dumps(rep["scores"]), flush=True)
    entry["command"] = out["command"]
    out["run"] = entry
    write_json(Path(args.runs) / f"caption_{cell}.json", out)


def table(results: dict) -> str:
    lines = [*(f"Command: `{e['command'].strip()}`" for e in results["runs"].values()),
             "Command: `nice -n 10 .venv/bin/python benchmarks/caption.py report`", "",
             f"Test: 1000 procedural scenes, 5 reference captions each; vocabulary {results['vocab_size']} words; "
             f"{results['cpu_threads']} CPU thread per run, the two runs in parallel on a shared 2-core machine "
             "(other jobs running: seconds are indicative).", "",
             "| method | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | CIDEr | in refs | true | s/epoch |",
             "|---|---|---|---|---|---|---|---|---|"]
    rows, baselines = [], {}
    for cell, entry in results["runs"].items():
        spe = sum(entry["seconds_per_epoch"]) / len(entry["seconds_per_epoch"])
        for beam in (1, 3):
            block = entry[f"test_beam{beam}"]
            for label, s in block["scores"].items():
                if not label.startswith(cell):
                    baselines[label] = s
                    continue
                true = f"{block['true_of_scene']:.3f}" if "true_of_scene" in block else ""
                rows.append(f"| {label} | " + " | ".join(f"{s[k]:.3f}" for k in ("bleu1", "bleu2", "bleu3", "bleu4", "cider"))
                            + f" | {block['exact_match']:.3f} | {true} | {spe:.0f} |")
    first = next(iter(results["runs"].values()))["test_beam1"]
    for label, s in baselines.items():
        true = f"{first['nearest_neighbour_true_of_scene']:.3f}" if label == "nearest neighbour" and \
            "nearest_neighbour_true_of_scene" in first else ""
        lines.append(f"| {label} | " + " | ".join(f"{s[k]:.3f}" for k in ("bleu1", "bleu2", "bleu3", "bleu4", "cider"))
                     + f" |  | {true} |  |")
    lines += rows
    lines.append("")
    lines.append(f"Most frequent training caption: \"{results.get('most_frequent_caption', '')}\". in refs: share of "
                 "test images whose caption is one of its 5 references; true: share whose caption is one of the "
                 "sentences the scene generator can say about that scene (greedy only). s/epoch: mean wall-clock "
                 "seconds of an epoch (30 000 captions) with 1 thread.")
    return "\n".join(lines) + "\n"


def true_of_scene(entry: dict) -> None:
    """Mark each greedy test caption true or false of its scene (one of the sentences the templates
    can say about it), and record the share of true ones."""
    from preimage.captioning.scenes import all_captions, make_scene

    for e in entry["examples"]:
        e["true_of_scene"] = e["caption"] in all_captions(make_scene(int(str(e["image"]).split(":")[1])))
    entry["test_beam1"]["true_of_scene"] = sum(e["true_of_scene"] for e in entry["examples"]) / len(entry["examples"])
    nn_true = [e["nearest_neighbour"] in all_captions(make_scene(int(str(e["image"]).split(":")[1])))
               for e in entry["examples"]]
    entry["test_beam1"]["nearest_neighbour_true_of_scene"] = sum(nn_true) / len(nn_true)


def pictures(results: dict, data, runs: Path, images_dir: Path) -> None:
    """Example test captions of the LSTM, true and false, and a per-word explanation."""
    from PIL import Image, ImageDraw

    from preimage.captioning.explain import explain_caption
    from preimage.captioning.features import image_tensor
    from preimage.images import save_image, to_pil
    from preimage.viz import _font

    cell = "lstm" if "lstm" in results["runs"] else next(iter(results["runs"]))
    examples = results["runs"][cell]["examples"]
    right = [e for e in examples if e["true_of_scene"] and len(e["caption"].split()) > 4][:4]
    wrong = [e for e in examples if not e["true_of_scene"]][:4]
    side, text_w, font = 128, 430, _font(14)
    shown = right + wrong
    rows = -(-len(shown) // 2)
    sheet = Image.new("RGB", (2 * (side + text_w) + 12, rows * (side + 8) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, e in enumerate(shown):
        r, c = divmod(k, 2)
        x0, y0 = 4 + c * (side + text_w + 4), 4 + r * (side + 8)
        sheet.paste(to_pil(image_tensor(data.image(e["image"]), side)), (x0, y0))
        verdict = "true" if e["true_of_scene"] else "false"
        draw.text((x0 + side + 8, y0 + 6), f"{e['image']}: {verdict}", fill=(120, 120, 120), font=font)
        draw.text((x0 + side + 8, y0 + 28), e["caption"], fill=(0, 120, 0) if e["true_of_scene"] else (190, 0, 0), font=font)
        draw.text((x0 + side + 8, y0 + 52), "a reference: " + e["references"][0], fill=(90, 90, 90), font=_font(12))
    save_image(sheet, images_dir / "caption_examples.png")
    loaded = load_captioner(runs / cell)
    pick = next((e for e in examples if e["true_of_scene"] and (" of " in e["caption"] or " above " in e["caption"])),
                right[0] if right else examples[0])
    x = image_tensor(data.image(pick["image"]), loaded.pipeline.spec.input_size)[None]
    ex = explain_caption(loaded, x)
    save_image(ex.picture(ncols=5, size=160), images_dir / "caption_explain.png")
    results["pictures"] = {"examples": [e["image"] for e in shown], "explained": pick["image"],
                           "explained_caption": ex.caption}


if __name__ == "__main__":
    main()
