"""Deep-layer inversion recipes on the embedded efficientnet_lite0, judged by another network.

Every reconstruction is scored by feature error, PSNR, SSIM, TV ratio and cross-model recognition:
efficientnet_lite2 (the judge) classifies the reconstruction and the original photo
(:func:`preimage.metrics.judge_recognition`: top-1 agreement, rank of the original's class).

    # 1. screening: every candidate recipe, few photos/stages, fewer steps
    python benchmarks/invert_deep.py screen --photos chelsea --stages blocks.5 conv_head --steps 300 --jobs 2
    #    ... with every 50th step's image judged too (how the verdicts move during a run)
    python benchmarks/invert_deep.py screen --recipes before --photos chelsea --stages conv_head --frames 50
    # 2. the table: today's default ("before") vs the default preset ("default"), every stage and photo
    python benchmarks/invert_deep.py table --jobs 2
    # 3. tabulate raw rows of (possibly partial) runs together, redraw the layer grids
    python benchmarks/invert_deep.py summary benchmarks/results/invert_deep_table*.jsonl --table --grid chelsea coffee
    # 4. seconds per step of both recipes (or --recipes before and presets) at the deep stages,
    #    interleaved in one process
    python benchmarks/invert_deep.py speed --steps 8 --rounds 3
    # 5. pre-images side by side with lite2's verdicts (docs/images/invert_deep_compare.png)
    python benchmarks/invert_deep.py compare benchmarks/results/invert_deep_screen_{learned,fin_prior2}.jsonl \
        --recipes pyr_tv2_learned=default pyr_tv2_jit_all_fin4_p10=recognisable --stages conv_head
    # 6. the trade-off: every recipe run in full on the same photos at one stage, the judge's verdicts
    #    against lite0's feature error (docs/images/invert_deep_tradeoff.png)
    python benchmarks/invert_deep.py tradeoff benchmarks/results/invert_deep_*.jsonl --stages conv_head \
        --photos chelsea coffee astronaut rocket camera clock grass retina

``before`` is the default preset as it was before the deep-layer recipe (``deep={}``: the same
settings at every depth). Writes benchmarks/results/invert_deep_<mode>.{json,md}; ``table`` also
redraws docs/images/layers_<photo>.png (original, then the default preset at every stage) for the
first two photos. Each inversion runs on one thread.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from invert_quality import COLS as _COLS, LABEL as _LABEL, PAD as _PAD, TILE as _TILE, draw_layers

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
STAGES = [f"blocks.{i}" for i in range(7)] + ["conv_head"]
DEEP = ["blocks.5", "blocks.6", "conv_head"]
JUDGE = "efficientnet_lite2"

#: candidate recipes for deep layers, as overrides of the default preset (screening)
def _jit_fin(budget: float, lr: float = 0.0015, priors: float | bool = 1.0, **extra) -> dict:
    """The pyramid jittered for all of 600 steps, then 100 steps of Adam at ``lr`` within ``budget`` 8-bit
    levels, with the priors scaled by ``priors`` in the finish; ``extra`` settings on top."""
    return {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "jitter_until": 1.0, "steps": 700,
            "finish_steps": 100, "finish_optimizer": "adam", "finish_lr": lr, "finish_budget": budget,
            "finish_priors": priors, **extra}


CANDIDATES: dict[str, dict] = {
    "before": {"deep": {}},
    "before_seed1": {"deep": {}, "seed": 1},  # free pixels with another seed: the spread of today's figures
    "tv_ramp": {"deep": {}, "tv_end": 0.1},
    "coarse": {"deep": {}, "coarse": 4, "coarse_until": 0.3},
    "fourier": {"deep": {}, "param": "fourier", "lr": 0.05, "lr_stride": 0, "init_scale": 0.01},
    "fourier_ramp": {"deep": {}, "param": "fourier", "lr": 0.05, "lr_stride": 0, "init_scale": 0.01,
                     "tv_end": 0.1},
    # second round (after the first showed Fourier recognised but over-contrasted)
    "stats": {"deep": {}, "color_weight": 0.05},
    "fourier_stats": {"deep": {}, "param": "fourier", "lr": 0.05, "lr_stride": 0, "init_scale": 0.01,
                      "color_weight": 0.05},
    "fourier_stats_slow": {"deep": {}, "param": "fourier", "lr": 0.02, "lr_stride": 0, "init_scale": 0.01,
                           "color_weight": 0.05},
    # third round: detail and geometry (lower TV, slower or flatter spectra, a Laplacian pyramid,
    # transformation robustness: jitter 8 px, zoom ±10 %, rotation ±5°)
    "px_tv": {"deep": {}, "lambda_tv": 0.1},
    "px_rob": {"deep": {}, "jitter": 8, "jitter_stride": 4, "scale_jitter": 0.1, "rotate": 5},
    "px_tv_rob": {"deep": {}, "lambda_tv": 0.1, "jitter": 8, "jitter_stride": 4, "scale_jitter": 0.1, "rotate": 5},
    "px_tv_stats": {"deep": {}, "lambda_tv": 0.1, "color_weight": 0.05},
    "pyr": {"deep": {}, "param": "pyramid"},
    "pyr_tv": {"deep": {}, "param": "pyramid", "lambda_tv": 0.1},
    "pyr_tv_rob": {"deep": {}, "param": "pyramid", "lambda_tv": 0.1, "jitter": 8, "jitter_stride": 4,
                   "scale_jitter": 0.1, "rotate": 5},
    # fourth round: the pyramid with a middle TV weight, and with the colour-statistics prior
    "pyr_tv2": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2},
    "pyr_tv2_stats": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "color_weight": 0.05},
    "pyr_dec": {"deep": {}, "param": "pyramid", "decorrelate": True},
    "pyr_dec_tv2": {"deep": {}, "param": "pyramid", "decorrelate": True, "lambda_tv": 0.2},
    # fifth round: colour noise is what the eye and PSNR object to; weigh the TV of colour over luminance
    "pyr_tv2_chroma4": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "tv_chroma": 4.0},
    "pyr_tv2_chroma16": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "tv_chroma": 16.0},
    "pyr_tv2_chroma64": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "tv_chroma": 64.0},
    # the deep image prior (Ulyanov et al. 2018): the weights of an untrained encoder-decoder, Adam 0.01
    "dip": {"deep": {}, "param": "deep_prior", "lr": 0.01, "lr_stride": 0, "lambda_tv": 0.2},
    "dip_tv0": {"deep": {}, "param": "deep_prior", "lr": 0.01, "lr_stride": 0, "lambda_tv": 0.0},
    # sixth round: recognition by another network (transformation robustness, ImageNet's colour statistics)
    "pyr_tv2_rob": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "jitter": 8, "jitter_stride": 4,
                    "scale_jitter": 0.1, "rotate": 5},
    "pyr_tv2_rob_stats": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "jitter": 8, "jitter_stride": 4,
                          "scale_jitter": 0.1, "rotate": 5, "color_weight": 0.05},
    # seventh round: a saturation prior (grey photos' pre-images take on false colour)
    "pyr_tv2_sat1": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "saturation": 1.0},
    "pyr_tv2_sat3": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "saturation": 3.0},
    # eighth round: fewer pyramid levels (the coarsest ones carry the false colour casts)
    "pyr_tv2_l4": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "pyramid_levels": 4},
    "pyr_tv2_l5": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "pyramid_levels": 5},
    # ninth round: the batch-norm statistics prior (the network's own training statistics at every depth)
    "pyr_tv2_bn03": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "bn_weight": 0.03},
    "pyr_tv2_bn1": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "bn_weight": 0.1},
    "pyr_tv2_bn3": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "bn_weight": 0.3},
    # tenth round: a learned colour start (preimage.starts, fitted on Debian's wallpaper photos)
    "pyr_tv2_learned": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned"},
    "pyr_tv15_learned": {"deep": {}, "param": "pyramid", "lambda_tv": 0.15, "init": "learned"},
    "pyr_tv3_learned": {"deep": {}, "param": "pyramid", "lambda_tv": 0.3, "init": "learned"},
    # the default with another seed (the jitter's draws): how far one seed's numbers are from another's
    "pyr_tv2_learned_seed1": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "seed": 1},
    "pyr_tv2_learned_seed2": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "seed": 2},
    "pyr_tv2_learned_seed3": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "seed": 3},
    "pyr_tv2_anchor05": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "anchor": 0.5},
    "pyr_tv2_anchor2": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "anchor": 2.0},
    # eleventh round: agreement with a second network (objectives.agreement: efficientnet_lite1 pulled
    # towards lite0's class distribution for the photo)
    "pyr_tv2_agree01": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "agree": 0.1},
    "pyr_tv2_agree03": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "agree": 0.3},
    # twelfth round: augmentation ensembling (Ghiasi et al. 2022): 4 copies per step in the jitter phase
    "pyr_tv2_ens4": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "copies": 4, "noise": 0.2},
    "pyr_tv2_ens4_shift": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "copies": 4,
                           "noise": 0.2, "color_shift": 0.1},
    "pyr_tv2_ens4_all": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "copies": 4,
                         "noise": 0.2, "jitter_until": 1.0},
    # thirteenth round: the deep recipe one stage earlier (blocks.4, stride 16), from a map fitted there
    # (python benchmarks/colour_start.py fit --stages blocks.4 --out benchmarks/results/colour_starts_blocks4.pt)
    "pyr_tv2_map4": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2,
                     "init": str(RESULTS / "colour_starts_blocks4.pt")},
    # fourteenth round: the default held grey (a strong saturation prior), for photos that are grey
    "pyr_tv2_learned_sat10": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "saturation": 10.0},
    # fifteenth round: the Fourier image (decorrelated colour, 1/f spectrum) from the learned colour start
    "fourier_learned": {"deep": {}, "param": "fourier", "lr": 0.05, "lr_stride": 0, "init": "learned"},
    "fourier_stats_learned": {"deep": {}, "param": "fourier", "lr": 0.05, "lr_stride": 0, "init": "learned",
                              "color_weight": 0.05},
    "fourier_learned_lr02": {"deep": {}, "param": "fourier", "lr": 0.02, "lr_stride": 0, "init": "learned"},
    "fourier_learned_d075": {"deep": {}, "param": "fourier", "lr": 0.05, "lr_stride": 0, "init": "learned",
                             "fourier_decay": 0.75},
    "fourier_learned_tv2": {"deep": {}, "param": "fourier", "lr": 0.05, "lr_stride": 0, "init": "learned",
                            "lambda_tv": 0.2},
    "fourier_flat": {"deep": {}, "param": "fourier", "lr": 0.05, "lr_stride": 0, "init_scale": 0.01,
                     "color_weight": 0.05, "fourier_decay": 0.5},
    "fourier_tv": {"deep": {}, "param": "fourier", "lr": 0.05, "lr_stride": 0, "init_scale": 0.01,
                   "color_weight": 0.05, "lambda_tv": 0.1},
    # sixteenth round: pre-images as transferable as adversarial examples are made: ghost networks' skip
    # erosion (each shortcut scaled by U(1 - r, 1 + r) per step) and SGM's skip gradients (the residual
    # branches' gradient scaled by γ), in the jitter phase or for the whole run (preimage.perturb)
    "pyr_tv2_erode1": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "erosion": 0.1},
    "pyr_tv2_erode2": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "erosion": 0.2},
    "pyr_tv2_sgm05": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "skip_grad": 0.5},
    "pyr_tv2_sgm02_all": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "skip_grad": 0.2,
                          "perturb_until": 1.0},
    # seventeenth round: the jitter for the whole run (the restart closest to the features is the one lite2
    # recognises least: does a pre-image that must match the features under shifts to the end transfer better?)
    "pyr_tv2_jit_all": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "jitter_until": 1.0},
    "pyr_tv2_jit09": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "jitter_until": 0.9},
    "pyr_tv2_jit08": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "jitter_until": 0.8},
    # eighteenth round: jitter to the end with a tighter fit: a smaller jitter, twice the TV weight, twice
    # the steps
    "pyr_tv2_jit_all_j2": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "jitter_until": 1.0,
                           "jitter": 2},
    "pyr_tv2_jit_all_j1": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "jitter_until": 1.0,
                           "jitter": 1},
    "pyr_tv2_jit_all_tv4": {"deep": {}, "param": "pyramid", "lambda_tv": 0.4, "init": "learned", "jitter_until": 1.0},
    "pyr_tv2_jit_all_1200": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "jitter_until": 1.0,
                             "steps": 1200, "decay_steps": (960,)},
    # ... or a clean finish by a second optimizer after jitter to the end (the last 50 steps by L-BFGS, or
    # the last 100 by Adam at the deep stride's full rate)
    "pyr_tv2_jit_fin_lbfgs": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "jitter_until": 1.0,
                              "finish_steps": 50, "finish_optimizer": "lbfgs", "finish_lr": 1.0},
    "pyr_tv2_jit_fin_adam": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "jitter_until": 1.0,
                             "finish_steps": 100, "finish_optimizer": "adam", "finish_lr": 0.0125},
    # ... and the other way: more transformation robustness to the end (zoom ±5 %, rotation ±5°)
    "pyr_tv2_jit_all_rob": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "jitter_until": 1.0,
                            "scale_jitter": 0.05, "rotate": 5.0},
    # ... or with the agreement prior (lite1 pulled towards lite0's class distribution for the photo)
    "pyr_tv2_jit_all_agree01": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned",
                                "jitter_until": 1.0, "agree": 0.1},
    # nineteenth round: jitter to the end (600 steps as before), then 100 steps without jitter (Adam) that
    # may move each pixel by at most 4 (or 8) 8-bit levels: is the fit to one alignment of the grid bought
    # with changes too small to see, and does lite2's verdict survive them?
    "pyr_tv2_jit_all_fin4": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "jitter_until": 1.0,
                             "steps": 700, "finish_steps": 100, "finish_optimizer": "adam", "finish_lr": 0.0015,
                             "finish_budget": 4.0},
    "pyr_tv2_jit_all_fin8": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "jitter_until": 1.0,
                             "steps": 700, "finish_steps": 100, "finish_optimizer": "adam", "finish_lr": 0.003,
                             "finish_budget": 8.0},
    # ... a longer 4-level finish (200 steps), and a 16-level one
    "pyr_tv2_jit_all_fin4_200": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned",
                                 "jitter_until": 1.0, "steps": 800, "finish_steps": 200, "finish_optimizer": "adam",
                                 "finish_lr": 0.0015, "finish_budget": 4.0},
    # ... and a 4-level finish without the priors (the ball the only constraint)
    "pyr_tv2_jit_all_fin4_bare": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned",
                                  "jitter_until": 1.0, "steps": 700, "finish_steps": 100, "finish_optimizer": "adam",
                                  "finish_lr": 0.0015, "finish_budget": 4.0, "finish_priors": False},
    # ... and a 4-level finish with the priors weighed less (a quarter, a half), between the two above
    "pyr_tv2_jit_all_fin4_p25": _jit_fin(4.0, priors=0.25),
    "pyr_tv2_jit_all_fin4_p50": _jit_fin(4.0, priors=0.5),
    # ... and the coarse colours pulled towards the learned start all along (for PSNR), bare finish
    "pyr_tv2_jit_all_anchor2_fin4_bare": _jit_fin(4.0, priors=False, anchor=2.0),
    # ... a tenth (within 4 levels: the recognisable preset; within 8); and the colour anchor (2 or 8)
    # with a quarter
    "pyr_tv2_jit_all_fin4_p10": _jit_fin(4.0, priors=0.1),
    "pyr_tv2_jit_all_fin8_p10": _jit_fin(8.0, lr=0.003, priors=0.1),
    "pyr_tv2_jit_all_fin4_p10_seed1": _jit_fin(4.0, priors=0.1, seed=1),
    "pyr_tv2_jit_all_fin4_p10_seed2": _jit_fin(4.0, priors=0.1, seed=2),
    "pyr_tv2_jit_all_fin4_p10_seed3": _jit_fin(4.0, priors=0.1, seed=3),
    "pyr_tv2_jit_all_anchor2_fin4_p25": _jit_fin(4.0, priors=0.25, anchor=2.0),
    "pyr_tv2_jit_all_anchor8_fin4_p25": _jit_fin(4.0, priors=0.25, anchor=8.0),
    # ... with a wider jitter (±8 px: the cap at stride 32 raised from s/8 to s/4), or with SGM's skip
    # gradients (γ 0.5) before the finish
    "pyr_tv2_jit8_all_fin4_p10": _jit_fin(4.0, priors=0.1, jitter=8, jitter_stride=4.0),
    "pyr_tv2_jit_all_sgm05_fin4_p10": _jit_fin(4.0, priors=0.1, skip_grad=0.5, perturb_until=6 / 7),
    # ... and free pixels (the default before; better recognised than the pyramid at blocks.5) jittered to
    # the end, without and with the finish of the recognisable preset
    "px_jit_all": {"deep": {}, "jitter_until": 1.0},
    "px_jit_all_fin4_p10": {k: v for k, v in _jit_fin(4.0, priors=0.1).items()
                            if k not in ("param", "lambda_tv", "init")},
    "pyr_tv2_jit_all_fin16": {"deep": {}, "param": "pyramid", "lambda_tv": 0.2, "init": "learned", "jitter_until": 1.0,
                              "steps": 700, "finish_steps": 100, "finish_optimizer": "adam", "finish_lr": 0.006,
                              "finish_budget": 16.0},
}

_CACHE: dict = {}


def _models():
    import preimage

    if "model" not in _CACHE:
        _CACHE["model"] = preimage.load_model("efficientnet_lite0")
        _CACHE["judge"] = preimage.load_model(JUDGE)
    return _CACHE["model"], _CACHE["judge"]


def _partner(name: str):
    import preimage

    if name not in _CACHE:
        _CACHE[name] = preimage.load_model(name)
    return _CACHE[name]


def one(job: tuple[str, dict, str, str, int | None, str, int]) -> dict:
    import torch

    torch.set_num_threads(1)
    from preimage.images import save_image
    from preimage.tasks.invert import config_for, invert

    name, overrides, photo, stage, steps, mode, frames = job
    model, judge = _models()
    over = dict(overrides)
    if steps:  # a shorter run: the decay and the jitter phase keep their place in it
        over.update(steps=steps, decay_steps=(int(round(steps * 0.8)),))
    cfg = config_for("default", **over)
    t0 = time.perf_counter()
    partner = _partner(cfg.agree_model) if cfg.agree else None
    res = invert(model, f"sample:{photo}", layers=[stage], config=cfg, judge=judge, partner=partner,
                 frame_every=frames)
    seconds = time.perf_counter() - t0
    m = res.metrics[0]
    out = RESULTS / f"invert_deep_{mode}" / name
    out.mkdir(parents=True, exist_ok=True)
    save_image(res.image[0], out / f"{photo}_{stage}.png")
    j = m["judge"]
    return {"recipe": name, "photo": photo, "stage": stage, "status": res.status, "steps": res.result.steps,
            "deep_recipe": res.effective["deep_recipe"], "feature_error": m["feature_error"][stage],
            "feature_error_moved": m["feature_error_moved"][stage], "photo_error_moved": m["photo_error_moved"][stage],
            "psnr": m["psnr"], "ssim": m["ssim"], "tv_ratio": m["tv_ratio"], "judge_agrees": j["agrees"],
            "judge_rank": j["rank"], "judge_p": j["p_original_class"], "judge_original": j["original_class"],
            "judge_class": j["class"], "seconds": seconds,
            **({"frames": trajectory(model, judge, res, stage, frames)} if frames else {})}


def trajectory(model, judge, res, stage: str, every: int) -> list[dict]:
    """The metrics of the frames an inversion kept every ``every`` steps (its last one included):
    how feature error, PSNR, TV ratio and the judge's verdict move as the optimization goes on."""
    import torch

    from preimage import metrics as M
    from preimage.layers import FeatureExtractor

    ref = res.reference.to(model.device)
    extractor = FeatureExtractor(model, [stage])
    out = []
    with torch.no_grad():
        target = extractor(model.normalize(ref))[stage]
        for i, frame in enumerate(res.result.frames):
            x = frame.clamp(0, 1).to(model.device)
            judged = M.judge_recognition(judge, x, ref)
            out.append({"step": min((i + 1) * every, res.result.steps),
                        "feature_error": float(M.feature_error(extractor(model.normalize(x))[stage], target)[0]),
                        "psnr": float(M.psnr(x, ref)[0]), "tv_ratio": float(M.tv_ratio(x, ref)[0]),
                        "judge_agrees": bool(judged["agrees"][0]), "judge_rank": int(judged["rank"][0])})
    return out


