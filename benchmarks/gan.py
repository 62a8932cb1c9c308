"""GANs on Fashion-MNIST: the four models of the notes (vanilla / least squares x FC / DCGAN), scored
offline with FD-LeNet, KID-LeNet and the class histogram, and inverted.

Stages (each resumable: rerunning continues where it stopped, finished runs are reused)::

    python benchmarks/gan.py classifier               # LeNet for the score -> runs/lenet (>= 90 % test acc.)
    python benchmarks/gan.py train --loss ls --arch dc --epochs 10    # one model -> runs/ls-dc
    python benchmarks/gan.py train --loss ls --arch dc --preset dcgan --track   # -> runs/ls-dc-dcgan,
                                                      # scored on 5,000 samples after every epoch
    python benchmarks/gan.py score                    # every trained model -> results + figures
    python benchmarks/gan.py all --epochs 10          # all of the above, one after the other

The score compares 10,000 images of each kind with 10,000 training images (a fixed random subset):
real test images (the floor), each generator's samples, and an untrained generator of each
architecture (the ceiling). GAN inversion (``preimage.gan.invert``: 150 Adam steps, 2 starts)
reconstructs 20 test and 20 training images per model; we report the median over images of
the mean absolute per-pixel error (pixels in [0, 1]).

Writes ``benchmarks/results/gan.json`` and ``gan.md`` and the figures ``docs/images/gan_*.png``.
Training runs (checkpoints, ~100 MB for the DCGANs) live in ``--runs`` (default ``out/bench-gan``).
Run single-threaded with ``nice -n 10``; ``--data digits`` exercises the whole pipeline in a minute.
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

from preimage import gan  # noqa: E402
from preimage.data import load_data  # noqa: E402
from preimage.gan.nets import build_pair  # noqa: E402
from preimage.gan.inversion import START_STREAM  # noqa: E402
from preimage.gan.score import ClassifierTask, accuracy, class_histogram, frechet_kid  # noqa: E402
from preimage.gan.task import to_pixels  # noqa: E402
from preimage.images import save_image  # noqa: E402
from preimage.io import versions, write_json  # noqa: E402
from preimage.train import fit, load_checkpoint, restore  # noqa: E402

COMBOS = [("vanilla", "fc"), ("ls", "fc"), ("vanilla", "dc"), ("ls", "dc")]
N_SCORE = 10_000
N_INVERT = 20


PRESETS = ["cs231n", "dcgan"]
N_TRACK = 5_000


def model_key(loss: str, arch: str, preset: str = "cs231n") -> str:
    return f"{loss}-{arch}" if preset == "cs231n" else f"{loss}-{arch}-{preset}"


def run_dir(args, loss: str, arch: str, preset: str = "cs231n") -> Path:
    return Path(args.runs) / model_key(loss, arch, preset)


def stage_classifier(args) -> dict:
    train, test = load_data(args.data, split="train"), load_data(args.data, split="test")
    task = ClassifierTask(train, test)
    res = fit(task, Path(args.runs) / "lenet", epochs=args.classifier_epochs, seed=0)
    if res.status != "done":
        raise SystemExit(f"classifier: {res.status}: {res.message}")
    acc = accuracy(task.net, test)
    (Path(args.runs) / "lenet" / "done").write_text(f"{acc}\n")
    print(f"LeNet: test accuracy {acc:.4f} after {res.epochs_done} epochs ({res.seconds:.0f} s)", flush=True)
    return {"test_accuracy": acc, "epochs": res.epochs_done, "seconds": round(res.seconds, 1)}


def load_classifier(args):
    train, test = load_data(args.data, split="train"), load_data(args.data, split="test")
    task = ClassifierTask(train, test)
    restore(task, load_checkpoint(Path(args.runs) / "lenet", kind="classifier"), optimizers=False)
    task.net.eval()
    return task.net, train, test


def track_epoch(args, folder: Path, epoch: int) -> None:
    """FD-LeNet and the smallest class share of 5,000 samples of the generator as it is after ``epoch``
    (``track.json`` in the run folder: how quality and mode coverage move during training)."""
    while not (Path(args.runs) / "lenet" / "done").exists():  # the classifier trains in another process
        time.sleep(20)
    net, train, _ = load_classifier(args)
    G, cfg = gan.load_generator(folder)
    fake = _generate(G, N_TRACK, cfg.noise_dim, seed=100)
    s = frechet_kid(net, reference(train, N_TRACK), fake, kid_subsets=20, kid_subset_size=1000, seed=0)
    hist = class_histogram(net, fake)
    path = folder / "track.json"
    rows = [r for r in (json.loads(path.read_text()) if path.is_file() else []) if r["epoch"] != epoch]
    rows.append({"epoch": epoch, "fd": round(s["fd"], 3), "kid": round(s["kid"], 5),
                 "class_histogram": [round(h, 4) for h in hist], "min_class_fraction": round(min(hist), 4)})
    write_json(path, sorted(rows, key=lambda r: r["epoch"]))
    print(f"  {folder.name} after epoch {epoch}: FD-LeNet ({N_TRACK}) {s['fd']:.2f}, smallest class {min(hist):.3f}",
          flush=True)


def stage_train(args, loss: str, arch: str) -> None:
    """Train epoch by epoch up to ``--epochs``; with ``--deadline HH:MM`` (UTC), stop starting epochs
    that would end after it; with ``--track``, score every epoch on 5,000 samples (``track.json``).
    Then score the model (``score.json`` in its run folder)."""
    import datetime as dt

    folder = run_dir(args, loss, arch, args.preset)
    deadline = None
    if args.deadline:
        h, m = map(int, args.deadline.split(":"))
        now = dt.datetime.now(dt.timezone.utc)
        deadline = now.replace(hour=h, minute=m, second=0, microsecond=0).timestamp()
    res = None
    for epochs in range(1, args.epochs + 1):
        res = gan.train(out=folder, data=args.data, loss=loss, arch=arch, epochs=epochs, seed=0, preset=args.preset)
        if res.status != "done":
            break
        last = res.history["epochs"][-1]["seconds"]
        print(f"{folder.name}: epoch {res.epochs_done} done in {last:.0f} s", flush=True)
        if args.track and not any(r["epoch"] == epochs for r in _track(folder)):
            track_epoch(args, folder, epochs)
        if deadline is not None and time.time() + 1.1 * last > deadline:
            print(f"{folder.name}: stopping after {res.epochs_done} epochs (the next would end after {args.deadline})",
                  flush=True)
            break
    print(f"{folder.name}: {res.status} after {res.epochs_done} epochs {res.message}", flush=True)
    if args.score_after:
        while not (Path(args.runs) / "lenet" / "done").exists():  # the classifier trains in another process
            time.sleep(20)
        net, train, test = load_classifier(args)
        entry = score_model(args, net, train, test, loss, arch, args.preset)
        write_json(folder / "score.json", entry)


def _track(folder: Path) -> list[dict]:
    path = folder / "track.json"
    return json.loads(path.read_text()) if path.is_file() else []


def _subset(x: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx]


@torch.no_grad()
def _generate(G, n: int, noise_dim: int, seed: int) -> torch.Tensor:
    return torch.cat([gan.sample(G, min(1000, n - i), noise_dim=noise_dim, seed=seed + i) for i in range(0, n, 1000)])


def _score(net, ref, images, name: str) -> dict:
    t = time.perf_counter()
    s = frechet_kid(net, ref, images, kid_subsets=100, kid_subset_size=1000, seed=0)
    hist = class_histogram(net, images)
    out = {**s, "class_histogram": [round(h, 4) for h in hist], "min_class_fraction": round(min(hist), 4)}
    print(f"  {name}: FD-LeNet {s['fd']:.3f}  KID-LeNet {s['kid']:.5f}  min class {min(hist):.3f} "
          f"({time.perf_counter() - t:.0f} s)", flush=True)
    return out


def reference(train, n: int) -> torch.Tensor:
    return _subset(train.pixels(), n, seed=1)


def score_model(args, net, train, test, loss: str, arch: str, preset: str = "cs231n") -> dict:
    folder = run_dir(args, loss, arch, preset)
    key = model_key(loss, arch, preset)
    n = min(N_SCORE, len(test))
    ckpt = load_checkpoint(folder, kind="gan")
    G, cfg = gan.load_generator(folder)
    epochs = ckpt["history"]["epochs"]
    fake = _generate(G, n, cfg.noise_dim, seed=100)
    entry = {"loss": loss, "arch": arch, "preset": preset, "epochs": ckpt["epoch"],
             "seconds_per_epoch": [e["seconds"] for e in epochs],
             "final_losses": {k: round(v, 4) for k, v in epochs[-1].items() if k in ("D", "G")},
             **_score(net, reference(train, n), fake, f"{key} ({ckpt['epoch']} epochs)")}
    if _track(folder):
        entry["track"] = _track(folder)
    entry["inversion"] = _inversion(args, (G, cfg), train, test, key)
    if args.figures:
        save_image(gan.image_grid(fake[:64], 8), Path(args.figures) / f"gan_{key.replace('-', '_')}.png")
    return entry


def stage_score(args) -> None:
    """The baselines (real test images, untrained generators) and every model's score.json -> results."""
    net, train, test = load_classifier(args)
    n = min(N_SCORE, len(test))
    ref = reference(train, n)
    results: dict = {"data": args.data, "n_score": n, "classifier": {
        "name": "LeNet", "test_accuracy": accuracy(net, test),
        "epochs": load_checkpoint(Path(args.runs) / "lenet")["epoch"]}, "models": {}}
    print(f"scoring against {n} training images (LeNet test accuracy {results['classifier']['test_accuracy']:.4f})")
    results["real_test"] = _score(net, ref, _subset(test.pixels(), n, seed=2), "real test")
    for arch in ("fc", "dc"):
        torch.manual_seed(0)
        G, _ = build_pair(arch)
        G.eval()
        with torch.no_grad():
            z = torch.rand(n, 96, generator=torch.Generator().manual_seed(3)) * 2 - 1
            fake = torch.cat([to_pixels(G(z[i:i + 1000])) for i in range(0, n, 1000)])
        results[f"untrained_{arch}"] = _score(net, ref, fake, f"untrained {arch}")
    for preset in PRESETS:
        for loss, arch in COMBOS:
            folder, key = run_dir(args, loss, arch, preset), model_key(loss, arch, preset)
            if not (folder / "checkpoint.pt").is_file():
                print(f"  {key}: not trained, skipped")
                continue
            ckpt = load_checkpoint(folder, kind="gan")
            saved = folder / "score.json"
            if saved.is_file() and json.loads(saved.read_text())["epochs"] == ckpt["epoch"]:
                results["models"][key] = json.loads(saved.read_text())
            else:
                results["models"][key] = score_model(args, net, train, test, loss, arch, preset)
    results["versions"] = versions()
    results["machine"] = f"{platform.machine()}, torch threads {torch.get_num_threads()}"
    if args.results:
        write_json(Path(args.results) / "gan.json", results)
        (Path(args.results) / "gan.md").write_text(markdown(results))
    print(markdown(results))


