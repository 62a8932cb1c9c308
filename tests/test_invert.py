"""Feature inversion: the original algorithm reproduced step for step, presets, outputs, metrics,
divergence, interruption, seeds and the CLI."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import preimage
import preimage.gan
from preimage.cli import main
from preimage.errors import PreimageError
from preimage.gan.task import gan_config
from preimage.images import load_tensor
from preimage.layers import resolve_layer
from preimage.tasks.invert import INVERT_PRESETS, config_for, invert

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from original import run_original  # noqa: E402  (the original script, kept as the benchmark baseline)


def test_original_preset_holds_the_script_defaults():
    c = INVERT_PRESETS["original"]
    assert (c.alpha, c.beta, c.lambda_alpha, c.lambda_tv) == (6.0, 2.0, 1e-5, 1e-5)
    assert (c.steps, c.optimizer, c.lr, c.momentum, c.decay_factor, c.decay_steps) == (200, "sgd", 100.0, 0.9, 0.1, (200,))
    assert (c.space, c.bounds, c.init, c.init_scale, c.seed, c.jitter) == ("input", None, "noise", 1e-3, 2023, 0)


def test_original_preset_matches_the_original_loop_step_for_step(alexnet):
    ref = load_tensor("sample:chelsea", 67)
    x_orig, _, _ = run_original(alexnet.net, alexnet.normalize(ref), resolve_layer(alexnet, "conv2"), epochs=6)
    inv = invert(alexnet, ref, layers=["conv2"], preset="original", steps=6)
    ours = alexnet.normalize(inv.result.image)
    assert torch.allclose(ours, x_orig, rtol=1e-4, atol=1e-6)


def test_inversion_reduces_the_feature_error_and_reports_every_metric(tiny_model):
    ref = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    short = invert(tiny_model, ref, layers=["conv2"], steps=2, jitter=0, lambda_tv=0.0, lambda_alpha=0.0)
    long = invert(tiny_model, ref, layers=["conv2"], steps=150, jitter=0, lambda_tv=0.0, lambda_alpha=0.0)
    m = long.metrics[0]
    assert set(m) >= {"feature_error", "psnr", "ssim", "tv_ratio", "top1_agrees", "top1_original"}
    assert m["feature_error"]["conv2"] < 0.5 * short.metrics[0]["feature_error"]["conv2"]
    assert long.status == "done" and len(long.history) == 150


def test_several_layers_with_weights_and_specs(tiny_model):
    inv = invert(tiny_model, torch.rand(1, 3, 16, 16), layers=["conv1+conv2:0.5", ("fc", 0.1)], steps=3)
    assert inv.layers == [("conv1", 1.0), ("conv2", 0.5), ("fc", 0.1)]
    assert set(inv.metrics[0]["feature_error"]) == {"conv1", "conv2", "fc"}


@pytest.mark.parametrize("layers, message", [
    (["conv1:0+conv2:0"], "every layer weight is 0"),
    ([("conv1", 0)], "every layer weight is 0"),
    ([("conv1", -1.0)], "must be a finite number >= 0"),
    ([("conv1", float("nan"))], "must be a finite number >= 0"),
])
def test_layer_weights_that_leave_no_reconstruction_term_are_refused(tiny_model, layers, message):
    with pytest.raises(PreimageError, match=message):
        invert(tiny_model, torch.rand(1, 3, 16, 16), layers=layers, steps=1)


def test_batched_images_are_inverted_independently(tiny_model):
    refs = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    kw = dict(layers=["conv2"], steps=20, init="zeros", jitter=0)
    both = invert(tiny_model, refs, **kw)
    alone = invert(tiny_model, refs[1:], **kw)
    assert torch.allclose(both.image[1], alone.image[0], atol=1e-5)


def test_start_from_zeros_or_another_image(tiny_model):
    ref = load_tensor("sample:chelsea", 16)
    still = dict(layers=["conv2"], steps=1, lr=1e-9, jitter=0)  # one step too small to move a pixel
    zero = invert(tiny_model, ref, init="zeros", **still)
    assert torch.allclose(zero.image, torch.full_like(zero.image, 0.5))
    other = invert(tiny_model, ref, init="sample:coffee", **still)
    assert torch.allclose(other.image, load_tensor("sample:coffee", 16), atol=1e-6)


def test_divergence_keeps_the_last_finite_image_and_stops_at_once(tiny_model):
    ref = torch.rand(1, 3, 16, 16)
    inv = invert(tiny_model, ref, layers=["conv2"], preset="original", lr=1e12, steps=50)
    assert inv.status == "diverged"
    assert inv.result.steps < 50
    assert torch.isfinite(inv.image).all()


def test_interrupt_returns_what_there_is(tiny_model):
    def stop(step):
        if step.step == 4:
            raise KeyboardInterrupt
    inv = invert(tiny_model, torch.rand(1, 3, 16, 16), layers=["conv2"], steps=50, callbacks=[stop])
    assert inv.status == "interrupted" and 3 <= inv.result.steps <= 4
    assert torch.isfinite(inv.image).all()


def test_unknown_layer_preset_or_setting_is_one_clear_error(tiny_model):
    with pytest.raises(PreimageError, match="did you mean 'conv2'"):
        invert(tiny_model, torch.rand(1, 3, 16, 16), layers=["conv22"], steps=1)
    with pytest.raises(PreimageError, match="unknown preset"):
        config_for("orignal")
    with pytest.raises(PreimageError, match="learning rate"):
        config_for("default", lr=-1.0)


_IMG = torch.rand(1, 3, 16, 16)
#: every public function that takes keyword settings into a config dataclass, called with a misspelt one
MISSPELT = {
    "invert": (lambda m: preimage.invert(m, _IMG, layers=["conv2"], stepz=1), "steps"),
    "invert with a config": (lambda m: preimage.invert(m, _IMG, layers=["conv2"], config=INVERT_PRESETS["fast"],
                                                       stepz=1), "steps"),
    "stylize": (lambda m: preimage.stylize(m, _IMG, _IMG, preset="classic", style_wieght=1), "style_weight"),
    "visualize_objective": (lambda m: preimage.visualize_objective(m, "conv2:0", jiter=2), "jitter"),
    "channel_atlas": (lambda m: preimage.channel_atlas(m, "conv2", [0], topk=2), "top_k"),
    "deep_dream": (lambda m: preimage.deep_dream(m, _IMG, layer="conv2", octave=2), "octaves"),
    "visualize_class": (lambda m: preimage.visualize_class(m, 0, step=3), "steps"),
    "invert_generator": (lambda m: preimage.gan.invert((torch.nn.Identity(), None), _IMG, restart=2), "restarts"),
    "GAN training": (lambda m: gan_config(lrr=1e-3), "lr"),
    "GAN training with data": (lambda m: preimage.gan.train(out="never", data="no/such/folder", lrr=1e-3), "lr"),
    "train_classifier": (lambda m: preimage.gan.train_classifier(data="digits", out="never", epoch=1), "epochs"),
    "score": (lambda m: preimage.gan.score("no/such/run", clasifier="x"), "classifier"),
}


@pytest.mark.parametrize("entry", MISSPELT)
def test_a_misspelt_setting_is_one_clear_error_at_every_entry_point(tiny_model, entry):
    call, closest = MISSPELT[entry]
    kind = entry.removesuffix(" with a config").removesuffix(" with data")
    with pytest.raises(PreimageError, match=rf"^unknown setting '\w+' for {kind} \(did you mean '{closest}'"):
        call(tiny_model)


def test_default_preset_scales_tv_and_jitter_with_the_layer_stride():
    from preimage.objectives import Objective
    from preimage.tasks.invert import build_objective

    cfg = config_for("default")
    t = {"x": torch.ones(1, 4, 2, 2)}
    shallow = build_objective(cfg, [("x", 1.0)], t, stride=2).weights()["tv"]
    deep = build_objective(cfg, [("x", 1.0)], t, stride=32).weights()["tv"]
    deeper = build_objective(cfg, [("x", 1.0)], t, stride=64).weights()["tv"]
    assert isinstance(build_objective(cfg, [("x", 1.0)], t), Objective)
    assert shallow == pytest.approx(cfg.lambda_tv * 2 / 32) and deep == deeper == pytest.approx(cfg.lambda_tv)


def test_default_preset_lowers_the_learning_rate_at_deep_layers_and_records_it(tiny_model):
    from preimage.tasks.invert import effective

    cfg = config_for("default")
    rates = {s: effective(cfg, s)["lr"] for s in (2, 16, 32, 224)}
    assert rates[2] == rates[16] == cfg.lr
    assert rates[32] == rates[224] == pytest.approx(cfg.lr / 4)  # fully connected layers: no lower
    assert effective(config_for("fast"), 32)["lr"] == config_for("fast").lr
    assert effective(config_for("default", lr_stride=0), 32)["lr"] == cfg.lr  # 0 turns the rule off
    inv = invert(tiny_model, torch.rand(1, 3, 16, 16), layers=["conv2"], steps=2)
    eff = inv.manifest()["effective"]
    assert set(eff) == {"stride", "lr", "lambda_tv", "jitter", "jitter_steps", "deep_recipe", "coarse_steps", "init"}
    assert {k: eff[k] for k in effective(inv.config, eff["stride"])} == effective(inv.config, eff["stride"])


def test_embedded_model_reconstruction_is_recognisable(lite0):
    """A short run at a low resolution: the reconstruction from blocks.3 keeps the photo's structure
    and the model still sees a cat."""
    ref = load_tensor("sample:chelsea", 112)
    inv = invert(lite0, ref, layers=["blocks.3"], steps=100, decay_steps=(80,), jitter_until=0.5)
    m = inv.metrics[0]
    assert m["feature_error"]["blocks.3"] < 0.35
    assert m["tv_ratio"] < 1.5
    assert m["ssim"] > 0.2
    cats = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "lynx"}
    assert m["top1_reconstruction"] in cats


# -- CLI ------------------------------------------------------------------------------------------

def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_invert_writes_outputs_and_metrics(tmp_path, capsys):
    code, out, err = _run(["invert", "sample:chelsea", "--model", "alexnet", "--weights", "none", "--input-size", "67",
                           "--layer", "conv2", "--steps", "3", "--out", str(tmp_path), "-q", "--gif"], capsys)
    assert code == 0, err
    for name in ["chelsea.png", "chelsea_compare.png", "chelsea.gif", "manifest.json", "history.json"]:
        assert (tmp_path / name).is_file()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["config"]["optimizer"] == "adam" and manifest["status"] == "done"
    assert "feature error conv2" in out and "PSNR" in out and "TV ratio" in out
    assert not list(tmp_path.glob(".*part"))


def test_cli_jitter_until_sets_the_jitter_phase(tmp_path, capsys):
    base = ["invert", "sample:chelsea", "--model", "alexnet", "--weights", "none", "--input-size", "67",
            "--layer", "conv2", "--steps", "3", "-q"]
    assert _run([*base, "--jitter-until", "1", "--out", str(tmp_path / "a")], capsys)[0] == 0
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["config"]["jitter_until"] == 1.0
    assert _run([*base, "--out", str(tmp_path / "b")], capsys)[0] == 0  # the preset's own share
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["config"]["jitter_until"] == 0.4
    code, _, err = _run([*base, "--jitter-until", "1.5", "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and "must be a fraction of the steps" in err and not (tmp_path / "c").exists()


def test_cli_finish_flags_set_the_two_phase_schedule_and_its_budget(tmp_path, capsys):
    base = ["invert", "sample:chelsea", "--model", "alexnet", "--weights", "none", "--input-size", "67",
            "--layer", "conv2", "--steps", "6", "-q"]
    finish = ["--finish-steps", "2", "--finish-optimizer", "adam", "--finish-lr", "0.01", "--finish-budget", "4",
              "--finish-priors", "0.25"]
    assert _run([*base, *finish, "--out", str(tmp_path / "a")], capsys)[0] == 0
    config = json.loads((tmp_path / "a" / "manifest.json").read_text())["config"]
    assert (config["finish_steps"], config["finish_optimizer"], config["finish_lr"], config["finish_budget"],
            config["finish_priors"]) == (2, "adam", 0.01, 4.0, 0.25)
    code, _, err = _run([*base, "--finish-budget", "4", "--out", str(tmp_path / "b")], capsys)
    assert code == 2 and "give finish_steps too (--finish-steps)" in err and not (tmp_path / "b").exists()


def test_cli_original_flags_alone_select_the_original_algorithm(tmp_path, capsys):
    code, out, err = _run(["invert", "--image_path", "sample:chelsea", "--weights", "none", "--input_size", "67",
                           "--layer_name", "features_3", "--epochs", "4", "--stdout_epoches", "2",
                           "--out", str(tmp_path)], capsys)
    assert code == 0, err
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["model"] == "alexnet"
    assert m["config"]["lr"] == 100.0 and m["config"]["seed"] == 2023 and m["config"]["space"] == "input"
    assert [ln.split()[1] for ln in out.splitlines() if ln.startswith("step")] == ["2", "4"]


def test_cli_same_seed_same_bytes(tmp_path, capsys):
    args = ["invert", "sample:coffee", "--model", "alexnet", "--weights", "none", "--input-size", "67",
            "--layer", "conv3", "--steps", "4", "-q", "--seed", "7"]
    assert _run(args + ["--out", str(tmp_path / "a")], capsys)[0] == 0
    assert _run(args + ["--out", str(tmp_path / "b")], capsys)[0] == 0
    assert (tmp_path / "a" / "coffee.png").read_bytes() == (tmp_path / "b" / "coffee.png").read_bytes()


def test_cli_refuses_to_overwrite_without_force(tmp_path, capsys):
    (tmp_path / "chelsea.png").write_bytes(b"keep")
    code, out, err = _run(["invert", "sample:chelsea", "--model", "alexnet", "--weights", "none", "--layer", "conv1",
                           "--steps", "1", "--out", str(tmp_path), "-q"], capsys)
    assert code == 2 and "--force" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "chelsea.png").read_bytes() == b"keep"


def test_cli_divergence_exits_1_with_the_fix_and_keeps_the_last_image(tmp_path, capsys, monkeypatch):
    code, out, err = _run(["invert", "sample:chelsea", "--model", "alexnet", "--weights", "none", "--input-size", "67",
                           "--layer", "conv2", "--preset", "original", "--lr", "1e12", "--steps", "30",
                           "--out", str(tmp_path), "-q"], capsys)
    assert code == 1
    assert "diverged" in err and "--lr" in err and len(err.strip().splitlines()) == 1
    assert json.loads((tmp_path / "manifest.json").read_text())["status"] == "diverged"


@pytest.mark.parametrize("argv, message", [
    (["--layer", "conv33"], "did you mean"),
    (["--lr", "-3"], "must be > 0"),
    (["--lambda-tv", "abc"], "not a number"),
    (["--init", "missing.png"], "no such file"),
    (["--layer", "conv1:0"], "every layer weight is 0"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, message):
    code, out, err = _run(["invert", "sample:chelsea", "--model", "alexnet", "--weights", "none", "--input-size", "67",
                           "--steps", "1", "--out", str(tmp_path), "-q"] + (["--layer", "conv1"] if "--layer" not in argv else []) + argv,
                          capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "manifest.json").exists()


def test_two_phase_finish_continues_the_same_run(tiny_model):
    seen = []
    inv = invert(tiny_model, torch.rand(1, 3, 16, 16), layers=["conv2"], steps=12, finish_steps=4,
                 finish_optimizer="lbfgs", callbacks=[lambda s: seen.append(s.step)])
    assert inv.status == "done" and inv.result.steps == 12
    assert [h["step"] for h in inv.history] == list(range(1, 13)) and seen == list(range(1, 13))


def test_a_finish_budget_keeps_every_pixel_near_the_first_phases_image(tiny_model):
    photo = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    common = dict(layers=["conv2"], jitter=0, seed=1)
    first = invert(tiny_model, photo, steps=6, **common).image  # the same first phase as below
    finish = dict(steps=12, finish_steps=6, finish_optimizer="adam", finish_lr=0.2, **common)
    free = invert(tiny_model, photo, **finish).image
    near = invert(tiny_model, photo, finish_budget=2, **finish).image
    assert (free - first).abs().max() > 4 / 255  # without a budget the finish moves pixels far
    moved = (near - first).abs().max()
    assert 0 < moved <= 2 / 255 + 1e-6
    with pytest.raises(PreimageError, match="finish_budget must be >= 0"):
        invert(tiny_model, photo, finish_budget=-1, **finish)


def test_a_finish_without_priors_optimizes_the_reconstruction_alone(tiny_model):
    photo = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    inv = invert(tiny_model, photo, layers=["conv2"], steps=8, finish_steps=3, finish_optimizer="adam",
                 finish_lr=0.01, finish_budget=2, finish_priors=False)
    terms = [set(h) - {"step", "loss", "lr"} for h in inv.history]
    assert all({"alpha", "tv"} <= t for t in terms[:5])  # the first phase with its priors
    assert all(t == {"rec[conv2]"} for t in terms[5:]), terms[5:]  # the finish without them


def test_a_finish_with_priors_scaled_weighs_them_less(tiny_model):
    photo = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    kw = dict(layers=["conv2"], steps=8, finish_steps=3, finish_optimizer="adam", finish_lr=0.01, lambda_tv=2.0)
    full, half = (invert(tiny_model, photo, finish_priors=p, **kw) for p in (1.0, 0.5))
    for h in (full.history, half.history):  # the first phase is the same
        assert set(h[0]) >= {"alpha", "tv"}
    assert full.history[4]["tv"] == pytest.approx(half.history[4]["tv"])
    # at the finish's first step the image is the same, so each prior term is half as large
    assert half.history[5]["tv"] == pytest.approx(0.5 * full.history[5]["tv"], rel=1e-5)
    assert half.history[5]["alpha"] == pytest.approx(0.5 * full.history[5]["alpha"], rel=1e-5)
    with pytest.raises(PreimageError, match="finish_priors must be >= 0"):
        invert(tiny_model, photo, finish_priors=-1, **kw)


def test_cli_ctrl_c_saves_what_there_is_and_exits_130(tmp_path, capsys, monkeypatch):
    engine = sys.modules["preimage.optimize"]  # the module (the package exports the function by that name)
    real, calls = engine.forward_state, []

    def interrupting(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "forward_state", interrupting)
    code, out, err = _run(["invert", "sample:chelsea", "--model", "alexnet", "--weights", "none", "--input-size", "67",
                           "--layer", "conv2", "--steps", "50", "--out", str(tmp_path), "-q"], capsys)
    assert code == 130 and "interrupted after 3 steps" in err
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["steps_run"] == 3
    assert (tmp_path / "chelsea.png").is_file()


# -- deep-layer recipe and the judge ---------------------------------------------------------------

def test_judge_metrics_are_added_when_a_judge_is_given(tiny_model):
    from conftest import make_tiny_model

    from preimage.metrics import judge_recognition

    judge = make_tiny_model(seed=3)
    judge.name = "tiny-judge"
    ref = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    inv = invert(tiny_model, ref, layers=["conv2"], steps=3, judge=judge)
    direct = judge_recognition(judge, inv.image, inv.reference)
    for i, m in enumerate(inv.metrics):
        j = m["judge"]
        assert j["model"] == "tiny-judge" and j["rank"] == int(direct["rank"][i])
        assert j["agrees"] == bool(direct["agrees"][i]) and j["agrees"] == (j["rank"] == 1)
        assert j["original_class"] == judge.classes[int(direct["original_class"][i])]
    assert "judge" in inv.manifest()["metrics"][inv.names[0]]
    assert "judge" not in invert(tiny_model, ref, layers=["conv2"], steps=1).metrics[0]


def test_default_preset_uses_its_deep_recipe_only_from_the_deep_stride_on():
    from preimage.tasks.invert import recipe_for

    cfg = config_for("default")
    assert cfg.deep and cfg.deep_stride
    assert recipe_for(cfg, cfg.deep_stride / 2) is cfg
    deep = recipe_for(cfg, cfg.deep_stride)
    for k, v in cfg.deep.items():
        assert getattr(deep, k) == (tuple(v) if isinstance(v, list) else v)
    assert deep.deep == {} and deep.steps == cfg.steps


def test_settings_the_user_gives_win_over_the_deep_recipe(tiny_model):
    from preimage.tasks.invert import recipe_for

    key = next(iter(config_for("default").deep))
    value = getattr(INVERT_PRESETS["default"], key)
    cfg = config_for("default", **{key: value})
    assert key not in cfg.deep and getattr(recipe_for(cfg, 1e9), key) == value
    assert key in INVERT_PRESETS["default"].deep  # the preset itself is left intact
    # a pyramid starts from any image; a Fourier image starts from noise, so its recipe gives way
    assert config_for("default", init="sample:coffee").deep["param"] == "pyramid"
    assert config_for("default", deep={"param": "fourier", "lr": 0.05}, init="sample:coffee").deep == {}
    noise = config_for("default", init="noise").deep  # the user's start wins over the learned one
    assert "init" not in noise and noise == {k: v for k, v in INVERT_PRESETS["default"].deep.items() if k != "init"}
    assert config_for("pixels").deep == {} and recipe_for(config_for("pixels"), 1e9).param == "pixels"
    with pytest.raises(PreimageError, match="deep-layer recipe"):
        config_for("default", deep={"no_such_setting": 1})


def test_recognisable_preset_is_the_default_with_the_measured_deep_recipe():
    import importlib.util

    from preimage.tasks.invert import effective, recipe_for

    cfg = config_for("recognisable")
    shallow, default = recipe_for(cfg, 16).as_dict(), recipe_for(config_for("default"), 16).as_dict()
    assert {k: v for k, v in shallow.items() if k != "deep"} == {k: v for k, v in default.items() if k != "deep"}
    # at stride 32 it is the recipe of the benchmark's table (benchmarks/invert_deep.py, docs/deep_layers.md)
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        spec = importlib.util.spec_from_file_location("invert_deep", bench / "invert_deep.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(bench))
    measured = {k: v for k, v in module.CANDIDATES["pyr_tv2_jit_all_fin4_p10"].items() if k != "deep"}
    assert recipe_for(cfg, 32) == recipe_for(config_for("pixels", **measured), 32)
    # the user's steps keep the finish's share of them (100 of 700)
    deep = recipe_for(config_for("recognisable", steps=350), 32)
    assert (deep.steps, deep.finish_steps) == (350, 50)
    assert recipe_for(config_for("recognisable", steps=3), 32).finish_steps == 0
    assert recipe_for(config_for("recognisable", steps=350, finish_steps=20), 32).finish_steps == 20
    # jittered to the end of the first phase; the finish runs without
    assert effective(recipe_for(cfg, 32), 32)["jitter_steps"] == 600


def test_the_users_steps_move_the_presets_lr_drops(tiny_model):
    from preimage.tasks.invert import recipe_for

    assert config_for("default", steps=300).decay_steps == (240,)  # 480 of 600
    assert config_for("default").decay_steps == (480,)
    assert config_for("fast", steps=400).decay_steps == (300,)     # 150 of 200
    assert config_for("default", steps=300, decay_steps=(100,)).decay_steps == (100,)  # the user's win
    assert config_for("default", steps=300, decay_steps=()).decay_steps == ()
    # a finish of the user's own leaves the steps before it, and their drop, as they were
    assert config_for("default", steps=700, finish_steps=100).decay_steps == (480,)
    # the recognisable preset: 480 of 600 at shallow layers; 480 of the 600 before its finish at deep ones
    cfg = config_for("recognisable", steps=350)
    assert cfg.decay_steps == (280,) and recipe_for(cfg, 32).decay_steps == (240,)
    assert recipe_for(config_for("recognisable"), 32).decay_steps == (480,)
    # and a run with them is the run with those drops given
    photo = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    kw = dict(layers=["conv2"], init="noise", deep={})
    moved = invert(tiny_model, photo, steps=10, **kw)
    given = invert(tiny_model, photo, steps=10, decay_steps=(8,), **kw)
    kept = invert(tiny_model, photo, steps=10, decay_steps=(480,), **kw)
    assert torch.equal(moved.image, given.image) and not torch.equal(moved.image, kept.image)


def test_recognisable_preset_runs_its_finish_on_a_deep_layer(tiny_model):
    photo = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    inv = invert(tiny_model, photo, preset="recognisable", layers=["conv2"], steps=14, deep_stride=2, init="noise")
    assert inv.effective["deep_recipe"] is True and len(inv.history) == 14
    assert set(inv.history[-1]) - {"step", "loss"} == {"rec[conv2]", "alpha", "tv"}
    full = invert(tiny_model, photo, preset="recognisable", layers=["conv2"], steps=14, deep_stride=2, init="noise",
                  finish_priors=1.0)
    assert full.history[11]["tv"] == pytest.approx(inv.history[11]["tv"])  # the same until the finish ...
    assert inv.history[12]["tv"] == pytest.approx(0.1 * full.history[12]["tv"], rel=1e-4)  # ... the priors at 0.1


def test_deep_recipe_runs_on_a_deep_layer_and_the_manifest_says_so(tiny_model):
    inv = invert(tiny_model, torch.rand(1, 3, 16, 16), layers=["conv2"], steps=2, deep_stride=2,
                 deep={"param": "fourier", "lr": 0.05, "lr_stride": 0, "init_scale": 0.01})
    assert inv.effective["deep_recipe"] is True and inv.effective["lr"] == 0.05
    assert inv.manifest()["config"]["deep"]["param"] == "fourier"
    assert invert(tiny_model, torch.rand(1, 3, 16, 16), layers=["conv2"], steps=2, deep={},
                  ).effective["deep_recipe"] is False


def test_fourier_parameterization_inverts_and_stays_in_range(tiny_model):
    ref = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    inv = invert(tiny_model, ref, layers=["conv2"], steps=40, param="fourier", lr=0.1, init_scale=0.01,
                 jitter=0, deep={})
    first, last = inv.history[0]["rec[conv2]"], inv.history[-1]["rec[conv2]"]
    assert last < 0.5 * first
    assert 0 <= inv.image.min() and inv.image.max() <= 1
    with pytest.raises(PreimageError, match="fourier"):
        config_for("default", param="fourier", init="zeros")


def test_pyramid_parameterization_inverts_stays_in_range_and_can_start_from_an_image(tiny_model):
    ref = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    inv = invert(tiny_model, ref, layers=["conv2"], steps=40, param="pyramid", pyramid_levels=3, jitter=0,
                 deep={})
    first, last = inv.history[0]["rec[conv2]"], inv.history[-1]["rec[conv2]"]
    assert last < 0.5 * first
    assert 0 <= inv.image.min() and inv.image.max() <= 1
    # one step at a tiny rate from a flat start: the pyramid starts exactly there
    start = invert(tiny_model, ref, layers=["conv2"], steps=1, param="pyramid", init="zeros", lr=1e-6, jitter=0,
                   deep={})
    assert torch.allclose(start.image, torch.full_like(ref, 0.5), atol=1e-4)
    with pytest.raises(PreimageError, match="pyramid"):
        config_for("default", param="pyramid", pyramid_levels=0)
    with pytest.raises(PreimageError, match="did you mean 'pyramid'"):
        config_for("default", param="pyramd")


def test_deep_prior_parameterization_inverts_and_chroma_tv_is_a_setting(tiny_model):
    ref = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    inv = invert(tiny_model, ref, layers=["conv2"], steps=40, param="deep_prior", prior_width=8, lr=0.01,
                 lr_stride=0, jitter=0, tv_chroma=4.0, deep={})
    first, last = inv.history[0]["rec[conv2]"], inv.history[-1]["rec[conv2]"]
    assert last < 0.5 * first
    assert 0 <= inv.image.min() and inv.image.max() <= 1
    with pytest.raises(PreimageError, match="deep_prior"):
        config_for("default", param="deep_prior", space="input")
    with pytest.raises(PreimageError, match="tv_chroma"):
        config_for("default", tv_chroma=-1.0)


def test_saturation_prior_is_a_setting_that_greys_the_preimage(tiny_model):
    ref = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    kw = dict(layers=["conv2"], steps=30, lr_stride=0, jitter=0, deep={})
    plain, grey = invert(tiny_model, ref, **kw), invert(tiny_model, ref, saturation=50.0, **kw)
    assert "saturation" in grey.history[-1] and "saturation" not in plain.history[-1]

    def chroma(x):
        return float((x - x.mean(1, keepdim=True)).pow(2).mean())

    assert chroma(grey.image) < chroma(plain.image)
    with pytest.raises(PreimageError, match="saturation"):
        config_for("default", saturation=-1.0)


def test_robustness_transforms_act_in_the_jitter_phase_only_and_are_seeded(tiny_model):
    from preimage.tasks import invert as inv_mod

    seen = []
    real = inv_mod.random_affine

    def spy(scale, degrees):
        inner = real(scale, degrees)

        def fn(x, g):
            seen.append(True)
            return inner(x, g)
        return fn

    ref = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    kw = dict(layers=["conv2"], steps=10, jitter_until=0.5, scale_jitter=0.1, rotate=5, deep={})
    try:
        inv_mod.random_affine = spy
        a = invert(tiny_model, ref, **kw)
    finally:
        inv_mod.random_affine = real
    assert len(seen) == 5  # the first half of the steps
    b = invert(tiny_model, ref, **kw)
    assert torch.equal(a.image, b.image)
    with pytest.raises(PreimageError, match="rotate"):
        config_for("default", rotate=-1)


def test_coarse_to_fine_starts_smooth_and_continues_the_same_run(tiny_model):
    seen = []
    inv = invert(tiny_model, torch.rand(1, 3, 16, 16), layers=["conv2"], steps=10, coarse=4, coarse_until=0.5,
                 jitter=0, deep={}, frame_every=1, callbacks=[lambda s: seen.append(s.step)])
    assert inv.effective["coarse_steps"] == 5
    assert seen == list(range(1, 11)) and [h["step"] for h in inv.history] == list(range(1, 11))
    coarse, fine = inv.result.frames[4][0], inv.result.frames[-1][0]
    # after the coarse phase the image is a bilinear upsampling of a 4x4 grid: no pixel-scale detail
    from preimage.metrics import tv
    assert tv(coarse[None]).item() < tv(fine[None]).item()
    assert (coarse[:, 1:, :] - coarse[:, :-1, :]).abs().max() <= (coarse.max() - coarse.min()) / 4 + 1e-6


def test_tv_weight_schedule_moves_linearly_to_its_end_value():
    from preimage.objectives import State
    from preimage.tasks.invert import build_objective

    cfg = config_for("default", steps=11, tv_end=0.1, lambda_alpha=0, tv_stride=0, deep={})
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    target = {"f": torch.zeros(1, 2)}
    obj = build_objective(cfg, [("f", 1.0)], target)
    tv = [obj.terms(State(image=x, input=x, features={"f": torch.ones(1, 2)}, step=t))["tv"].item()
          for t in (1, 6, 11)]
    assert tv[1] == pytest.approx(tv[0] * 0.55) and tv[2] == pytest.approx(tv[0] * 0.1)


def test_colour_prior_pulls_grey_and_saturated_images_towards_natural_statistics():
    from preimage.objectives import State
    from preimage.tasks.invert import color_prior

    mean, std = (0.5, 0.4, 0.3), (0.2, 0.2, 0.2)
    prior = color_prior(mean, std)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 3, 32, 32, generator=g)
    z = (z - z.flatten(2).mean(2)[..., None, None]) / z.flatten(2).std(dim=2)[..., None, None]
    natural = torch.tensor(mean).view(1, 3, 1, 1) + 0.2 * z  # exactly those statistics
    assert prior(State(image=natural, input=natural)).item() == pytest.approx(0, abs=1e-9)
    for scale in (0.02, 0.45):  # washed out, then saturated
        x = (torch.tensor(mean).view(1, 3, 1, 1) + scale * z).requires_grad_()
        loss = prior(State(image=x, input=x))
        assert loss.item() > 0.5
        loss.sum().backward()
        stepped = (x - 1e-3 * x.grad).detach()
        assert abs(stepped.flatten(2).std(2).mean() - 0.2) < abs(x.detach().flatten(2).std(2).mean() - 0.2)
    shifted = natural + 0.1
    assert prior(State(image=shifted, input=shifted)).item() == pytest.approx(3 * 0.5 ** 2, rel=1e-4)


def test_cli_judge_adds_the_cross_model_verdict(tmp_path, capsys):
    code, out, err = _run(["invert", "sample:chelsea", "--model", "alexnet", "--weights", "none", "--input-size", "67",
                           "--layer", "conv1", "--steps", "2", "--judge", "efficientnet_lite0",
                           "--out", str(tmp_path), "-q"], capsys)
    assert code == 0, err
    j = json.loads((tmp_path / "manifest.json").read_text())["metrics"]["chelsea"]["judge"]
    assert j["model"] == "efficientnet_lite0" and j["rank"] >= 1 and "judge efficientnet_lite0" in out


def test_cli_unknown_judge_is_one_line_before_any_work(tmp_path, capsys):
    code, out, err = _run(["invert", "sample:chelsea", "--model", "alexnet", "--weights", "none",
                           "--layer", "conv1", "--judge", "efficientnet_lite9", "--out", str(tmp_path), "-q"], capsys)
    assert code == 2 and "did you mean" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "manifest.json").exists()


def test_the_metrics_are_the_reconstructions_own_values(tiny_model):
    from preimage.layers import FeatureExtractor

    refs = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    inv = invert(tiny_model, refs, layers=["conv1", "fc"], steps=10, jitter=0)
    ex = FeatureExtractor(tiny_model, ["conv1", "fc"])
    with torch.no_grad():
        got, want = ex(tiny_model.normalize(inv.image)), ex(tiny_model.normalize(refs))
        p_img, p_ref = tiny_model(inv.image).softmax(-1), tiny_model(refs).softmax(-1)
    for i, m in enumerate(inv.metrics):
        for n in ("conv1", "fc"):  # ||Φ(x̂) − Φ(x)|| / ||Φ(x)||, per image
            err = (got[n][i] - want[n][i]).norm() / want[n][i].norm()
            assert m["feature_error"][n] == pytest.approx(float(err), rel=1e-4)
        mse = (inv.image[i] - refs[i]).pow(2).mean()
        assert m["psnr"] == pytest.approx(float(10 * torch.log10(1 / mse)), rel=1e-4)
        assert 0 < m["ssim"] < 1 and m["tv_ratio"] > 0
        c_img, c_ref = int(p_img[i].argmax()), int(p_ref[i].argmax())
        assert (m["top1_reconstruction"], m["top1_original"]) == (tiny_model.classes[c_img], tiny_model.classes[c_ref])
        assert m["top1_agrees"] == (c_img == c_ref)
        assert m["p_original_class"] == pytest.approx(float(p_img[i, c_ref]), rel=1e-4)
    assert inv.metrics[0]["feature_error"] != inv.metrics[1]["feature_error"]  # each image its own


def test_a_perfect_reconstruction_scores_perfectly(tiny_model):
    from preimage.layers import FeatureExtractor
    from preimage.tasks.invert import evaluate

    refs = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    ex = FeatureExtractor(tiny_model, ["conv2"])
    with torch.no_grad():
        targets = ex(tiny_model.normalize(refs))
    same = evaluate(tiny_model, refs.clone(), refs, targets, ex)
    for m in same:
        assert m["feature_error"]["conv2"] == pytest.approx(0.0, abs=1e-6)
        # the photo itself moved one pixel: both errors are that of the moved photo, and not 0
        assert m["feature_error_moved"]["conv2"] == pytest.approx(m["photo_error_moved"]["conv2"])
        assert m["photo_error_moved"]["conv2"] > 0.01
        assert m["psnr"] == pytest.approx(120.0)  # 10 log10(1 / 1e-12): the floor of the mse
        assert m["ssim"] == pytest.approx(1.0, abs=1e-6) and m["tv_ratio"] == pytest.approx(1.0)
        assert m["top1_agrees"] and m["top1_reconstruction"] == m["top1_original"]
    flat = evaluate(tiny_model, torch.full_like(refs, 0.5), refs, targets, ex)
    for m, ref in zip(flat, refs):
        assert m["tv_ratio"] == 0.0 and m["ssim"] < 0.5
        assert m["psnr"] == pytest.approx(float(10 * torch.log10(1 / (ref - 0.5).pow(2).mean())), rel=1e-4)
    # a reconstruction of another class: the class verdicts and the probability of the original's class
    black, white = torch.zeros(1, 3, 16, 16), torch.ones(1, 3, 16, 16)
    with torch.no_grad():
        c_black, c_white = int(tiny_model(black).argmax()), int(tiny_model(white).argmax())
        p = tiny_model(black).softmax(-1)[0]
    assert c_black != c_white
    (m,) = evaluate(tiny_model, black, white, ex(tiny_model.normalize(white)), ex)
    assert (m["top1_original"], m["top1_reconstruction"], m["top1_agrees"]) == \
        (tiny_model.classes[c_white], tiny_model.classes[c_black], False)
    assert m["p_original_class"] == pytest.approx(float(p[c_white]), rel=1e-5)
    assert m["psnr"] == pytest.approx(0.0, abs=1e-6) and m["feature_error"]["conv2"] > 0.1
    # flat images look the same moved: their errors moved are their errors
    assert m["feature_error_moved"]["conv2"] == pytest.approx(m["feature_error"]["conv2"], rel=1e-5)
    assert m["photo_error_moved"]["conv2"] == pytest.approx(0.0, abs=1e-6)


def test_layer_weights_scale_their_reconstruction_terms(tiny_model):
    from preimage.layers import FeatureExtractor

    ref = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    kw = dict(steps=1, init="zeros", jitter=0, lambda_tv=0.0, lambda_alpha=0.0, lr_stride=0, rec_weight=2.0)
    one = invert(tiny_model, ref, layers=[("conv1", 1.0), ("conv2", 1.0)], **kw).history[0]
    three = invert(tiny_model, ref, layers=[("conv1", 1.0), ("conv2", 3.0)], **kw).history[0]
    # the first step reads the start (grey 0.5): rec[l] = C w_l ||Φ_l(x0) − Φ_l(x)||² / ||Φ_l(x)||²
    ex = FeatureExtractor(tiny_model, ["conv1", "conv2"])
    with torch.no_grad():
        start, target = ex(tiny_model.normalize(torch.full_like(ref, 0.5))), ex(tiny_model.normalize(ref))
    rel = {n: float((start[n] - target[n]).pow(2).sum() / target[n].pow(2).sum()) for n in start}
    assert one["rec[conv1]"] == pytest.approx(2.0 * rel["conv1"], rel=1e-4)
    assert one["rec[conv2]"] == pytest.approx(2.0 * rel["conv2"], rel=1e-4)
    assert three["rec[conv1]"] == pytest.approx(one["rec[conv1]"], rel=1e-6)
    assert three["rec[conv2]"] == pytest.approx(3 * one["rec[conv2]"], rel=1e-5)
    assert three["loss"] - one["loss"] == pytest.approx(2 * one["rec[conv2]"], rel=1e-4)
    # and the weights steer the image: the heavier layer is matched better
    kw = dict(steps=15, jitter=0, lr_stride=0)
    conv1_heavy = invert(tiny_model, ref, layers=[("conv1", 10.0), ("fc", 0.1)], **kw).metrics[0]["feature_error"]
    fc_heavy = invert(tiny_model, ref, layers=[("conv1", 0.1), ("fc", 10.0)], **kw).metrics[0]["feature_error"]
    assert conv1_heavy["conv1"] < fc_heavy["conv1"] and fc_heavy["fc"] < conv1_heavy["fc"]


def test_jitter_is_capped_at_the_layer_stride_over_jitter_stride(tiny_model, monkeypatch):
    from preimage.tasks import invert as inv_mod
    from preimage.tasks.invert import effective

    cfg = config_for("default", jitter=4, jitter_stride=8.0)
    assert [effective(cfg, s)["jitter"] for s in (2, 8, 16, 24, 32, 224)] == [0, 1, 2, 3, 4, 4]
    assert effective(cfg, 2)["jitter_steps"] == 0 and effective(cfg, 16)["jitter_steps"] == round(0.4 * cfg.steps)
    assert effective(config_for("default", jitter=4, jitter_stride=0), 2)["jitter"] == 4  # 0: no cap
    assert effective(config_for("default", jitter=4, jitter_stride=2.0), 4)["jitter"] == 2
    # in a run: the jitter transform is built with the capped shift, and none at all where it is 0
    built = []
    real = inv_mod.jitter
    monkeypatch.setattr(inv_mod, "jitter", lambda px: built.append(px) or real(px))
    ref = torch.rand(1, 3, 16, 16)
    fc = invert(tiny_model, ref, layers=["fc"], steps=2, jitter=4, jitter_stride=8.0, deep={})  # stride 16
    assert built == [2] and fc.effective["jitter"] == 2
    built.clear()
    conv2 = invert(tiny_model, ref, layers=["conv2"], steps=2, jitter=4, jitter_stride=8.0)  # stride 2
    assert built == [] and conv2.effective["jitter"] == 0 and conv2.effective["jitter_steps"] == 0
    invert(tiny_model, ref, layers=["conv2"], steps=2, jitter=4, jitter_stride=0)
    assert built == [4]
