"""``preimage invert IMAGE... --layer L``: reconstruct images from a layer's activations.

The original one-file script stays reachable: its flags (``--image_path``, ``--layer_name``,
``--lambda_alpha``, ``--epochs``, ``--stdout_epoches``, ...) are accepted as aliases, and when a run
uses only them (or says ``--preset original``) it reproduces that script: AlexNet at 227 px, layer
``avgpool``, SGD lr 100, seed 2023.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import PreimageError
from ..recipes import DEFAULT_LAYERS, INVERT_PRESET_NAMES, ORIGINAL_SEED  # DEFAULT_LAYERS: the layer inverted when none is given
from ..validate import DEFAULT_MODEL, check_model_name
from .common import (add_model_args, add_output_args, add_run_args, check_images, check_memory, check_model,
                     device_from_args, divergence_fix, nonneg_float, nonneg_int, positive_float, positive_int, say)

#: flags that only the original script spells this way; using one of them (and no new-only flag)
#: selects the original preset
ORIGINAL_ONLY = {"--image_path", "--layer_name", "--lambda_alpha", "--lambda_tv", "--epochs",
                 "--stdout_epoches", "--decay_factor", "--decay_epochs", "--input_size"}
NEW_ONLY = {"--layer", "-l", "--preset", "--steps", "--optimizer", "--init", "--init-scale", "--jitter",
            "--rec-weight", "--decay-steps", "--gif", "--frames", "--copies", "--color-shift", "--noise",
            "--jitter-until", "--finish-steps", "--finish-optimizer", "--finish-lr", "--finish-budget",
            "--finish-priors"}



def _fraction(text: str) -> float:
    v = nonneg_float(text)
    if v > 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a fraction of the steps, in [0, 1]")
    return v


def add_parser(sub) -> None:
    p = sub.add_parser(
        "invert", help="reconstruct an image from a layer's activations",
        description="Reconstruct images from what a network keeps of them at one or more layers "
                    "(Mahendran & Vedaldi 2015, 2016). Writes NAME.png, NAME_compare.png, manifest.json "
                    "and history.json into --out, and prints the metrics. With --model gan:RUN_DIR (a "
                    "`preimage gan train` run) it finds the noise whose generated image reproduces each image.",
        epilog="examples:\n"
               "  preimage invert sample:chelsea --layer blocks.3\n"
               "  preimage invert digit.png --model gan:out/gan-digits   # the noise a trained generator needs\n"
               "  preimage invert photo.jpg --model vgg16 --weights vgg16.pth --layer conv3_1 --layer fc6:0.1\n"
               "  preimage invert --image_path photo.jpg --weights alexnet.pth   # the original script\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files or sample:NAME (several: one batched run)")
    p.add_argument("--image_path", "--image-path", dest="image_path", help="the original script's image flag")
    p.add_argument("--layer", "-l", "--layer_name", dest="layers", action="append", metavar="LAYER[:W][+LAYER[:W]]",
                   help="layer to invert, with an optional weight; repeat or join with + for several "
                        "(default: a middle layer of the model; original preset: avgpool)")
    p.add_argument("--preset", choices=list(INVERT_PRESET_NAMES), default=None,
                   help="default: natural pre-image objective with Adam, tuned per depth (from stride 32: "
                        "a Laplacian-pyramid image, λ_TV 0.2); pixels: the same on free pixels at every "
                        "depth; fast: the same without jitter, 200 steps; recognisable: the default with deep "
                        "layers jittered to the end and a small finish, for pre-images other networks "
                        "recognise; natural: IJCV 2016 with SGD; original: the original script; "
                        "shallow: HOG/DSIFT (default: 'default', 'shallow' for hog/dsift, or 'original' when "
                        "only the original script's flags are used)")
    add_model_args(p, default=None, default_text=f"{DEFAULT_MODEL}, embedded; original preset: alexnet")
    o = p.add_argument_group("objective (override the preset)")
    o.add_argument("--alpha", type=positive_float, help="alpha-norm exponent (6)")
    o.add_argument("--beta", type=positive_float, help="TV exponent (2)")
    o.add_argument("--lambda-alpha", "--lambda_alpha", dest="lambda_alpha", type=nonneg_float, help="alpha-norm weight")
    o.add_argument("--lambda-tv", "--lambda_tv", dest="lambda_tv", type=nonneg_float, help="TV weight")
    o.add_argument("--rec-weight", dest="rec_weight", type=nonneg_float, help="weight C of the reconstruction term")
    o.add_argument("--jitter", type=nonneg_int, help="random roll in pixels during the jitter phase (0: off)")
    o.add_argument("--jitter-until", type=_fraction, metavar="FRACTION",
                   help="the jitter phase's share of the steps (default: the preset's, 0.4 for default; 1: the "
                        "whole run, which another network recognises more often at a looser feature fit, "
                        "docs/inversion.md)")
    o.add_argument("--copies", type=positive_int, help="augmentation ensembling (Ghiasi et al. 2022, for ViTs): "
                   "copies of each image per step in the jitter phase, each jittered, colour-shifted and "
                   "noised on its own (1: off)")
    o.add_argument("--color-shift", dest="color_shift", type=nonneg_float,
                   help="per-copy colour shift in the jitter phase: x*exp(U(-s,s)) + U(-s,s), input units (0: off)")
    o.add_argument("--noise", type=nonneg_float, help="per-copy Gaussian noise std in the jitter phase, input units (0: off)")
    o.add_argument("--init", help="start from noise, zeros, learned (the colours predicted from the target features; "
                   "shipped for efficientnet_lite0 at blocks.5, blocks.6 and conv_head), a FILE.pt of colour maps "
                   "(preimage.starts.save_starts) or an image (path or sample:NAME); at deep layers the pre-image "
                   "keeps the colours it starts from")
    o.add_argument("--init-scale", dest="init_scale", type=nonneg_float, help="std of the starting noise")
    t = p.add_argument_group("optimization (override the preset)")
    t.add_argument("--steps", "--epochs", dest="steps", type=positive_int,
                   help="optimization steps (the preset's lr drops keep their place in them)")
    t.add_argument("--optimizer", choices=["sgd", "adam", "lbfgs"], help="optimizer")
    t.add_argument("--lr", type=positive_float, help="learning rate (the default preset divides it by up to 4 at "
                   "layers of stride above 16; the manifest records the rate used)")
    t.add_argument("--momentum", type=nonneg_float, help="SGD momentum")
    t.add_argument("--decay-factor", "--decay_factor", dest="decay_factor", type=positive_float,
                   help="lr multiplier at each decay")
    t.add_argument("--decay-steps", dest="decay_steps", type=positive_int, nargs="+", metavar="STEP",
                   help="steps at which the lr decays (default: the preset's, moved with --steps)")
    t.add_argument("--decay-epochs", "--decay_epochs", dest="decay_every", type=positive_int,
                   help="decay the lr every N steps (the original script's StepLR)")
    t.add_argument("--finish-steps", dest="finish_steps", type=nonneg_int, metavar="N",
                   help="the last N of the steps without jitter, by --finish-optimizer (0: none)")
    t.add_argument("--finish-optimizer", dest="finish_optimizer", choices=["sgd", "adam", "lbfgs"],
                   help="optimizer of the finish (lbfgs)")
    t.add_argument("--finish-lr", dest="finish_lr", type=positive_float, help="learning rate of the finish (1.0)")
    t.add_argument("--finish-budget", dest="finish_budget", type=nonneg_float, metavar="LEVELS",
                   help="the finish moves no pixel more than this many 8-bit levels from where the steps before "
                        "it left it (0: no limit); with --jitter-until 1 it buys back the fit jitter gives up "
                        "with changes too small to see (docs/deep_layers.md)")
    t.add_argument("--finish-priors", dest="finish_priors", type=nonneg_float, metavar="SCALE",
                   help="the priors' weights in the finish, as a multiple of theirs before it (1; 0: the "
                        "reconstruction alone)")
    p.add_argument("--judge", metavar="MODEL", default=None,
                   help="another classifier (e.g. efficientnet_lite2) that judges each reconstruction: does it "
                        "give it the class it gives the original? (top-1 agreement, rank; in the manifest)")
    add_output_args(p, default="out/invert")
    add_run_args(p, seed=0, seed_text=f"0; original preset: {ORIGINAL_SEED}")
    p.add_argument("--log-every", "--stdout_epoches", dest="log_every", type=int, default=None,
                   help="print the loss terms every N steps (original preset: 25)")
    p.add_argument("--gif", action="store_true", help="also write NAME.gif of the optimization")
    p.add_argument("--frames", type=positive_int, default=None, help="frame interval for --gif (default: steps/40)")
    p.set_defaults(run=run, seed=None)


def _preset(args: argparse.Namespace, argv: list[str]) -> str:
    if args.preset:
        return args.preset
    flags = {a.split("=", 1)[0] for a in argv if a.startswith("-")}
    if flags & ORIGINAL_ONLY and not flags & NEW_ONLY and not args.images:
        return "original"
    if args.model in ("hog", "dsift") or (args.model or "").startswith(("hog:", "dsift:")):
        from ..tasks.invert import INVERT_PRESETS

        if "shallow" in INVERT_PRESETS:
            return "shallow"
    return "default"


def run(args: argparse.Namespace) -> int:
    from ..images import image_name, unique_names
    from ..io import check_outputs

    argv = sys.argv[1:] if getattr(args, "_argv", None) is None else args._argv
    preset = _preset(args, argv)
    original = preset == "original"
    sources = list(args.images) + ([args.image_path] if args.image_path else [])
    if args.model is None:
        args.model = "alexnet" if original else "efficientnet_lite0"
    check_model(args)  # a misspelt model is named first (not as a missing --layer)
    gan = args.model.startswith("gan:")
    if gan:
        _check_gan_flags(args)
    if args.judge is not None:  # a misspelt judge is named before torch loads, as --model is
        try:
            check_model_name(args.judge)
        except PreimageError as exc:
            raise PreimageError(f"--judge: {exc}") from None
    if not sources:
        raise PreimageError("no image given (e.g. preimage invert sample:chelsea)")
    check_images(sources)  # every image is read before torch and the model load
    if gan:  # the pre-image of a generator: search its noise, not pixels
        return _run_gan(args, sources)
    from ..models.shallow import is_shallow_name
    from ..tasks.invert import config_for, output_paths
    from ..tasks.shallow import glyph_paths

    shallow = is_shallow_name(args.model)
    default_layer = "avgpool" if original else DEFAULT_LAYERS.get(args.model) or ("features" if shallow else "")
    layers = args.layers or [default_layer]
    if not layers[0]:
        raise PreimageError(f"give a --layer for {args.model} (`preimage layers {args.model}` lists them)")
    seed = args.seed if args.seed is not None else (ORIGINAL_SEED if original else 0)
    decay_steps = args.decay_steps
    steps_for_decay = args.steps or config_for(preset).steps
    if args.decay_every:
        decay_steps = list(range(args.decay_every, steps_for_decay + 1, args.decay_every)) or [args.decay_every]
    cfg = config_for(
        preset, steps=args.steps, optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
        decay_factor=args.decay_factor, decay_steps=decay_steps, alpha=args.alpha, beta=args.beta,
        lambda_alpha=args.lambda_alpha, lambda_tv=args.lambda_tv, rec_weight=args.rec_weight,
        jitter=args.jitter, jitter_until=args.jitter_until, init=args.init, init_scale=args.init_scale, seed=seed,
        copies=args.copies, color_shift=args.color_shift, noise=args.noise, finish_steps=args.finish_steps,
        finish_optimizer=args.finish_optimizer, finish_lr=args.finish_lr, finish_budget=args.finish_budget,
        finish_priors=args.finish_priors,
    )
    from ..starts import is_map_file, load_starts

    if is_map_file(cfg.init):  # colour maps of preimage.starts.save_starts
        load_starts(cfg.init)
    elif cfg.init not in ("noise", "zeros", "learned"):
        check_images([cfg.init])
    device = device_from_args(args) if not (original and args.device == "auto") else device_from_args(
        argparse.Namespace(device="cpu"))
    input_size = args.input_size or (227 if original else None)
    # refuse to overwrite before any work is done
    names = unique_names([image_name(s) for s in sources])
    check_outputs(output_paths(args.out, names, args.gif) + (glyph_paths(names, args.out) if shallow else []),
                  args.force)
    from ..io import all_or_nothing
    from ..models import load_model
    from ..tasks.invert import invert
    from ..tasks.shallow import is_shallow, save_inversion_glyphs

    extra = {k: getattr(args, k) for k in ("mean", "std", "channels", "classes") if getattr(args, k, None) is not None}
    model = load_model(args.model, weights=args.weights, device=device, input_size=input_size, **extra)
    from ..tasks.invert import _parse_layers

    _parse_layers(model, layers)  # an unknown layer is refused before anything is said
    check_memory(model, batch=len(sources), size=model.input_size, what=f"inverting {len(sources)} image(s) at "
                 f"{model.input_size} px", hint="use fewer images or a smaller --input-size")
    judge = load_model(args.judge, device=device) if args.judge else None
    if judge is not None and judge.classes is None:
        raise PreimageError(f"the judge {judge.name} is not a classifier")
    log_every = args.log_every if args.log_every is not None else (25 if original else 0)
    callbacks = [_logger(log_every)] if log_every and log_every > 0 else []
    frame_every = (args.frames or max(1, cfg.steps // 40)) if args.gif else 0
    say(args, f"inverting {', '.join(sources)} at {model.name}:{' '.join(layers)} ({preset} preset, {cfg.steps} steps)")
    res = invert(model, sources, layers=layers, config=cfg, progress=not args.quiet and not callbacks,
                 frame_every=frame_every, callbacks=callbacks, judge=judge)
    with all_or_nothing():  # the inversion's files and its glyph figures appear together
        written = res.save(args.out, force=args.force, gif=args.gif)
        if is_shallow(model):  # original | what the descriptor sees | reconstruction
            written += list(save_inversion_glyphs(res, model, args.out, force=args.force) or [])
    for name, m in zip(res.names, res.metrics):
        print(f"{name}: " + _format_metrics(m))
    shown = [Path(p).name for p in written]
    listed = ", ".join(shown[:6]) + (f", and {len(shown) - 6} more" if len(shown) > 6 else "")
    print(f"wrote {len(written)} files to {args.out}/ ({listed})")
    if res.status == "diverged":
        fix = divergence_fix(res.result.diverged_term, WEIGHT_FLAGS, first_step=not res.result.history)
        if "--lr" in fix and preset != "default":
            fix += " or use --preset default"
        raise _Diverged(f"diverged: {res.result.message}; {fix}")
    if res.status == "interrupted":
        print(f"preimage invert: {res.result.message}; saved what there was", file=sys.stderr)
        return 130
    return 0


#: invert's options that mean nothing for a generator (--model gan:RUN): dest -> flag; each is refused
#: when given (the pixel-space search has no layer, preset, prior, start image, judge or input settings)
GAN_IGNORED = {
    "layers": "--layer", "preset": "--preset", "input_size": "--input-size", "mean": "--mean", "std": "--std",
    "channels": "--channels", "classes": "--classes", "alpha": "--alpha", "beta": "--beta",
    "lambda_alpha": "--lambda-alpha", "lambda_tv": "--lambda-tv", "rec_weight": "--rec-weight", "jitter": "--jitter",
    "jitter_until": "--jitter-until", "copies": "--copies", "color_shift": "--color-shift", "noise": "--noise", "init": "--init",
    "init_scale": "--init-scale", "judge": "--judge", "finish_steps": "--finish-steps",
    "finish_optimizer": "--finish-optimizer", "finish_lr": "--finish-lr", "finish_budget": "--finish-budget",
    "finish_priors": "--finish-priors",
}


def _check_gan_flags(args: argparse.Namespace) -> None:
    """``--model gan:RUN``: a run path, and no flag that the generator's search would ignore."""
    ckpt = args.model.split(":", 1)[1].strip()
    if not ckpt:
        raise PreimageError("--model gan: needs the folder or checkpoint.pt of a `preimage gan train` run after "
                            "the colon (e.g. --model gan:out/gan-digits)")
    given = [flag for dest, flag in GAN_IGNORED.items() if getattr(args, dest, None) is not None]
    if getattr(args, "weights", "default") != "default":
        given.append("--weights")
    if given:
        raise PreimageError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to a generator "
                            f"(--model gan:RUN searches its noise in pixel space; the run folder holds its "
                            f"weights); leave {'it' if len(given) == 1 else 'them'} out")