def _inversion(args, generator, train, test, name: str) -> dict:
    out = {}
    for split, data in (("test", test), ("train", train)):
        t = time.perf_counter()
        images = _subset(data.pixels(), N_INVERT, seed=4)
        # the starts of the recorded numbers: seed 0's stream itself (real images, not samples, are inverted)
        inv = gan.invert(generator, images, steps=args.invert_steps, restarts=2, seed=-START_STREAM, decay_steps=())
        mae = [m["mae"] for m in inv.metrics]
        out[split] = {"median_mae": round(statistics.median(mae), 4), "mean_mae": round(statistics.mean(mae), 4),
                      "median_psnr": round(statistics.median(m["psnr"] for m in inv.metrics), 2)}
        print(f"  {name} inversion of {N_INVERT} {split} images: median per-pixel error {out[split]['median_mae']:.4f}"
              f" ({time.perf_counter() - t:.0f} s)", flush=True)
        if split == "test" and args.figures:
            from preimage.viz import grid

            cells = [im for pair in zip(images[:8].expand(-1, 3, -1, -1), inv.image[:8]) for im in pair]
            save_image(grid(cells, ncols=16, pad=2), Path(args.figures) / f"gan_invert_{name.replace('-', '_')}.png")
    return out


def markdown(r: dict) -> str:
    lines = [f"LeNet test accuracy: {r['classifier']['test_accuracy']:.4f} ({r['classifier']['epochs']} epochs); "
             f"every score against {r['n_score']} training images.", "",
             "| images | epochs | s / epoch | FD-LeNet | KID-LeNet | smallest class | inversion error test / train |",
             "|---|---|---|---|---|---|---|"]
    lines.append(f"| real test images | | | {r['real_test']['fd']:.3f} | {r['real_test']['kid']:.5f} | "
                 f"{r['real_test']['min_class_fraction']:.1%} | |")
    for key, m in r["models"].items():
        spe = statistics.mean(m["seconds_per_epoch"])
        inv = m.get("inversion", {})
        inv_s = f"{inv['test']['median_mae']:.4f} / {inv['train']['median_mae']:.4f}" if inv else ""
        lines.append(f"| {key} | {m['epochs']} | {spe:.0f} | {m['fd']:.3f} | {m['kid']:.5f} | "
                     f"{m['min_class_fraction']:.1%} | {inv_s} |")
    for arch in ("fc", "dc"):
        u = r[f"untrained_{arch}"]
        lines.append(f"| untrained {arch} generator | 0 | | {u['fd']:.3f} | {u['kid']:.5f} | "
                     f"{u['min_class_fraction']:.1%} | |")
    tracked = {k: m["track"] for k, m in r["models"].items() if m.get("track")}
    if tracked:
        epochs = sorted({t["epoch"] for rows in tracked.values() for t in rows})
        lines += ["", f"FD-LeNet on {N_TRACK:,} samples after each epoch (smallest class share in brackets):", "",
                  "| model | " + " | ".join(str(e) for e in epochs) + " |", "|---|" + "---|" * len(epochs)]
        for key, rows in tracked.items():
            by = {t["epoch"]: t for t in rows}
            cells = [f"{by[e]['fd']:.1f} ({by[e]['min_class_fraction']:.1%})" if e in by else "" for e in epochs]
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["classifier", "train", "score", "all"])
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--runs", default=str(ROOT / "out" / "bench-gan"))
    p.add_argument("--loss", choices=["vanilla", "ls"])
    p.add_argument("--arch", choices=["fc", "dc"])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--preset", choices=PRESETS, default="cs231n", help="train: the GAN preset (run folder "
                   "LOSS-ARCH for cs231n, LOSS-ARCH-PRESET otherwise)")
    p.add_argument("--track", action="store_true", help="train: FD-LeNet on 5,000 samples after every epoch")
    p.add_argument("--classifier-epochs", type=int, default=3)
    p.add_argument("--invert-steps", type=int, default=150)
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"), help="'' writes no results")
    p.add_argument("--figures", default=str(ROOT / "docs" / "images"), help="'' writes no figures")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--deadline", default=None, help="HH:MM (UTC): start no epoch that would end after it")
    p.add_argument("--score-after", action="store_true", help="train: score the model when it is trained")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.stage == "classifier":
        stage_classifier(args)
    elif args.stage == "train":
        combos = [(args.loss, args.arch)] if args.loss and args.arch else COMBOS
        for loss, arch in combos:
            stage_train(args, loss, arch)
    elif args.stage == "score":
        stage_score(args)
    else:
        stage_classifier(args)
        for loss, arch in COMBOS:
            stage_train(args, loss, arch)
        stage_score(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
