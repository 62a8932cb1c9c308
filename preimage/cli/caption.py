"""``preimage caption``: train, evaluate and run the RNN/LSTM image captioner, and explain its words.

    preimage caption train [--cell rnn|lstm] [--data shapes|coco-h5 DIR|coco-json FILE] [--out DIR]
    preimage caption eval DIR [--split test] [--beam K] [--cache DIR]
    preimage caption IMAGE... --model DIR [--explain] [--out DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

USAGE = ("preimage caption train [--cell rnn|lstm] [--data shapes|coco-h5 DIR|coco-json FILE] [--out DIR]\n"
         "                              [--cache DIR] [options]\n"
         "       preimage caption eval DIR [--split test|val] [--beam K] [--cache DIR]\n"
         "       preimage caption IMAGE... --model DIR [--explain] [--beam K] [--out DIR]")

#: options that belong to one action only (dest -> action), to refuse them elsewhere
_ONLY = {
    "cell": "train", "data": "train", "epochs": "train", "hidden": "train", "wordvec": "train", "batch_size": "train",
    "lr": "train", "lr_decay": "train", "grad_clip": "train", "eval_images": "train", "scenes": "train",
    "feature_model": "train", "feature_layer": "train", "grid": "train", "input_size": "train", "pca": "train",
    "images_dir": "train", "min_count": "train", "long_captions": "train", "max_train": "train",
    "split": "eval", "model": "caption", "explain": "caption", "cmap": "caption",
}


def _int(lo: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"{text!r} must be >= {lo}")
        return v
    return parse


def _float(lo: float, hi: float | None = None, *, open_lo: bool = True):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if v != v or v in (float("inf"), float("-inf")) or (v <= lo if open_lo else v < lo) or (hi is not None and v > hi):
            rng = f"> {lo}" if open_lo else f">= {lo}"
            raise argparse.ArgumentTypeError(f"{text!r} must be {rng}" + (f" and <= {hi}" if hi is not None else ""))
        return v
    return parse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "caption", help="image captioning with a vanilla RNN or an LSTM: train, evaluate, caption, explain",
        usage=USAGE,
        description="The CS231n captioner (image feature -> h0, word embedding, RNN or LSTM, vocabulary scores; "
                    "temporal softmax loss, teacher forcing, greedy or beam decoding). `train` fits it on the "
                    "built-in procedural scenes, the assignment's COCO HDF5 files or a COCO captions JSON with its "
                    "images (checkpoints, resume, loss curves, manifest); `eval` scores a run folder (BLEU-1..4, "
                    "CIDEr) beside the most-frequent-caption and nearest-neighbour baselines; IMAGE... captions "
                    "image files (or scene:SEED) and writes each image with its caption; --explain adds a "
                    "saliency map per word.")
    p.subcommands = ("train", "eval")  # errors read `preimage caption train: error: ...`
    p.add_argument("action", nargs="+", metavar="train|eval DIR|IMAGE",
                   help="`train`, `eval DIR`, or image files / sample:NAME / scene:SEED to caption")
    t = p.add_argument_group("train")
    t.add_argument("--cell", choices=("rnn", "lstm"), default=None, help="recurrent cell (default: lstm)")
    t.add_argument("--data", nargs="+", metavar="SOURCE", default=None,
                   help="shapes (built-in scenes, default) | coco-h5 DIR (the assignment's coco_captioning "
                        "folder) | coco-json FILE (captions_*.json; images under --images)")
    t.add_argument("--epochs", type=_int(1), default=None, help="epochs (default: 10)")
    t.add_argument("--hidden", type=_int(1), default=None, help="hidden size (default: 512, as the notes)")
    t.add_argument("--wordvec", type=_int(1), default=None, help="word embedding size (default: 256, as the notes)")
    t.add_argument("--batch-size", type=_int(1), default=None, help="captions per step (default: 100)")
    t.add_argument("--lr", type=_float(0.0), default=None, help="Adam learning rate (default: 5e-3)")
    t.add_argument("--lr-decay", type=_float(0.0, 1.0), default=None, help="learning rate factor per epoch (default: 0.995)")
    t.add_argument("--grad-clip", type=_float(0.0, open_lo=False), default=None,
                   help="clip the gradient norm at this value, 0 = off (default: 5)")
    t.add_argument("--eval-images", type=_int(0), default=None,
                   help="validation images captioned and scored after each epoch (default: 500)")
    t.add_argument("--scenes", type=_int(3), default=None, metavar="N",
                   help="shapes: training scenes (val: N/12, test: N/6; default: 6000)")
    t.add_argument("--feature-model", default=None, help="zoo model for image features (default: efficientnet_lite0)")
    t.add_argument("--feature-layer", default=None, help="its layer to pool (default: head)")
    t.add_argument("--grid", type=_int(1), default=None, help="average-pool the layer to GRID x GRID (default: 2)")
    t.add_argument("--input-size", type=_int(16), default=None, help="image size in pixels (default: 128)")
    t.add_argument("--pca", type=_int(1), default=None, help="PCA components kept (default: 512)")
    t.add_argument("--images", dest="images_dir", default=None, help="coco-json: the image folder (default: the JSON's folder)")
    t.add_argument("--min-count", type=_int(1), default=None, help="coco-json: rarer words become <UNK> (default: 1)")
    t.add_argument("--long-captions", choices=("error", "skip", "truncate"), default=None,
                   help="coco-json: captions of more than 15 words (default: error)")
    t.add_argument("--max-train", type=_int(1), default=None, help="coco-h5: use the first N training captions")
    te = p.add_argument_group("train and eval")
    te.add_argument("--cache", default=None, metavar="DIR",
                    help="feature cache folder, used by train and eval: give eval the DIR that train used, or it "
                         "computes the features of shapes or coco-json data again (default: "
                         "~/.cache/preimage/captioning)")
    e = p.add_argument_group("eval")
    e.add_argument("--split", choices=("val", "test"), default=None, help="split to score (default: test)")
    c = p.add_argument_group("caption images")
    c.add_argument("--model", default=None, metavar="DIR", help="a run folder written by `preimage caption train`")
    c.add_argument("--explain", action="store_true", help="also write a saliency map per generated word")
    c.add_argument("--cmap", default=None, help="saliency colormap (default: inferno)")
    g = p.add_argument_group("all")
    g.add_argument("--beam", type=_int(1), default=1, help="beam width, 1 = greedy decoding (default: 1)")
    g.add_argument("--out", "-o", default=None,
                   help="output folder (train: default out/caption-CELL; images: default out/caption)")
    g.add_argument("--force", action="store_true", help="train: start over in --out; eval: overwrite its eval_*.json; images: overwrite outputs")
    g.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    g.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default: cpu)")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bar or log lines")
    p.set_defaults(run=run)


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr)


def _refuse_foreign(args: argparse.Namespace, action: str) -> None:
    from ..errors import PreimageError

    for dest, owner in _ONLY.items():
        value = getattr(args, dest, None)
        if owner != action and value not in (None, False):
            flag = "--" + dest.replace("_", "-")
            flag = {"--images-dir": "--images"}.get(flag, flag)
            where = {"train": "caption train", "eval": "caption eval", "caption": "caption IMAGE..."}[owner]
            raise PreimageError(f"{flag} is an option of `preimage {where}`")


def run(args: argparse.Namespace) -> int:
    from ..errors import PreimageError

    first = args.action[0]
    if first in ("train", "eval"):
        args._label = f"caption {first}"  # errors read `preimage caption train: error: ...`
    if first == "train":
        _refuse_foreign(args, "train")
        if len(args.action) > 1:
            raise PreimageError(f"`caption train` takes options only, not {' '.join(args.action[1:])!r}")
        return _train(args)
    if first == "eval":
        _refuse_foreign(args, "eval")
        if args.out is not None:
            raise PreimageError("--out does not apply to `preimage caption eval`: it writes DIR/eval_SPLIT.json "
                                "into the run folder")
        if len(args.action) != 2:
            raise PreimageError("usage: preimage caption eval DIR")
        return _eval(args, args.action[1])
    _refuse_foreign(args, "caption")
    return _caption(args, args.action)


# -- train ---------------------------------------------------------------------------------------

def _data_source(args: argparse.Namespace) -> tuple[str, str | None]:
    from ..errors import PreimageError, did_you_mean

    data = args.data or ["shapes"]
    kinds = ("shapes", "coco-h5", "coco-json")
    kind = data[0]
    if kind not in kinds:
        raise PreimageError(f"unknown --data {kind!r}" + did_you_mean(kind, kinds) + "; use shapes, coco-h5 DIR or coco-json FILE")
    if kind != "coco-json":
        for flag, dest in (("--images", "images_dir"), ("--min-count", "min_count"), ("--long-captions", "long_captions")):
            if getattr(args, dest) is not None:
                raise PreimageError(f"{flag} is for --data coco-json")
    if kind != "coco-h5" and args.max_train is not None:
        raise PreimageError("--max-train is for --data coco-h5")
    if kind == "shapes":
        if len(data) != 1:
            raise PreimageError("--data shapes takes no path")
        return kind, None
    if len(data) != 2:
        raise PreimageError(f"--data {kind} needs one path: --data {kind} {'DIR' if kind == 'coco-h5' else 'FILE'}")
    path = Path(data[1]).expanduser()
    if kind == "coco-h5":
        from ..captioning.data import COCO_H5_FILES

        if not path.is_dir():
            raise PreimageError(f"--data coco-h5: {path} is not a folder")
        for key, names in COCO_H5_FILES.items():
            names = (names,) if isinstance(names, str) else names
            if not any((path / n).is_file() for n in names):
                raise PreimageError(f"--data coco-h5: {path} has no {' or '.join(names)}")
    else:
        if not path.is_file():
            raise PreimageError(f"--data coco-json: no such file: {path}")
        if not os.access(path, os.R_OK):
            raise PreimageError(f"--data coco-json: cannot read {path}")
        if args.images_dir is not None and not Path(args.images_dir).is_dir():
            raise PreimageError(f"--images: {args.images_dir} is not a folder")
    return kind, str(path)


def _check_out(out: Path, force: bool) -> None:
    """Refuse an unusable --out before any data is loaded (fit checks the rest)."""
    from ..errors import PreimageError
    from ..train import load_checkpoint

    if out.exists() and not out.is_dir():
        raise PreimageError(f"{out} exists and is not a folder")
    if force or not out.is_dir():
        return
    if (out / "checkpoint.pt").exists():
        load_checkpoint(out, kind="caption")
    elif any(p for p in out.iterdir() if p.name != "manifest.json"):
        raise PreimageError(f"{out} is not empty and holds no training run; use --force or choose another --out")


def _train(args: argparse.Namespace) -> int:
    from ..errors import PreimageError

    kind, path = _data_source(args)
    if kind != "shapes" and args.scenes is not None:
        raise PreimageError("--scenes is for --data shapes")
    if kind == "coco-h5" and any(getattr(args, d) is not None for d in
                                 ("feature_model", "feature_layer", "grid", "input_size", "pca")):
        raise PreimageError("coco-h5 data comes with its features; --feature-model/--feature-layer/--grid/--input-size/--pca do not apply")
    cell = args.cell or "lstm"
    out = Path(args.out or f"out/caption-{cell}").expanduser()
    _check_out(out, args.force)

    import torch

    from ..captioning.data import load_coco_h5, load_coco_json, load_shapes
    from ..captioning.features import FeatureSpec
    from ..captioning.task import CaptionTask, TrainConfig
    from ..train import fit

    if args.device != "cpu":
        raise PreimageError("caption train runs on --device cpu in this version")
    cfg = TrainConfig(cell=cell)
    for dest, field in (("hidden", "hidden_dim"), ("wordvec", "wordvec_dim"), ("batch_size", "batch_size"),
                        ("lr", "lr"), ("lr_decay", "lr_decay"), ("grad_clip", "grad_clip"),
                        ("eval_images", "eval_images")):
        if getattr(args, dest) is not None:
            setattr(cfg, field, getattr(args, dest))
    cfg.beam_size = args.beam
    cfg.validate()
    spec_kw = {k: v for k, v in (("model", args.feature_model), ("layer", args.feature_layer), ("grid", args.grid),
                                 ("input_size", args.input_size), ("pca_dim", args.pca)) if v is not None}
    spec = FeatureSpec(**spec_kw)
    if kind == "coco-json":  # a broken captions file or image fails before the feature model loads
        from ..captioning.data import check_coco_json

        check_coco_json(path, args.images_dir)  # type: ignore[arg-type]
    if kind != "coco-h5":  # a wrong model or layer name fails now, not after minutes of work
        from ..layers import resolve_layer
        from ..models import load_model
        from ..validate import check_model_name

        check_model_name(spec.model)  # a misspelt name: a did-you-mean, before anything loads
        resolve_layer(load_model(spec.model, input_size=spec.input_size), spec.layer)
    progress = _feature_progress(args)
    cache = Path(args.cache).expanduser() if args.cache else None
    if cache is None:
        from ..captioning.data import default_cache_dir

        cache = default_cache_dir()
    try:
        if kind == "shapes":
            n = args.scenes or 6000
            data = load_shapes(counts={"train": n, "val": max(1, n // 12), "test": max(1, n // 6)}, seed=args.seed,
                               spec=spec, cache_dir=cache, progress=progress)
        elif kind == "coco-h5":
            data = load_coco_h5(path, max_train=args.max_train)  # type: ignore[arg-type]
        else:
            data = load_coco_json(path, images_dir=args.images_dir, seed=args.seed, spec=spec,  # type: ignore[arg-type]
                                  min_count=args.min_count or 1, long_captions=args.long_captions or "error",
                                  cache_dir=cache, progress=progress)
    finally:
        if progress is not None:
            progress.close()  # type: ignore[attr-defined]
    train = data.splits["train"]
    _say(args, f"caption train: {train.num_images} images, {train.captions.shape[0]} captions, "
               f"{len(data.vocab)} words, features {data.feature_dim}; {cell} -> {out}")
    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    task = CaptionTask(data, cfg, seed=args.seed)

    # `kill PID` stops as cleanly as Ctrl-C (cli.main raises SIGTERM as errors.Terminated)
    result = fit(task, out, epochs=args.epochs or 10, seed=args.seed, force=args.force,
                 progress=not args.quiet, callbacks=[lambda r: _epoch_line(args, r)])
    if result.status != "done":
        print(f"preimage caption train: {result.message}", file=sys.stderr)
        return result.exit_code
    if result.message:  # e.g. the folder already holds as many epochs as asked for
        _say(args, result.message)
    if result.epochs_done == result.resumed_from:
        return 0
    _say(args, f"wrote {out}/checkpoint.pt, history.json, losses.png, manifest.json ({result.seconds:.0f} s)")
    return 0


def _epoch_line(args: argparse.Namespace, record: dict) -> None:
    keys = [k for k in ("loss", "val_bleu1", "val_bleu4", "val_cider") if k in record]
    _say(args, f"epoch {int(record['epoch'])}: " + ", ".join(f"{k} {record[k]:.4g}" for k in keys)
         + f" ({record.get('seconds', 0):.0f} s)")


def _feature_progress(args: argparse.Namespace):
    """Feature extraction's progress: a bar on a terminal, plain lines in a log (:mod:`preimage.progress`)."""
    if args.quiet:
        return None
    from ..progress import progress_bar

    bar = progress_bar(None, "image features", "img", leave=False)

    class Progress:
        def __call__(self, n: int) -> None:
            bar.update(n)

        def close(self) -> None:
            bar.close()

    return Progress()