def _run_gan(args: argparse.Namespace, sources: list[str]) -> int:
    """``preimage invert IMAGE... --model gan:RUN``: the noise whose generated image reproduces each image."""
    from ..images import image_name, unique_names
    from ..io import check_outputs
    from .gan import _check_checkpoint

    ckpt = args.model.split(":", 1)[1].strip()
    _check_checkpoint(ckpt)
    device = device_from_args(args)
    names = unique_names([image_name(s) for s in sources])
    from ..tasks.invert import output_paths

    check_outputs(output_paths(args.out, names, args.gif), args.force)
    from ..gan.inversion import GanInvertConfig, invert_generator
    from ..gan.sample import load_generator

    cfg = GanInvertConfig()
    steps = args.steps or cfg.steps
    decay_steps = args.decay_steps
    if args.decay_every:  # the original script's StepLR, as for a network
        decay_steps = list(range(args.decay_every, steps + 1, args.decay_every)) or [args.decay_every]
    overrides = {"steps": args.steps, "optimizer": args.optimizer, "lr": args.lr, "momentum": args.momentum,
                 "seed": args.seed, "decay_factor": args.decay_factor,
                 "decay_steps": tuple(decay_steps) if decay_steps else None}
    G, gcfg = load_generator(ckpt, device=device)
    from ..gan.sample import check_memory as check_generator_memory

    # the noise of every image and start is optimized as one batch
    check_generator_memory(G, len(sources) * cfg.restarts, noise_dim=gcfg.noise_dim, device=device, backward=True,
                           what=f"inverting {len(sources)} image(s) through the generator ({cfg.restarts} "
                                "starts each)", hint="use fewer images")
    callbacks = [_logger(args.log_every)] if args.log_every and args.log_every > 0 else []
    say(args, f"inverting {', '.join(sources)} through the generator {ckpt} ({steps} steps, {cfg.restarts} starts)")
    res = invert_generator((G, gcfg), sources, config=cfg, progress=not args.quiet and not callbacks,
                           callbacks=callbacks, frame_every=(args.frames or max(1, steps // 40)) if args.gif else 0,
                           **overrides)
    res.model = f"gan:{ckpt}"
    written = res.save(args.out, force=args.force, gif=args.gif)
    for name, m in zip(res.names, res.metrics):
        print(f"{name}: per-pixel error {m['mae']:.4f} (MSE {m['mse']:.5f}) | PSNR {m['psnr']:.1f} dB | "
              f"SSIM {m['ssim']:.3f} | TV ratio {m['tv_ratio']:.2f}")
    print(f"wrote {len(written)} files to {args.out}/")
    if res.status == "diverged":
        raise _Diverged(f"diverged: {res.result.message}; lower --lr")
    if res.status == "interrupted":
        print(f"preimage invert: interrupted after {res.result.steps} steps; saved what there was", file=sys.stderr)
        return 130
    return 0


#: the flag that weighs each objective term (named in the divergence message)
WEIGHT_FLAGS = {"tv": "--lambda-tv", "alpha": "--lambda-alpha", "rec": "--rec-weight"}


class _Diverged(PreimageError):
    exit_code = 1


def _logger(every: int):
    def cb(step) -> None:
        if step.step % every == 0:
            terms = "  ".join(f"{k} {v:.4g}" for k, v in step.terms.items())
            print(f"step {step.step:5d}  loss {step.loss:.4g}  {terms}", flush=True)
    return cb


def _format_metrics(m: dict) -> str:
    moved, photo = m.get("feature_error_moved", {}), m.get("photo_error_moved", {})
    parts = [f"feature error {k} {v:.3f}" + (f" (moved 1 px {moved[k]:.3f}, the photo moved 1 px {photo[k]:.3f})"
                                             if k in moved and k in photo else "")
             for k, v in m["feature_error"].items()]
    parts += [f"PSNR {m['psnr']:.1f} dB", f"SSIM {m['ssim']:.3f}", f"TV ratio {m['tv_ratio']:.2f}"]
    if "top1_agrees" in m:
        parts.append(("top-1 agrees" if m["top1_agrees"] else "top-1 differs") + f" ({m['top1_reconstruction']})")
    if "judge" in m:
        j = m["judge"]
        parts.append(f"judge {j['model']}: " + ("agrees" if j["agrees"] else "differs")
                     + f" ({j['class']}; the original's class ranks {j['rank']})")
    return " | ".join(parts)
