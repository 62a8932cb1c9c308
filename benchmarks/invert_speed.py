"""Speed of the inversion engine against the original script, on the same machine in one run.

    python benchmarks/invert_speed.py [--quick]      # writes benchmarks/results/invert_speed.{json,md}

Measures, interleaving the contenders round by round so that background load hits both alike:
1. time per step at AlexNet conv1, conv2, conv5 (227 px; random-init weights: offline there are no
   AlexNet weights here, and the time of a step does not depend on the weight values) for
   - ``original``: the original loop (benchmarks/original.py: whole network forwarded through a hook,
     weight gradients left on),
   - ``engine``: ``preimage.invert(..., preset="original")`` (same objective and optimizer),
   - ``bare``: a hand-written truncated forward + input-gradient backward + SGD step (no engine),
     with plain autograd and with the engine's polyphase gradient of strided convolutions;
2. batching: engine time per image with 1 and 4 images;
3. time to reach the original's final feature error on the embedded efficientnet_lite0 (chelsea,
   224 px) at the stages where the original converges: original (200 steps) vs the default preset.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from original import run_original  # noqa: E402

import preimage  # noqa: E402
from preimage.images import load_tensor  # noqa: E402
from preimage.fastconv import fast_strided_convs  # noqa: E402
from preimage.layers import FeatureExtractor, resolve_layer  # noqa: E402
from preimage.metrics import feature_error  # noqa: E402
from preimage.tasks.invert import invert  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def engine_step_times(model, ref, layer, steps, preset="original", **kw):
    stamps = []
    res = invert(model, ref, layers=[layer], preset=preset, steps=steps, callbacks=[lambda s: stamps.append(time.perf_counter())], **kw)
    return [b - a for a, b in zip(stamps, stamps[1:])], res


def bare_step_times(model, ref, layer, steps, fast=False):
    """Truncated nn.Sequential forward + input-gradient backward + SGD, written by hand; with ``fast``,
    strided convolutions take the engine's polyphase input gradient (preimage.fastconv)."""
    path = resolve_layer(model, layer)
    top, idx = path.split(".")
    trunk = nn.Sequential(*list(getattr(model.net, top).children())[: int(idx) + 1])
    x0 = model.net_input(model.normalize(ref))  # the engine's memory layout
    with torch.no_grad():
        target = trunk(x0)
    gen = torch.Generator().manual_seed(0)
    x = nn.Parameter(model.net_input(1e-3 * torch.randn(x0.shape, generator=gen)))
    opt = torch.optim.SGD([x], lr=100.0, momentum=0.9)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        opt.zero_grad()
        with fast_strided_convs(list(trunk) if fast else []):
            f = trunk(x)
        loss = (f - target).pow(2).sum() / target.pow(2).sum() + 1e-5 * x.abs().pow(6).sum()
        dx = torch.zeros_like(x)
        dy = torch.zeros_like(x)
        dx[..., :, 1:] = x[..., :, 1:] - x[..., :, :-1]
        dy[..., 1:, :] = x[..., :-1, :] - x[..., 1:, :]
        loss = loss + 1e-5 * (dx.pow(2) + dy.pow(2)).sum()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


def script_net(model):
    """The network as the original script had it: a plain copy in PyTorch's default memory layout
    (load_model gives the engine channels-last weights)."""
    return copy.deepcopy(model.net).to(memory_format=torch.contiguous_format)


def per_step(model, ref, layer, rounds, steps):
    out = {"original": [], "engine": [], "bare": [], "bare_fast": []}
    net = script_net(model)
    for _ in range(rounds):
        _, t, _ = run_original(net, model.normalize(ref), resolve_layer(model, layer), epochs=steps)
        out["original"] += t[2:]
        t, _ = engine_step_times(model, ref, layer, steps)
        out["engine"] += t[2:]
        out["bare"] += bare_step_times(model, ref, layer, steps)[2:]
        out["bare_fast"] += bare_step_times(model, ref, layer, steps, fast=True)[2:]
    return {k: statistics.median(v) for k, v in out.items()}