# -- eval ------------------------------------------------------------------------------------------

def _eval(args: argparse.Namespace, run_dir: str) -> int:
    from ..errors import PreimageError

    run = Path(run_dir).expanduser()
    if not (run / "checkpoint.pt").is_file():
        raise PreimageError(f"{run} holds no checkpoint.pt (a folder written by `preimage caption train`)")
    from ..io import check_outputs

    split = args.split or "test"
    name = f"eval_{split}" + (f"_beam{args.beam}" if args.beam > 1 else "") + ".json"
    if (run / name).exists() and not args.force:  # an earlier evaluation is kept unless --force
        raise PreimageError(f"{run / name} exists; use --force to overwrite it")
    check_outputs([run / name], args.force)
    from ..captioning.evaluate import evaluate_run
    from ..io import write_failure, write_json

    progress = _feature_progress(args)
    try:
        report = evaluate_run(run, split=split, beam_size=args.beam,
                              cache_dir=Path(args.cache).expanduser() if args.cache else None, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    with write_failure(run / name):
        write_json(run / name, report)
    rows = report["scores"]
    print(f"{'':24} {'BLEU-1':>7} {'BLEU-2':>7} {'BLEU-3':>7} {'BLEU-4':>7} {'CIDEr':>7}")
    for label, s in rows.items():
        print(f"{label:24} " + " ".join(f"{s[k]:7.3f}" for k in ("bleu1", "bleu2", "bleu3", "bleu4", "cider")))
    _say(args, f"{report['images']} {split} images; wrote {run / name}")
    return 0


# -- caption images ---------------------------------------------------------------------------------

def _caption(args: argparse.Namespace, sources: list[str]) -> int:
    from ..errors import PreimageError
    from ..images import image_name, load_image, unique_names
    from ..io import check_outputs

    if args.model is None:
        raise PreimageError("give the trained captioner: --model DIR (a folder written by `preimage caption train`)")
    run = Path(args.model).expanduser()
    if not (run / "checkpoint.pt").is_file():
        raise PreimageError(f"--model {run} holds no checkpoint.pt (a folder written by `preimage caption train`)")
    if args.cmap is not None:
        from ..viz import heatmap

        import torch

        heatmap(torch.zeros(1, 1), cmap=args.cmap)  # an unknown colormap fails before any work
    images = [_load_source(s) for s in sources]  # unreadable images fail before the model loads
    names = unique_names([image_name(s).replace(":", "_") for s in sources])
    out = Path(args.out or "out/caption").expanduser()
    outputs = [out / f"{n}_caption.png" for n in names] + [out / "captions.json"]
    if args.explain:
        outputs += [out / f"{n}_explain.png" for n in names]
    check_outputs(outputs, args.force)

    import torch

    from ..captioning.explain import explain_caption
    from ..captioning.features import image_tensor
    from ..captioning.task import load_captioner
    from ..images import save_image
    from ..io import all_or_nothing, write_failure, write_json
    from ..viz import grid

    loaded = load_captioner(run)
    if loaded.pipeline is None:
        raise PreimageError(f"{run} was trained on precomputed features ({loaded.config['data'].get('kind')}); "
                            "it cannot caption image files")
    size = loaded.pipeline.spec.input_size
    from ..captioning.scenes import make_scene, render

    # a scene is drawn at the size the captioner was trained on, as its training scenes were
    images = [render(make_scene(img), size) if isinstance(img, int) else img for img in images]
    pixels = torch.stack([image_tensor(img, size) for img in images])
    captions = loaded.caption_pixels(pixels, beam_size=args.beam)
    records = []

    def write(save, data, path: Path) -> None:
        """A failed write (a read-only or special file system, a full disk, a file where the folder
        should be) ends in one line."""
        with write_failure(path):
            save(path, data) if save is write_json else save(data, path)

    with all_or_nothing():  # the captions appear together or not at all; files there before stay as they were
        for i, (name, src, cap) in enumerate(zip(names, sources, captions)):
            shown = cap or "(empty caption: the model said <END> first)"
            print(f"{src}: {shown}")
            write(save_image, grid([pixels[i]], labels=[shown]), out / f"{name}_caption.png")
            rec = {"image": src, "caption": cap, "file": f"{name}_caption.png"}
            if args.explain:
                ex = explain_caption(loaded, pixels[i:i + 1], beam_size=args.beam)
                write(save_image, ex.picture(cmap=args.cmap or "inferno"), out / f"{name}_explain.png")
                rec["explain"] = f"{name}_explain.png"
                rec["words"] = [{"word": w, "logprob": lp} for w, lp in zip(ex.words, ex.logprobs)]
            records.append(rec)
        write(write_json, {"model": str(run), "epoch": loaded.epoch, "beam": args.beam, "input_size": size,
                           "images": records}, out / "captions.json")
    _say(args, f"wrote {len(records)} captioned image(s){' and explanations' if args.explain else ''} to {out}")
    return 0


def _load_source(source: str):
    """An image file or ``sample:NAME`` (a Pillow image), or ``scene:SEED`` (the seed; drawn later)."""
    from ..errors import PreimageError
    from ..images import load_image

    if source.startswith("scene:"):
        try:
            seed = int(source.split(":", 1)[1])
        except ValueError:
            raise PreimageError(f"{source}: a scene is scene:SEED with an integer seed") from None
        if seed < 0:
            raise PreimageError(f"{source}: the seed must be >= 0")
        return seed
    return load_image(source)