def summarize_frames(rows: list[dict], recipes: list[str], stages: list[str]) -> list[str]:
    """Per stage, recipe and kept step, over photos: the judge's verdicts and the medians of the frames."""
    steps = ["| stage | recipe | step | judge top-1 agrees | judge top-5 | median PSNR dB | median TV ratio | "
             "median feature error |", "|---|---|---|---|---|---|---|---|"]
    halves = ["| stage | recipe | judge agrees at some kept step of the second half | at every one | "
              "at the last |", "|---|---|---|---|---|"]
    for s in stages:
        for r in recipes:
            sel = [x["frames"] for x in rows if x["stage"] == s and x["recipe"] == r and x.get("frames")]
            if not sel:
                continue
            for k in range(min(map(len, sel))):
                at = [f[k] for f in sel]
                med = lambda key: statistics.median(f[key] for f in at)  # noqa: E731
                steps.append(f"| {s} | {r} | {at[0]['step']} | {sum(f['judge_agrees'] for f in at)}/{len(at)} | "
                             f"{sum(f['judge_rank'] <= 5 for f in at)}/{len(at)} | {med('psnr'):.1f} | "
                             f"{med('tv_ratio'):.2f} | {med('feature_error'):.3f} |")
            late = [[f["judge_agrees"] for f in fr if 2 * f["step"] >= fr[-1]["step"]] for fr in sel]
            halves.append(f"| {s} | {r} | {sum(map(any, late))}/{len(sel)} | {sum(map(all, late))}/{len(sel)} | "
                          f"{sum(v[-1] for v in late)}/{len(sel)} |")
    return steps + [""] + halves


