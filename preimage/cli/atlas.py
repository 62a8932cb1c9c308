"""``preimage atlas --layer L --channels 0:32 [IMAGES or a folder]``: the channel atlas."""
from __future__ import annotations

import argparse
import sys

from .common import add_model_args, channel_count, add_output_args, add_run_args, model_from_args, nonneg_int, positive_float, positive_int, say


def add_parser(sub) -> None:
    p = sub.add_parser(
        "atlas", help="channel atlas: each channel's visualization beside the photo crops that excite it most",
        conflict_handler="resolve",  # --channels here names the layer's channels, not an ONNX input's
        description="Channel atlas (Olah et al. 2017, 'Feature Visualization'): for each channel of a layer, an "
                    "image optimized to raise its spatial mean (Fourier parameterization, jitter and random "
                    "scale; many channels in one batch) beside crops of the top-k photos where it peaks "
                    "highest (one crop per photo: a square centred on the peak's receptive-field centre, side "
                    "--crop). The number under each image is the channel's spatial mean on it (crops resized "
                    "to --size). Writes atlas.png, atlas.html (self-contained), atlas.json and "
                    "channels/cNNNN.png.")
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="photos, folders of photos, or sample:NAME (default: every bundled photo)")
    p.add_argument("--layer", "-l", required=True, help="the layer (`preimage layers MODEL`), e.g. blocks.5")
    p.add_argument("--top-k", dest="top_k", type=positive_int, default=None, help="crops per channel (default: 4)")
    p.add_argument("--size", type=positive_int, default=None,
                   help="side of each visualization and shown crop in pixels (default: 128)")
    p.add_argument("--steps", type=positive_int, default=None, help="Adam steps per visualization (default: 256)")
    p.add_argument("--lr", type=positive_float, default=None, help="Adam learning rate (default: 0.05)")
    p.add_argument("--batch", type=positive_int, default=None,
                   help="channels optimized in one batch (default: 32; fewer when memory demands)")
    p.add_argument("--crop", type=positive_int, default=None,
                   help="crop side in the analysed photo's pixels (default: 3 x the layer's stride)")
    p.add_argument("--photo-size", dest="photo_size", type=positive_int, default=None,
                   help="short side of the photos when analysed (default: the model's input size)")
    p.add_argument("--jitter", type=nonneg_int, default=None,
                   help="random roll of up to this many pixels per step (default: 16 at 224 px, scaled with --size)")
    add_model_args(p)
    p.add_argument("--channels", dest="channel_spec", default="0:16", metavar="SPEC",
                   help="the layer's channels: a range START:STOP (STOP excluded), a list 3,7,9, or both "
                        "(0:4,10) (default: 0:16)")
    p.add_argument("--input-channels", dest="channels", type=channel_count, default=None,
                   help="ONNX files: 1 (grey) or 3 (RGB) input channels (what --channels is for other commands)")
    add_output_args(p, "out/atlas")
    add_run_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import PreimageError
    from ..images import SAMPLES, expand_sources
    from ..io import check_outputs
    from ..validate import check_channels, parse_channels
    from .common import check_images

    channels = parse_channels(args.channel_spec)
    for flag in ("size", "photo_size", "crop"):
        value = getattr(args, flag)
        if value is not None and value < 16:
            raise PreimageError(f"--{flag.replace('_', '-')} {value} is too small (at least 16 pixels)")
    sources = expand_sources(args.images) if args.images else [f"sample:{n}" for n in SAMPLES]
    check_images(sources)  # all of the above without torch: bad input answers at once
    settings = dict(size=args.size, steps=args.steps, lr=args.lr, batch=args.batch, top_k=args.top_k,
                    crop=args.crop, photo_size=args.photo_size, jitter=args.jitter)
    from ..tasks.atlas import layer_channels, make_config, output_paths

    make_config(**settings)
    check_outputs(output_paths(args.out, channels), args.force)
    model = model_from_args(args)
    check_channels(channels, layer_channels(model, args.layer), args.layer)  # unknown layer: a did-you-mean
    from ..tasks.atlas import channel_atlas

    result = channel_atlas(model, args.layer, channels, sources, seed=args.seed, progress=not args.quiet, **settings)
    result.save(args.out, force=args.force)
    for c, a, ex in zip(result.channels, result.activation, result.examples):
        best = ", ".join(f"{x.source} {x.activation:.3g} (peak {x.peak:.3g})" for x in ex)
        print(f"channel {c}: {a:.3g} on its visualization; top photos by peak, mean on the crop: {best}")
    say(args, f"wrote {args.out}/atlas.png, atlas.html, atlas.json ({len(result.channels)} channels, "
              f"{result.channels_per_minute:.1f} channels/min)")
    if result.status == "interrupted":  # always said (not a log line --quiet hides); SIGTERM exits 143
        print(f"preimage atlas: interrupted; {args.out} holds the {len(result.channels)} channel(s) visualized "
              "before the stop", file=sys.stderr)
        return 130
    return 0