def time_to_error(model, ref, layer, presets=("default", "fast"), snapshot_every=5):
    """Wall time for the original (200 steps) and the default preset to reach the original's final error."""
    fx = FeatureExtractor(model, [layer])
    with torch.no_grad():
        target = fx(model.normalize(ref))[layer]

    def err(x_pixels):
        with torch.no_grad():
            return float(feature_error(fx(model.normalize(x_pixels.clamp(0, 1)))[layer], target)[0])

    t0 = time.perf_counter()
    x, _, snaps_o = run_original(script_net(model), model.normalize(ref), resolve_layer(model, layer), epochs=200,
                                 snapshot_every=snapshot_every)
    t_orig = time.perf_counter() - t0
    final_orig = err(model.denormalize(x))
    if final_orig != final_orig:
        return {"layer": layer, "original": "diverged"}
    out = {"layer": layer, "original_error": final_orig, "original_seconds": t_orig}
    for preset in presets:
        snaps = []

        def cb(s):
            if s.step % snapshot_every == 0:
                snaps.append((s.step, time.perf_counter(), s.param().detach().clone()))

        t1 = time.perf_counter()
        res = invert(model, ref, layers=[layer], preset=preset, callbacks=[cb])
        total = time.perf_counter() - t1
        reached = next(((step, t - t1) for step, t, img in snaps if err(img) <= final_orig), None)
        out[preset] = {
            "final_error": res.metrics[0]["feature_error"][layer], "seconds": total,
            "reached_at_step": reached[0] if reached else None,
            "seconds_to_reach": reached[1] if reached else None,
            "fraction_of_original_time": (reached[1] / t_orig) if reached else None,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer rounds (for a smoke run)")
    args = ap.parse_args()
    rounds, steps = (1, 8) if args.quick else (3, 20)
    torch.manual_seed(0)
    alex = preimage.load_model("alexnet", weights="none", input_size=227)
    ref_a = load_tensor("sample:chelsea", 227)
    report = {"machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads", "torch": torch.__version__,
              "per_step": {}, "batching": {}, "time_to_error": []}
    for layer in ["conv1", "conv2", "conv5"]:
        r = per_step(alex, ref_a, layer, rounds, steps)
        r["speedup_vs_original"] = r["original"] / r["engine"]
        r["engine_overhead_vs_bare"] = r["engine"] / r["bare_fast"] - 1
        report["per_step"][layer] = r
        print(layer, {k: round(v, 5) for k, v in r.items()}, flush=True)
    refs4 = torch.cat([load_tensor(f"sample:{n}", 227) for n in ["chelsea", "coffee", "astronaut", "rocket"]])
    t1, _ = engine_step_times(alex, ref_a, "conv3", steps)
    t4, _ = engine_step_times(alex, refs4, "conv3", steps)
    report["batching"] = {"conv3_per_image_batch1": statistics.median(t1[2:]),
                          "conv3_per_image_batch4": statistics.median(t4[2:]) / 4}
    print("batching", report["batching"], flush=True)
    eff = preimage.load_model("efficientnet_lite0")
    ref_e = load_tensor("sample:chelsea", 224)
    for layer in (["blocks.1"] if args.quick else ["blocks.0", "blocks.1", "blocks.5"]):
        r = time_to_error(eff, ref_e, layer)
        report["time_to_error"].append(r)
        print("time_to_error", r, flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "invert_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["| layer | original s/step | engine s/step | bare s/step | bare + polyphase s/step | speed-up | engine overhead |",
             "|---|---|---|---|---|---|---|"]
    for layer, r in report["per_step"].items():
        lines.append(f"| {layer} | {r['original']*1e3:.1f} ms | {r['engine']*1e3:.1f} ms | {r['bare']*1e3:.1f} ms | "
                     f"{r['bare_fast']*1e3:.1f} ms | {r['speedup_vs_original']:.2f}x | {r['engine_overhead_vs_bare']*100:+.1f}% |")
    b = report["batching"]
    lines += ["", f"Batching (AlexNet conv3, engine): {b['conv3_per_image_batch1']*1e3:.1f} ms per image alone, "
              f"{b['conv3_per_image_batch4']*1e3:.1f} ms per image in a batch of 4.", "",
              "| efficientnet_lite0 stage | original final error | original wall time | preset | reaches it at | fraction of the original's time | preset's final error |",
              "|---|---|---|---|---|---|---|"]
    for r in report["time_to_error"]:
        if "original_error" not in r:
            lines.append(f"| {r['layer']} | diverged | | | | | |")
            continue
        for preset in ("default", "fast"):
            p = r[preset]
            reach = f"step {p['reached_at_step']}, {p['seconds_to_reach']:.1f} s" if p["reached_at_step"] else "not reached"
            frac = f"{p['fraction_of_original_time']:.2f}" if p["fraction_of_original_time"] is not None else "-"
            lines.append(f"| {r['layer']} | {r['original_error']:.3f} | {r['original_seconds']:.1f} s | {preset} | {reach} | "
                         f"{frac} | {p['final_error']:.3f} |")
    (RESULTS / "invert_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