def shallow_stages(stages: list[str]) -> list[str]:
    """The stages where the default preset's settings are today's default (below its deep stride)."""
    import preimage
    from preimage.tasks.invert import config_for, layer_stride, recipe_for

    model, cfg = preimage.load_model("efficientnet_lite0"), config_for("default")
    return [s for s in stages if recipe_for(cfg, layer_stride(model, [s])) is cfg]


def summarize(rows: list[dict], recipes: list[str], stages: list[str]) -> list[str]:
    """Per stage and recipe, over photos: agreement count (top-1, and the photo's class in the judge's
    top 5), median rank, PSNR, SSIM, TV ratio, feature error, the error moved by one pixel (rows that
    hold it; "—" otherwise) and seconds."""
    lines = ["| stage | recipe | judge top-1 agrees | judge top-5 | median rank | median PSNR dB | median SSIM | "
             "median TV ratio | median feature error | median error moved 1 px | median s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in stages:
        for r in recipes:
            sel = [x for x in rows if x["stage"] == s and x["recipe"] == r]
            if not sel:
                continue
            med = lambda k: statistics.median(x[k] for x in sel)  # noqa: E731
            moved = f"{med('feature_error_moved'):.3f}" if all("feature_error_moved" in x for x in sel) else "—"
            lines.append(f"| {s} | {r} | {sum(x['judge_agrees'] for x in sel)}/{len(sel)} | "
                         f"{sum(x['judge_rank'] <= 5 for x in sel)}/{len(sel)} | {med('judge_rank'):g} | "
                         f"{med('psnr'):.1f} | {med('ssim'):.3f} | {med('tv_ratio'):.2f} | "
                         f"{med('feature_error'):.3f} | {moved} | {med('seconds'):.0f} |")
    return lines


def per_photo(rows: list[dict], recipes: list[str], stages: list[str], photos: list[str]) -> list[str]:
    lines = []
    for ph in photos:
        lines += [f"**{ph}** (judge's class for the photo: {next((x['judge_original'] for x in rows if x['photo'] == ph), '?')})",
                  "", "| stage | " + " | ".join(f"{r}: agrees, rank, PSNR, SSIM, TV, error" for r in recipes) + " |",
                  "|---|" + "---|" * len(recipes)]
        for s in stages:
            cells = []
            for r in recipes:
                x = next((x for x in rows if (x["photo"], x["stage"], x["recipe"]) == (ph, s, r)), None)
                cells.append("—" if x is None else
                             f"{'yes' if x['judge_agrees'] else 'no'}, {x['judge_rank']}, {x['psnr']:.1f}, "
                             f"{x['ssim']:.3f}, {x['tv_ratio']:.2f}, {x['feature_error']:.3f}")
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def carry_tiles(photo: str, folder: Path, recipe: str, stages: list[str]) -> list[str]:
    """Crop the tiles of ``stages`` whose reconstruction is missing from ``folder/recipe`` out of the
    current figure docs/images/layers_PHOTO.png (drawn by :func:`grid`, the original first, then
    every stage): for stages whose settings have not changed, the same seed gives the same image, so
    the figure can be redrawn without rerunning them. Returns the stages carried over."""
    from PIL import Image

    old = ROOT / "docs" / "images" / f"layers_{photo}.png"
    if not old.exists():
        return []
    fig, done = Image.open(old).convert("RGB"), []
    (folder / recipe).mkdir(parents=True, exist_ok=True)
    for s in stages:
        path = folder / recipe / f"{photo}_{s}.png"
        i = 1 + STAGES.index(s)
        x, y = _PAD + (i % _COLS) * (_TILE + _PAD), _PAD + (i // _COLS) * (_TILE + _LABEL + _PAD) + _LABEL
        if not path.exists() and y + _TILE <= fig.height:
            fig.crop((x, y, x + _TILE, y + _TILE)).save(path)
            done.append(s)
    return done


def grid(photo: str, folder: Path, recipe: str) -> None:
    draw_layers(photo, folder / recipe)  # the same figure as the quality benchmark's


def compare(files: list[Path], photos: list[str], stage: str, recipes: list[str], labels: list[str],
            tag: str = "") -> None:
    """docs/images/invert_deep_compare{tag}.png: one row per photo, the photo and then each recipe's
    pre-image at ``stage`` (from a screen's images), each captioned with lite2's verdict and lite0's
    feature error from the raw rows in ``files``."""
    from PIL import Image, ImageDraw

    from preimage.images import load_tensor, to_pil

    rows = {(r["recipe"], r["photo"], r["stage"]): r for f in files for r in map(json.loads, f.read_text().splitlines())
            if r.get("status") == "done"}
    tile, pad, label = 160, 6, 30
    canvas = Image.new("RGB", ((1 + len(recipes)) * (tile + pad) + pad,
                               label + len(photos) * (tile + label + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for j, name in enumerate(["photo", *labels]):
        draw.text((pad + j * (tile + pad) + 2, 8), name, fill="black")
    for i, photo in enumerate(photos):
        y = label + pad + i * (tile + label + pad)
        canvas.paste(to_pil(load_tensor(f"sample:{photo}", tile)), (pad, y))
        first = rows.get((recipes[0], photo, stage), {})
        draw.text((pad + 2, y + tile + 3), f"lite2: {first.get('judge_original', '?')}", fill="black")
        for j, recipe in enumerate(recipes, start=1):
            x, row = pad + j * (tile + pad), rows.get((recipe, photo, stage))
            path = RESULTS / "invert_deep_screen" / recipe / f"{photo}_{stage}.png"
            if row is None or not path.exists():
                raise SystemExit(f"compare: no {recipe} result for {photo} at {stage} (run its screen first)")
            canvas.paste(Image.open(path).convert("RGB").resize((tile, tile)), (x, y))
            verdict = "agrees" if row["judge_agrees"] else f"no (rank {row['judge_rank']})"
            draw.text((x + 2, y + tile + 3), f"lite2 {verdict}", fill="black")
            draw.text((x + 2, y + tile + 15), f"error {row['feature_error']:.3f}  PSNR {row['psnr']:.1f}", fill="black")
    dest = ROOT / "docs" / "images" / f"invert_deep_compare{tag}.png"
    canvas.save(dest)
    print(f"wrote {dest}")


def speed(stages: list[str], steps: int, rounds: int, tag: str = "",
          recipes: tuple[str, ...] = ("before", "default")) -> None:
    """Seconds per step and per run of each recipe (``before``: free pixels; otherwise an inversion preset)
    at each stage, in one process on one thread, the recipes interleaved round by round (so all see the
    same machine load); median of rounds. Ratios are against the first recipe."""
    import torch

    torch.set_num_threads(1)
    from preimage.tasks.invert import invert

    import preimage

    model = preimage.load_model("efficientnet_lite0")  # no judge: only the steps are timed
    invert(model, "sample:chelsea", layers=[stages[0]], steps=2, deep={})  # warm-up
    times: dict = {(s, r): [] for s in stages for r in recipes}
    whole: dict = {(s, r): [] for s in stages for r in recipes}
    for _ in range(rounds):
        for s in stages:
            for r in recipes:
                over = {**(CANDIDATES["before"] if r == "before" else {"preset": r}), "steps": steps,
                        "decay_steps": (int(round(steps * 0.8)),)}
                t0 = time.perf_counter()
                res = invert(model, "sample:chelsea", layers=[s], **over)
                whole[(s, r)].append(time.perf_counter() - t0)
                times[(s, r)].append(res.result.seconds / res.result.steps)
    first = recipes[0]
    head = ["stage", *(f"{r} s/step" for r in recipes), *(f"ratio {r}" for r in recipes[1:]),
            *(f"{r} s/run" for r in recipes), *(f"ratio {r}" for r in recipes[1:])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = []
    for s in stages:
        step = {r: statistics.median(times[(s, r)]) for r in recipes}
        run = {r: statistics.median(whole[(s, r)]) for r in recipes}
        rows.append({"stage": s, **{r: step[r] for r in recipes}, "all": {r: times[(s, r)] for r in recipes},
                     **{f"run_{r}": run[r] for r in recipes}, "runs": {r: whole[(s, r)] for r in recipes}})
        cells = [s, *(f"{step[r] * 1000:.1f} ms" for r in recipes), *(f"{step[r] / step[first]:.2f}" for r in recipes[1:]),
                 *(f"{run[r]:.1f} s" for r in recipes), *(f"{run[r] / run[first]:.2f}" for r in recipes[1:])]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"chelsea, {steps} steps per run (s/run: the whole call, start and metrics included), "
                 f"median of {rounds} rounds, one thread.")
    (RESULTS / f"invert_deep_speed{tag}.json").write_text(json.dumps({"steps": steps, "rounds": rounds,
                                                                      "rows": rows}, indent=2) + "\n")
    (RESULTS / f"invert_deep_speed{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


#: the families of the trade-off figure: recipe name -> (family, short label)
FAMILIES = [("free pixels", lambda r: r.startswith("before")),
            ("the default (seeds 0-3)", lambda r: r.startswith("pyr_tv2_learned") and r[len("pyr_tv2_learned"):] in
             ("", "_seed1", "_seed2", "_seed3")),
            ("jitter to the end, then a finish of 4-16 levels", lambda r: r.startswith("pyr_tv2_jit_all") and "_fin" in r),
            ("jitter to the end or late", lambda r: "_jit" in r),
            ("other priors and perturbations", lambda r: True)]


def tradeoff(files: list[Path], photos: list[str] | None, stage: str, tag: str = "") -> None:
    """lite2's verdicts against lite0's median feature error for every recipe run in full (the preset's
    steps or more) on every one of ``photos`` at ``stage``: one point per recipe and step count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    photos = photos or ["chelsea", "coffee", "astronaut", "rocket", "camera", "clock", "grass", "retina"]
    runs: dict[tuple[str, int, str], dict] = {}
    for f in files:
        for ln in f.read_text().splitlines():
            r = json.loads(ln) if ln.strip() else None
            if r and r["stage"] == stage and r["photo"] in photos and not r.get("frames") and r.get("steps", 0) >= 600:
                runs[(r["recipe"], r["steps"], r["photo"])] = r  # a rerun counts once
    points = []
    for recipe, steps in dict.fromkeys((k[0], k[1]) for k in runs):
        rows = [runs.get((recipe, steps, p)) for p in photos]
        if all(rows) and all(r["status"] == "done" for r in rows):
            family = next(name for name, test in FAMILIES if test(recipe))
            points.append({"recipe": recipe, "steps": steps, "family": family,
                           "agrees": sum(r["judge_agrees"] for r in rows),
                           "feature_error": statistics.median(r["feature_error"] for r in rows),
                           "psnr": statistics.median(r["psnr"] for r in rows),
                           "tv_ratio": statistics.median(r["tv_ratio"] for r in rows)})
    points.sort(key=lambda q: (q["feature_error"], -q["agrees"]))
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=110)
    for (name, _), marker in zip(FAMILIES, "sD*o^"):
        pts = [q for q in points if q["family"] == name]
        ax.scatter([q["feature_error"] for q in pts], [q["agrees"] for q in pts], marker=marker, s=40, label=name,
                   alpha=0.8)
    base = statistics.median(q["feature_error"] for q in points if q["recipe"] == "before") if any(
        q["recipe"] == "before" for q in points) else None
    if base:
        ax.axvline(1.1 * base, color="grey", ls="--", lw=1)
        ax.text(1.1 * base, len(photos) + 0.15, " 1.1× free pixels' error", fontsize=8, color="grey", va="bottom")
    ceiling = RESULTS / "judge_ceiling_photo.json"  # benchmarks/judge_ceiling.py photo
    shifted = [r for r in json.loads(ceiling.read_text())["rows"] if r["variant"] == "shifted 1 px"] \
        if ceiling.is_file() else []
    if shifted:
        ax.axvline(shifted[0][stage], color="grey", ls=":", lw=1)
        ax.text(shifted[0][stage], len(photos) + 0.15, " the photo itself shifted by 1 px (median of 21)", fontsize=8,
                color="grey", va="bottom")
    ax.set_xlabel(f"lite0's median feature error at {stage} (lower: a closer fit)")
    ax.set_ylabel(f"photos lite2 gives the photo's class (of {len(photos)})")
    ax.set_ylim(-0.3, len(photos) + 0.8)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"Every recipe run in full at {stage}: recognition against fit", fontsize=10)
    fig.tight_layout()
    image = ROOT / "docs" / "images" / f"invert_deep_tradeoff{tag}.png"
    fig.savefig(image)
    plt.close(fig)
    lines = ["| recipe | steps | family | judge top-1 agrees | median feature error | median PSNR dB | median TV ratio |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {q['recipe']} | {q['steps']} | {q['family']} | {q['agrees']}/{len(photos)} | {q['feature_error']:.3f} | "
              f"{q['psnr']:.1f} | {q['tv_ratio']:.2f} |" for q in points]
    lines += ["", f"{len(points)} recipes run in full on {', '.join(photos)} at {stage}; figure: "
              f"{image.relative_to(ROOT)}."]
    (RESULTS / f"invert_deep_tradeoff{tag}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"invert_deep_tradeoff{tag}.json").write_text(json.dumps({"stage": stage, "photos": photos,
                                                                          "points": points}, indent=1) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["screen", "table", "summary", "speed", "tradeoff", "compare"])
    ap.add_argument("files", nargs="*", help="summary, tradeoff: raw .jsonl results to tabulate together")
    ap.add_argument("--recipes", nargs="+", default=None,
                    help="screen: candidates (default: all); table: before and/or default (default: both); "
                         "summary: only these (after --rename); speed: before and/or inversion presets "
                         "(default: before default)")
    ap.add_argument("--rounds", type=int, default=3, help="speed: rounds (the median is reported)")
    ap.add_argument("--photos", nargs="+", default=None)
    ap.add_argument("--stages", nargs="+", default=None)
    ap.add_argument("--steps", type=int, default=None, help="shorter runs (default: the preset's)")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--frames", type=int, default=0,
                    help="screen: also judge the image every N steps (the trajectory table)")
    ap.add_argument("--tag", default="", help="suffix of the results files")
    ap.add_argument("--table", action="store_true", help="summary: fill 'before' from 'default' where only it ran")
    ap.add_argument("--grid", nargs="*", default=[], help="summary: redraw docs/images/layers_PHOTO.png")
    ap.add_argument("--rename", nargs="*", default=[], metavar="OLD=NEW",
                    help="summary: count rows of recipe OLD as NEW (a candidate run under another name); "
                         "FILE:OLD=NEW only those of the results file FILE (its name)")
    ap.add_argument("--grid-dir", default="invert_deep_table/default",
                    help="summary with --grid: the folder under benchmarks/results with the pre-images to draw")
    ap.add_argument("--carry", nargs="*", default=[],
                    help="summary with --grid: stages whose tiles come from the current figure (unchanged settings)")
    args = ap.parse_args()
    if args.mode == "summary":  # tabulate raw rows kept by earlier (possibly stopped) runs
        rows = [{**json.loads(ln), "file": Path(f).name} for f in args.files
                for ln in Path(f).read_text().splitlines() if ln.strip()]
        names = dict(pair.split("=", 1) for pair in args.rename)  # e.g. pyr_tv2=default: the same settings
        rows = [{**r, "recipe": names.get(f"{r['file']}:{r['recipe']}", names.get(r["recipe"], r["recipe"]))}
                for r in rows]
        rows = list({(r["recipe"], r["photo"], r["stage"]): r for r in rows}.values())  # a rerun counts once
        if args.recipes:  # only these recipes (after renaming)
            rows = [r for r in rows if r["recipe"] in args.recipes]
        rows = [r for r in rows if (not args.photos or r["photo"] in args.photos)
                and (not args.stages or r["stage"] in args.stages)]
        if args.table:  # stages run only with the default preset (its settings are today's there)
            have = {(r["photo"], r["stage"]) for r in rows if r["recipe"] == "before"}
            rows += [{**r, "recipe": "before", "same_as_default": True} for r in list(rows)
                     if r["recipe"] == "default" and (r["photo"], r["stage"]) not in have]
        recipes = list(dict.fromkeys(r["recipe"] for r in rows))
        stages = [s for s in STAGES if any(r["stage"] == s for r in rows)]
        photos = list(dict.fromkeys(r["photo"] for r in rows))
        lines = summarize(rows, recipes, stages) + [""] + per_photo(rows, recipes, stages, photos)
        if any(r.get("frames") for r in rows):
            lines += ["Every kept step:", ""] + summarize_frames(rows, recipes, stages) + [""]
        runs = sum(not r.get("same_as_default") for r in rows)
        lines.append(f"{runs} inversions from {', '.join(Path(f).name for f in args.files)}.")
        source = RESULTS / args.grid_dir
        for ph in args.grid:
            carried = carry_tiles(ph, source.parent, source.name, args.carry)
            if carried:
                lines.append(f"{ph}: the tiles of {', '.join(carried)} are carried over from the previous figure.")
            grid(ph, source.parent, source.name)
        (RESULTS / f"invert_deep_summary{args.tag}.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    if args.mode == "tradeoff":
        tradeoff([Path(f) for f in args.files], args.photos, (args.stages or ["conv_head"])[0], args.tag)
        return
    if args.mode == "compare":  # --recipes NAME=LABEL ...
        pairs = [r.split("=", 1) if "=" in r else (r, r) for r in args.recipes or []]
        compare([Path(f) for f in args.files], args.photos or ["chelsea", "coffee", "rocket", "clock"],
                (args.stages or ["conv_head"])[0], [a for a, _ in pairs], [b for _, b in pairs], args.tag)
        return
    if args.mode == "speed":
        speed(args.stages or DEEP, args.steps or 60, args.rounds, args.tag,
              tuple(args.recipes) if args.recipes else ("before", "default"))
        return
    if args.mode == "screen":
        recipes = args.recipes or list(CANDIDATES)
        table = {r: CANDIDATES[r] for r in recipes}
        photos, stages = args.photos or ["chelsea"], args.stages or ["blocks.5", "conv_head"]
        jobs = [(r, table[r], ph, s, args.steps, "screen", args.frames) for r in recipes for ph in photos
                for s in stages]
    else:
        recipes = args.recipes or ["before", "default"]
        photos, stages = args.photos or ["chelsea", "coffee", "astronaut"], args.stages or STAGES
        same = shallow_stages(stages)
        jobs = []
        for ph in photos:
            for s in stages:
                for r in recipes:
                    if r == "before" and s in same:
                        continue  # the default preset is today's default there: one run serves both
                    jobs.append((r, {} if r == "default" else CANDIDATES[r], ph, s, args.steps, "table", 0))
                if "default" not in recipes and s in same:  # one run serves both columns there
                    jobs.append(("default", {}, ph, s, args.steps, "table", 0))
        jobs.sort(key=lambda j: j[3] in same)  # the stages where the recipes differ first
    t0 = time.perf_counter()
    rows = []
    name = f"invert_deep_{args.mode}{args.tag}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(args.jobs) as pool, open(RESULTS / f"{name}.jsonl", "w") as raw:
        for row in pool.map(one, jobs):  # each row is kept as it comes (raw.jsonl), the table at the end
            rows.append(row)
            print(json.dumps(row), file=raw, flush=True)
            print(json.dumps(row), flush=True)
    seconds = time.perf_counter() - t0
    if args.mode == "table":  # stages where both recipes are the same settings: the one run is both
        rows += [{**r, "recipe": "before", "same_as_default": True} for r in list(rows)
                 if r["recipe"] == "default" and r["stage"] in same]
    (RESULTS / f"{name}.json").write_text(json.dumps({"args": vars(args), "rows": rows, "seconds": seconds},
                                                     indent=2) + "\n")
    lines = summarize(rows, recipes, stages) + [""] + per_photo(rows, recipes, stages, photos)
    if args.frames:
        lines += ["Every " + str(args.frames) + " steps:", ""] + summarize_frames(rows, recipes, stages) + [""]
    if args.mode == "table":
        lines.append(f"At {', '.join(same) or 'no stage'} the default preset runs today's settings: one run "
                     "per photo fills both columns.")
    lines.append(f"{len(jobs)} inversions, {args.jobs} jobs of one thread: {seconds:.0f} s.")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.mode == "table" and stages == STAGES:
        for ph in photos[:2]:
            grid(ph, RESULTS / f"invert_deep_{args.mode}", "default")


if __name__ == "__main__":
    main()
