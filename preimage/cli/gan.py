"""``preimage gan train|sample|interpolate|classifier|score``: train a GAN (vanilla, least squares; FC or
DCGAN), use it, and score it (FD-LeNet offline; FID where Inception weights can be had).

The generator's pre-image is found by ``preimage invert IMAGE --model gan:CKPT``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import PreimageError
from .common import add_memory_arg, positive_float, positive_int, say

LOSS_NAMES = ("vanilla", "ls")
ARCH_NAMES = ("fc", "dc")
DATA_NAMES = ("fashion-mnist", "mnist", "digits")


def _at_least_two(text: str) -> int:
    v = positive_int(text)
    if v < 2:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 2 (a strip runs from one noise to another)")
    return v


def add_parser(sub) -> None:
    p = sub.add_parser(
        "gan", help="train GANs (vanilla, least squares; FC or DCGAN) and sample from them",
        description="Generative adversarial networks as the CS231n notes teach them: train, sample, interpolate. "
                    "Find a generator's pre-image with `preimage invert IMAGE --model gan:RUN_DIR`.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  preimage gan train --data digits --loss ls --arch dc --epochs 5 --out out/gan-digits\n"
               "  preimage gan train --data fashion-mnist --loss vanilla --arch fc --epochs 10 --out out/gan-fc\n"
               "  preimage gan sample out/gan-digits --n 64 --out samples.png\n"
               "  preimage gan interpolate out/gan-digits --rows 4 --steps 10 --out strip.png\n"
               "  preimage gan classifier --data digits --out out/lenet-digits\n"
               "  preimage gan score out/gan-digits --classifier out/lenet-digits\n",
    )
    cmds = p.add_subparsers(dest="gan_command", metavar="{train,sample,interpolate,classifier,score}")
    cmds.required = True

    t = cmds.add_parser("train", help="train a GAN; a checkpoint every epoch, rerun to resume",
                        description="Train a generator/discriminator pair (the notes' run_a_gan: alternate D and G "
                                    "steps, uniform noise in [-1, 1], full batches). Writes checkpoint.pt, "
                                    "history.json, losses.png, manifest.json and samples/epoch_NNN.png into --out; "
                                    "rerunning the same command after an interruption resumes exactly.")
    t.add_argument("--loss", choices=LOSS_NAMES, default="vanilla",
                   help="vanilla: BCE with the non-saturating G loss; ls: least squares (default: vanilla)")
    t.add_argument("--arch", choices=ARCH_NAMES, default="dc", help="fc: fully connected pair; dc: DCGAN (default: dc)")
    t.add_argument("--data", default="fashion-mnist",
                   help="fashion-mnist (IDX files in /usr/share/datasets/fashion-mnist), mnist (torchvision download), "
                        "digits (scikit-learn, bundled) or a folder of IDX files or images (default: fashion-mnist)")
    t.add_argument("--data-root", dest="data_root", default=None,
                   help="folder with the Fashion-MNIST IDX files, or the download cache for mnist")
    t.add_argument("--size", type=int, choices=(28, 32, 64), default=None,
                   help="image side (default: the data's own; 32 for image folders)")
    t.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="1 grey, 3 colour (default: the data's own)")
    t.add_argument("--epochs", type=positive_int, default=10, help="epochs in total (default: 10)")
    t.add_argument("--preset", choices=("cs231n", "dcgan"), default="cs231n",
                   help="cs231n: the notes' settings (batch 128, Adam lr 1e-3 β1 0.5, noise 96, PyTorch's "
                        "initial weights; default); dcgan: Radford et al. 2016's (lr 2e-4, weights N(0, 0.02)), "
                        "the better choice for --arch dc")
    t.add_argument("--batch-size", dest="batch_size", type=positive_int, default=None, help="images per step (128)")
    t.add_argument("--lr", type=positive_float, default=None, help="Adam learning rate (the preset's: 1e-3 cs231n, 2e-4 dcgan)")
    t.add_argument("--noise-dim", dest="noise_dim", type=positive_int, default=None, help="noise dimension (96)")
    t.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    t.add_argument("--out", "-o", default="out/gan", help="run folder (default: out/gan)")
    t.add_argument("--force", action="store_true", help="start over in a folder that holds another run")
    t.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    t.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    t.set_defaults(run=run_train, _label="gan train")

    for name, helptext in (("sample", "a grid of samples from a trained generator"),
                           ("interpolate", "strips between pairs of noise vectors")):
        s = cmds.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ".")
        s.add_argument("checkpoint", metavar="CKPT", help="a run folder or its checkpoint.pt")
        if name == "sample":
            s.add_argument("--n", type=positive_int, default=64, help="number of samples (default: 64)")
            s.add_argument("--ncols", type=positive_int, default=None, help="grid columns (default: √n)")
        else:
            s.add_argument("--steps", type=_at_least_two, default=10, help="images per strip, at least 2 (default: 10)")
            s.add_argument("--rows", type=positive_int, default=4, help="number of strips (default: 4)")
        s.add_argument("--seed", type=int, default=0, help="seed of the noise (default: 0)")
        s.add_argument("--out", "-o", default=f"out/gan-{name}.png",
                       help=f"PNG to write, a name ending in .png (default: out/gan-{name}.png)")
        s.add_argument("--force", action="store_true", help="overwrite --out")
        s.add_argument("--quiet", "-q", action="store_true", help="no log lines")
        add_memory_arg(s)
        s.set_defaults(run=run_sample if name == "sample" else run_interpolate, _label=f"gan {name}")
    c = cmds.add_parser("classifier", help="train the LeNet that FD-LeNet scores with",
                        description="Train the small classifier whose 128 penultimate features give FD-LeNet and "
                                    "KID-LeNet (`preimage gan score --classifier DIR`), on the labelled data the "
                                    "GAN learns from. Prints the test accuracy of every epoch; rerun to resume.")
    c.add_argument("--data", default="fashion-mnist",
                   help="fashion-mnist, mnist, digits or a folder with one sub-folder per class (default: fashion-mnist)")
    c.add_argument("--data-root", dest="data_root", default=None, help="folder of the IDX files / download cache")
    c.add_argument("--epochs", type=positive_int, default=3, help="epochs in total (default: 3)")
    c.add_argument("--out", "-o", default="out/lenet", help="run folder (default: out/lenet)")
    c.add_argument("--force", action="store_true", help="start over in a folder that holds another run")
    c.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    c.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    c.set_defaults(run=run_classifier, _label="gan classifier")

    r = cmds.add_parser("score", help="FD-LeNet, KID-LeNet and class histogram (and FID) of a generator",
                        description="Compare N samples of a trained generator with N training images of its data: "
                                    "FD-LeNet and KID-LeNet on the features of a classifier trained by `preimage gan "
                                    "classifier`, the class histogram of the samples (mode coverage), and with "
                                    "--inception the standard FID/KID on Inception-v3 (torch-fidelity's weights: "
                                    "downloaded once, or --inception-weights FILE). Writes JSON with --out.")
    r.add_argument("checkpoint", metavar="RUN", help="a `gan train` run folder or its checkpoint.pt")
    r.add_argument("--classifier", default=None, metavar="DIR", help="a `gan classifier` run folder (FD-LeNet)")
    r.add_argument("--inception", action="store_true", help="also FID and KID on Inception-v3 (needs torch-fidelity)")
    r.add_argument("--inception-weights", dest="inception_weights", default=None, metavar="FILE",
                   help="torch-fidelity's weights-inception-2015-12-05-6726825d.pth (default: download it once, ~100 MB)")
    r.add_argument("--n", type=positive_int, default=10_000, help="samples and real images (default: 10000)")
    r.add_argument("--data-root", dest="data_root", default=None, help="folder of the run's IDX files / download cache")
    r.add_argument("--seed", type=int, default=0, help="seed of the noise and the real subset (default: 0)")
    r.add_argument("--out", "-o", default=None, help="write the scores as JSON here")
    r.add_argument("--force", action="store_true", help="overwrite --out")
    r.add_argument("--quiet", "-q", action="store_true", help="no log lines")
    r.set_defaults(run=run_score, _label="gan score")
    p.set_defaults(run=lambda args: (p.print_help(sys.stderr), 2)[1])


def _check_data(args: argparse.Namespace) -> None:
    if args.data_root is not None and not Path(args.data_root).expanduser().is_dir():
        raise PreimageError(f"no such folder: {args.data_root}")
    if args.data in DATA_NAMES:
        return
    path = Path(args.data).expanduser()
    if not path.exists():
        from ..errors import did_you_mean

        raise PreimageError(f"no data set or folder {args.data!r}{did_you_mean(args.data, DATA_NAMES)}; "
                            f"named data sets: {', '.join(DATA_NAMES)}")
    if not path.is_dir():
        raise PreimageError(f"{args.data} is not a folder (give a folder of images or IDX files)")


def _check_checkpoint(path: str) -> None:
    p = Path(path)
    if p.is_dir() and not (p / "checkpoint.pt").is_file():
        raise PreimageError(f"{path} holds no checkpoint.pt (train one with `preimage gan train --out {path}`)")
    if not p.exists():
        raise PreimageError(f"no such checkpoint: {path}")


def _check_run_folder(out: Path, force: bool, kind: str, expected: dict, seed: int) -> None:
    """Refuse, before any data loads, an --out that holds another kind of run or a run with other
    settings (``expected``: the settings known without the data); fit() checks the rest."""
    if out.exists() and not out.is_dir():
        raise PreimageError(f"{out} is a file; --out must be a folder")
    if force or not out.is_dir():
        return
    again = "use --force to start over or choose another --out"
    if not (out / "checkpoint.pt").exists():
        if (out / "manifest.json").is_file():
            import json

            try:
                old_kind = json.loads((out / "manifest.json").read_text()).get("kind")
            except (OSError, ValueError, AttributeError):
                old_kind = None
            if old_kind is not None and old_kind != kind:
                raise PreimageError(f"{out} holds a {old_kind!r} run, not a {kind!r} one; {again}")
        elif any(out.iterdir()):
            raise PreimageError(f"{out} is not empty and holds no training run; use --force or choose another --out")
        return
    from ..train import load_checkpoint

    ckpt = load_checkpoint(out)
    if ckpt.get("kind") != kind:
        raise PreimageError(f"{out} holds a {ckpt.get('kind')!r} run, not a {kind!r} one; {again}")
    old = ckpt.get("config") or {}
    for key, value in expected.items():
        if key in old and old[key] != value:
            raise PreimageError(f"{out} holds a run with other settings ({key}: {old[key]!r} there, {value!r} now); "
                                f"{again}")
    if "seed" in ckpt and int(ckpt["seed"]) != seed:
        raise PreimageError(f"{out} holds a run with other settings (seed: {ckpt['seed']} there, {seed} now); {again}")


def _named_data(args: argparse.Namespace) -> str:
    return args.data if args.data in DATA_NAMES else str(Path(args.data).expanduser().resolve())


def run_train(args: argparse.Namespace) -> int:
    _check_data(args)
    out = Path(args.out)
    from ..gan.task import gan_config

    cfg = gan_config(args.preset, loss=args.loss, arch=args.arch, batch_size=args.batch_size, lr=args.lr,
                     noise_dim=args.noise_dim, init_seed=args.seed)
    expected = {k: v for k, v in cfg.as_dict().items() if k not in ("data", "size", "channels")}
    expected["data"] = _named_data(args)
    expected.update({k: getattr(args, k) for k in ("size", "channels") if getattr(args, k) is not None})
    _check_run_folder(out, args.force, "gan", expected, args.seed)
    from ..gan import make_task
    from ..train import fit
    from .common import device_from_args

    device = device_from_args(args)
    task = make_task(data=args.data, preset=args.preset, data_root=args.data_root, device=str(device),
                     loss=args.loss, arch=args.arch, size=args.size, channels=args.channels,
                     batch_size=args.batch_size, lr=args.lr, noise_dim=args.noise_dim, init_seed=args.seed)
    cfg = task.cfg
    say(args, f"training a {cfg.loss} {cfg.arch} GAN on {task.data.name} ({len(task.data)} images, "
              f"{cfg.channels} x {cfg.size} x {cfg.size}) for {args.epochs} epochs into {out}/")
    # `kill PID` stops as cleanly as Ctrl-C (cli.main raises SIGTERM as errors.Terminated): the run resumes later
    res = fit(task, out, epochs=args.epochs, seed=args.seed, force=args.force, progress=not args.quiet)
    return _report(res, out)


def _stopped(res, command: str) -> int | None:
    """The exit code of a fit that did not finish (divergence raises), else None."""
    if res.status == "diverged":
        raise _Diverged(f"diverged: {res.message}")
    if res.status == "interrupted":
        print(f"preimage gan {command}: {res.message}", file=sys.stderr)
        return res.exit_code or 130
    return None


def _report(res, out: Path) -> int:
    stopped = _stopped(res, "train")
    if stopped is not None:
        return stopped
    if res.message:  # e.g. the folder already holds as many epochs as asked for
        print(res.message)
    if res.epochs_done == res.resumed_from:  # nothing trained this time
        print(f"checkpoint {res.checkpoint}, samples {out / 'samples.png'}")
        return 0
    last = (res.history.get("epochs") or [{}])[-1]
    losses = "  ".join(f"{k} {v:.3f}" for k, v in last.items() if k in ("D", "G") and isinstance(v, float))
    print(f"trained {res.epochs_done} epoch{'' if res.epochs_done == 1 else 's'} in {res.seconds:.0f} s{'  ' + losses if losses else ''}; "
          f"checkpoint {res.checkpoint}, samples {out / 'samples.png'}")
    return 0


class _Diverged(PreimageError):
    exit_code = 1


def _check_png(path: str, command: str) -> None:
    """``--out`` of sample/interpolate: a PNG is what is written, so the name must say so."""
    suffix = Path(path).suffix
    if suffix.lower() != ".png":
        what = f"ends in {suffix!r}" if suffix else "has no extension"
        raise PreimageError(f"--out {path} {what}; gan {command} writes a PNG image: give a name ending in .png")


def _save_png(image, path: str) -> None:
    from ..images import save_image
    from ..io import write_failure

    with write_failure(path):
        save_image(image, path)


def _check_image_out(args: argparse.Namespace, command: str) -> None:
    from ..io import check_outputs

    _check_checkpoint(args.checkpoint)
    _check_png(args.out, command)
    check_outputs([args.out], args.force)


def run_sample(args: argparse.Namespace) -> int:
    _check_image_out(args, "sample")
    from ..gan import image_grid, load_generator, sample
    from ..gan.sample import check_memory

    G, cfg = load_generator(args.checkpoint)
    check_memory(G, args.n, noise_dim=cfg.noise_dim, what=f"a grid of {args.n} samples", hint="lower --n")
    images = sample(G, args.n, noise_dim=cfg.noise_dim, seed=args.seed)
    _save_png(image_grid(images, args.ncols), args.out)
    print(f"wrote {args.n} samples to {args.out}")
    return 0


def run_interpolate(args: argparse.Namespace) -> int:
    _check_image_out(args, "interpolate")
    from ..gan import image_grid, interpolate, load_generator
    from ..gan.sample import check_memory

    G, cfg = load_generator(args.checkpoint)
    check_memory(G, args.rows * args.steps, noise_dim=cfg.noise_dim,
                 what=f"an interpolation of {args.rows} strips of {args.steps} images", hint="lower --rows or --steps")
    images = interpolate(G, noise_dim=cfg.noise_dim, steps=args.steps, rows=args.rows, seed=args.seed)
    _save_png(image_grid(images, args.steps), args.out)
    print(f"wrote {args.rows} strips of {args.steps} images to {args.out}")
    return 0


def run_classifier(args: argparse.Namespace) -> int:
    _check_data(args)
    out = Path(args.out)
    _check_run_folder(out, args.force, "classifier",
                      {"init_seed": args.seed, **({"data": args.data} if args.data in DATA_NAMES else {})}, args.seed)
    from ..gan.evaluate import train_classifier

    say(args, f"training the scoring LeNet on {args.data} for {args.epochs} epochs into {out}/")
    res = train_classifier(data=args.data, out=out, epochs=args.epochs, seed=args.seed, data_root=args.data_root,
                           force=args.force, progress=not args.quiet)
    stopped = _stopped(res, "classifier")
    if stopped is not None:
        return stopped
    if res.message:
        print(res.message)
    for e in res.history.get("epochs", []):
        if "test_accuracy" in e:
            print(f"epoch {e['epoch']}: test accuracy {e['test_accuracy']:.4f}")
    print(f"checkpoint {res.checkpoint}")
    return 0


def run_score(args: argparse.Namespace) -> int:
    _check_checkpoint(args.checkpoint)
    if args.classifier is None and not args.inception:
        raise PreimageError("nothing to score with: give --classifier DIR (FD-LeNet) and/or --inception (FID)")
    if args.classifier is not None:
        _check_checkpoint(args.classifier)
    if args.inception_weights is not None and not Path(args.inception_weights).expanduser().is_file():
        raise PreimageError(f"no such Inception weights file: {args.inception_weights}")
    if args.inception_weights is not None and not args.inception:
        raise PreimageError("--inception-weights needs --inception")
    if args.data_root is not None and not Path(args.data_root).expanduser().is_dir():
        raise PreimageError(f"no such folder: {args.data_root}")
    if args.out is not None:
        from ..io import check_outputs

        check_outputs([args.out], args.force)
    from ..gan.evaluate import score_run
    from ..train import load_checkpoint

    load_checkpoint(args.checkpoint, kind="gan")  # the wrong kind of run is one line, before the first one
    if args.classifier is not None:
        load_checkpoint(args.classifier, kind="classifier")
    say(args, f"scoring {args.checkpoint} with up to {args.n} samples, no more than the data's training images"
              + (" (FID: Inception weights are downloaded once if not cached)" if args.inception and
                 args.inception_weights is None else ""))
    r = score_run(args.checkpoint, classifier=args.classifier, inception=args.inception,
                  inception_weights=args.inception_weights, n=args.n, seed=args.seed, data_root=args.data_root)
    if "lenet" in r:
        m = r["lenet"]
        acc = f"; classifier test accuracy {m['test_accuracy']:.4f}" if m["test_accuracy"] is not None else ""
        acc = f" (n={r['n']}{acc})"  # n: --n, or the data's training images when it has fewer
        print(f"FD-LeNet {m['fd']:.3f}  KID-LeNet {m['kid']:.5f} ± {m['kid_std']:.5f}{acc}")
        print("class shares: " + " ".join(f"{h:.3f}" for h in m["class_histogram"])
              + f"  (smallest {m['min_class_fraction']:.1%})")
    if "inception" in r:
        m = r["inception"]
        print(f"FID {m['fid']:.3f}  KID {m['kid']:.5f} ± {m['kid_std']:.5f} (Inception-v3, n={r['n']})")
    if args.out is not None:
        from ..io import write_failure, write_json

        with write_failure(args.out):
            write_json(args.out, r)
        say(args, f"wrote {args.out}")
    return 0
