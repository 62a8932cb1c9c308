"""Attribution methods checked against Captum on the embedded EfficientNet-Lite0 (same settings, float
tolerance), Grad-CAM++ against its closed form on a hand-written model, hooks that never outlive a call,
and bad input that ends in one line (exit 2) before the model loads."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from captum.attr import (GuidedBackprop, GuidedGradCam, InputXGradient, IntegratedGradients, LayerAttribution,
                         LayerGradCam, NoiseTunnel, Occlusion, Saliency)
from torch import nn

from preimage.cli import main
from preimage.errors import PreimageError
from preimage.images import load_batch
from preimage.models import Model, load_model
from preimage.tasks.attribution import (grad_cam, guided_backprop, guided_relus, ig_baseline, integrated_gradients,
                                        occlusion)
from preimage.tasks.saliency import _smoothgrad, gradients, saliency

SIZE = 64


class Logits(nn.Module):
    """``pixels -> logits`` of a preimage Model as an ``nn.Module`` (Captum's GuidedBackprop needs one)."""

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.model = model
        self.net = model.net

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels)


@pytest.fixture(scope="module")
def lite0() -> Model:
    return load_model("efficientnet_lite0", input_size=SIZE)


@pytest.fixture(scope="module")
def photos(lite0: Model) -> torch.Tensor:
    pixels, _, _ = load_batch(["sample:chelsea", "sample:coffee"], SIZE)
    return pixels


@pytest.fixture(scope="module")
def classes(lite0: Model, photos: torch.Tensor) -> list[int]:
    with torch.no_grad():
        return lite0(photos).argmax(1).tolist()


def close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4) -> None:
    """Equal to float tolerance relative to the larger map's range."""
    scale = float(b.abs().max())
    assert scale > 0
    torch.testing.assert_close(a.float(), b.float(), rtol=rel, atol=rel * scale)


def test_vanilla_and_gradient_times_input_match_captum(lite0, photos, classes) -> None:
    grad, _, _ = gradients(lite0, photos, classes)
    close(grad, Saliency(lite0).attribute(photos.clone(), target=classes, abs=False))
    close(grad * photos, InputXGradient(lite0).attribute(photos.clone(), target=classes))
    r = saliency(lite0, photos, target=classes, method=["vanilla", "gradxinput"])
    close(r.maps["vanilla"], Saliency(lite0).attribute(photos.clone(), target=classes).amax(1))


def test_smoothgrad_matches_captum_noise_tunnel(lite0, photos, classes) -> None:
    x, c = photos[:1], classes[:1]
    ours = _smoothgrad(lite0, x, c, samples=4, noise=0.1, seed=7, batch_size=4, reduce=lambda g: g.abs())
    torch.manual_seed(7)  # NoiseTunnel draws from the global generator: the same N(0, 0.1²) draws as ours
    theirs = NoiseTunnel(Saliency(lite0)).attribute(x.clone(), nt_type="smoothgrad", nt_samples=4, stdevs=0.1,
                                                    target=c)
    close(ours, theirs)


@pytest.mark.parametrize("baseline,rule,method", [("black", "gausslegendre", "gausslegendre"),
                                                  ("blur", "riemann", "riemann_right"),
                                                  ("noise", "gausslegendre", "gausslegendre")])
def test_integrated_gradients_match_captum_with_completeness(lite0, photos, classes, baseline, rule, method) -> None:
    base = ig_baseline(photos, baseline, blur_sigma=4.0, seed=3)
    ours, info = integrated_gradients(lite0, photos, classes, baseline=base, steps=4, rule=rule, batch_size=5)
    theirs, delta = IntegratedGradients(lite0).attribute(photos.clone(), base, target=classes, n_steps=4,
                                                         method=method, return_convergence_delta=True)
    close(ours, theirs)
    for i in range(2):  # Captum's convergence delta is our completeness gap: Σ IG - (S(x) - S(x'))
        assert info[i]["gap"] == pytest.approx(float(delta[i]), rel=1e-3, abs=1e-3 * abs(info[i]["delta"]))
        assert info[i]["sum"] == pytest.approx(float(ours[i].sum()), rel=1e-5)
    if baseline == "noise":  # the baseline by name is the same seeded draw
        named, _ = integrated_gradients(lite0, photos, classes, baseline=baseline, seed=3, steps=4, rule=rule)
        close(named, ours)


@pytest.mark.parametrize("layer", ["bn2", "blocks.4"])
def test_grad_cam_matches_captum_layer_gradcam(lite0, photos, classes, layer) -> None:
    module = dict(lite0.net.named_modules())[layer]
    theirs = LayerGradCam(lite0, module).attribute(photos.clone(), target=classes, relu_attributions=True)
    close(grad_cam(lite0, photos, classes, layer=layer, upsample=False), theirs[:, 0])
    up = LayerAttribution.interpolate(theirs, (SIZE, SIZE), interpolate_mode="bilinear")
    close(grad_cam(lite0, photos, classes, layer=layer), up[:, 0])


def test_default_grad_cam_layer_is_the_last_spatial_map(lite0, photos, classes) -> None:
    r = saliency(lite0, photos, target=classes, method="gradcam")
    assert r.settings["gradcam_layer"] == "bn2"
    close(r.maps["gradcam"], grad_cam(lite0, photos, classes, layer="head"))  # bn2's alias


@pytest.mark.parametrize("name,size,layer", [("resnet18", 64, "layer4"), ("vgg11", 64, "features"),
                                             ("timm:vit_tiny_patch16_224,img_size=32,patch_size=8,depth=2", 32,
                                              "blocks.1.norm1")])
def test_grad_cam_runs_on_other_zoo_models_at_their_last_map(name, size, layer) -> None:
    model = load_model(name, weights="none", input_size=size)  # random init: mechanics only
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    r = saliency(model, x, target=[0, 1], method=["gradcam", "gradcam++"])
    assert r.settings["gradcam_layer"] == layer
    for m in ("gradcam", "gradcam++"):
        assert r.maps[m].shape == (2, size, size) and torch.isfinite(r.maps[m]).all() and r.maps[m].max() > 0


def relu_copy(model: Model) -> Model:
    """lite0 with every ReLU6 replaced by a ReLU (what Captum's GuidedBackprop hooks)."""
    net = copy.deepcopy(model.net)
    for parent in list(net.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.ReLU6):
                setattr(parent, name, nn.ReLU())
    return Model(name="lite0-relu", net=net, input_size=model.input_size, mean=model.mean, std=model.std,
                 classes=model.classes)


def test_guided_backprop_and_guided_gradcam_match_captum_on_relus(lite0, photos, classes) -> None:
    relu = relu_copy(lite0)
    wrapped = Logits(relu)
    ours = guided_backprop(relu, photos, classes)
    close(ours, GuidedBackprop(wrapped).attribute(photos.clone(), target=classes))
    gc = GuidedGradCam(wrapped, relu.net.bn2).attribute(photos.clone(), target=classes, interpolate_mode="bilinear")
    r = saliency(relu, photos, target=classes, method=["guided-gradcam"])
    close(r.maps["guided-gradcam"], gc.abs().amax(1))


def test_captum_guided_backprop_ignores_relu6_ours_gates_it(lite0, photos, classes) -> None:
    # the documented difference: Captum hooks nn.ReLU only, so on EfficientNet-Lite (ReLU6 everywhere)
    # its GuidedBackprop is the plain gradient; ours applies the guided rule at every ReLU6
    plain = Saliency(lite0).attribute(photos.clone(), target=classes, abs=False)
    close(GuidedBackprop(Logits(lite0)).attribute(photos.clone(), target=classes), plain)
    ours = guided_backprop(lite0, photos, classes)
    assert (ours - plain).abs().max() > 0.1 * plain.abs().max()


def test_occlusion_matches_captum_with_windows_cut_at_the_border(lite0, photos, classes) -> None:
    # (64 - 24) / 18 is not whole: the last windows start at 54 and are cut at the border
    ours = occlusion(lite0, photos, classes, window=24, stride=18, fill=0.5, batch_size=32)
    theirs = Occlusion(lite0).attribute(photos.clone(), sliding_window_shapes=(3, 24, 24), strides=(3, 18, 18),
                                        baselines=0.5, target=classes, perturbations_per_eval=16)
    close(ours, theirs[:, 0])
    assert torch.equal(theirs[:, 0], theirs[:, 2])  # the window spans the channels


class GapLinear(nn.Module):
    """``A = conv1x1(z)`` (the Grad-CAM layer), ``S = V · mean_ij A`` — gradients by hand: ``V_ck / hw``."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 1)  # A > 0, so the Grad-CAM++ denominators stay away from 0
        self.conv.weight.data = torch.rand(4, 3, 1, 1, generator=g)
        self.conv.bias.data = torch.rand(4, generator=g)
        self.fc = nn.Linear(4, 3, bias=False)
        self.fc.weight.data = torch.randn(3, 4, generator=g)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(z).mean((2, 3)))


def test_grad_cam_and_plus_plus_match_their_closed_forms() -> None:
    net = GapLinear()
    model = Model(name="gap", net=net, input_size=6, mean=(0.0,) * 3, std=(1.0,) * 3,
                  classes=("a", "b", "c"))
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    act = net.conv(x).detach()
    assert (net.fc.weight > 0).any() and (net.fc.weight < 0).any()  # channels with G > 0 and G < 0
    hw = 36
    for c in (0, 2):
        g = (net.fc.weight[c] / hw).detach().view(1, 4, 1, 1)
        cam = (g * act).sum(1).clamp(min=0)
        torch.testing.assert_close(grad_cam(model, x, [c, c], layer="conv", upsample=False), cam)
        a = g**2 / (2 * g**2 + act.sum((2, 3), keepdim=True) * g**3)  # Chattopadhay et al. eq. 19
        w = hw * a * g.clamp(min=0)  # Σ_ij of a term constant over i, j
        torch.testing.assert_close(grad_cam(model, x, [c, c], layer="conv", plus=True, upsample=False),
                                   (w * act).sum(1).clamp(min=0))


def test_guided_hooks_are_removed_after_use_and_after_errors(lite0, photos, classes) -> None:
    def hooks() -> int:
        return sum(len(m._forward_hooks) for m in lite0.net.modules())

    before = hooks()
    clean, _, _ = gradients(lite0, photos, classes)
    guided_backprop(lite0, photos, classes)
    assert hooks() == before
    with pytest.raises(RuntimeError, match="boom"):
        with guided_relus(lite0.net) as n:
            assert n > 0 and hooks() == before + n
            raise RuntimeError("boom")
    assert hooks() == before
    grad, _, _ = gradients(lite0, photos, classes)
    assert torch.equal(grad, clean)  # plain gradients again: nothing of the guided rule is left


def test_guided_backprop_refuses_networks_without_relus() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Flatten(), nn.LazyLinear(2))
    net(torch.zeros(1, 3, 8, 8))
    model = Model(name="gelu", net=net, input_size=8, mean=(0.5,) * 3, std=(0.5,) * 3, classes=("a", "b"))
    with pytest.raises(PreimageError, match="ReLU or ReLU6.*GELU"):
        saliency(model, torch.rand(1, 3, 8, 8), target=0, method="guided-backprop")


def test_new_maps_do_not_depend_on_batch_size(lite0, photos, classes) -> None:
    kw = dict(target=classes, method=["ig", "occlusion"], steps=3, window=32, stride=32)
    a = saliency(lite0, photos, batch_size=64, **kw)
    b = saliency(lite0, photos, batch_size=3, **kw)  # chunks that straddle images
    for m in kw["method"]:
        close(a.maps[m], b.maps[m], rel=1e-3)
    assert a.completeness is not None and b.completeness is not None
    assert a.completeness[1]["gap"] == pytest.approx(b.completeness[1]["gap"], rel=1e-3, abs=1e-3)


def test_bad_settings_raise_one_line_errors(lite0, photos) -> None:
    with pytest.raises(PreimageError, match="spatial map.*'classifier'.*outputs 1000"):
        saliency(lite0, photos, method="gradcam", layer="classifier")
    with pytest.raises(PreimageError, match="spatial map.*global_pool"):
        saliency(lite0, photos, method="gradcam++", layer="global_pool")
    with pytest.raises(PreimageError, match="unknown layer 'bn3'"):
        saliency(lite0, photos, method="gradcam", layer="bn3")
    with pytest.raises(PreimageError, match="window 65 px is larger than the 64x64"):
        saliency(lite0, photos, method="occlusion", window=65)
    with pytest.raises(PreimageError, match="stride 20 is larger than the window 16"):
        saliency(lite0, photos, method="occlusion", window=16, stride=20)
    with pytest.raises(PreimageError, match="at least 1 step, not 0"):
        saliency(lite0, photos, method="ig", steps=0)
    with pytest.raises(PreimageError, match="unknown IG baseline 'blurred'.*did you mean 'blur'"):
        saliency(lite0, photos, method="ig", baseline="blurred")


@pytest.mark.parametrize("flags,message", [
    (["--method", "ig", "--steps", "0"], "at least 1 step, not 0"),
    (["--method", "occlusion", "--window", "300"], "window 300 px is larger than the 224x224"),
    (["--method", "occlusion", "--window", "40", "--input-size", "32"], "larger than the 32x32"),
    (["--method", "ig", "--baseline", "grey"], "unknown IG baseline 'grey'"),
])
def test_cli_refuses_bad_settings_before_the_model_loads(tmp_path, capsys, monkeypatch, flags, message) -> None:
    import preimage.cli.saliency as cli

    def no_model(_args):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cli, "model_from_args", no_model)
    assert main(["saliency", "sample:chelsea", "--out", str(tmp_path / "o"), "-q", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_cli_refuses_a_grad_cam_layer_without_a_spatial_map(tmp_path, capsys) -> None:
    args = ["saliency", "sample:chelsea", "--method", "gradcam", "--layer", "global_pool", "--input-size", "64",
            "--out", str(tmp_path / "o"), "-q"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "spatial map" in err and "global_pool" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_cli_writes_new_maps_and_reports_the_completeness_gap(tmp_path, capsys) -> None:
    out = tmp_path / "sal"
    args = ["saliency", "sample:chelsea", "sample:coffee", "--input-size", "64", "--method",
            "gradcam,guided-backprop,ig,occlusion", "--steps", "4", "--baseline", "blur", "--window", "16",
            "--stride", "16", "--layer", "blocks.5", "--out", str(out), "-q"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.count("IG completeness gap") == 2
    manifest = json.loads((out / "saliency.json").read_text())
    assert manifest["gradcam_layer"] == "blocks.5"
    assert manifest["ig"] == {"steps": 4, "baseline": "blur", "rule": "gausslegendre", "blur_sigma": 10.0}
    assert manifest["occlusion"] == {"window": 16, "stride": 16, "fill": 0.5}
    for im in manifest["images"]:
        ig = im["ig_completeness"]
        assert ig["gap"] == pytest.approx(ig["sum"] - ig["delta"], abs=1e-4)
        assert f"{im['name']}_gradcam.png" in im["files"] and (out / f"{im['name']}_occlusion_overlay.png").exists()


def test_all_means_every_method_the_model_can_run(lite0) -> None:
    from preimage.tasks.saliency import METHODS, methods_for

    assert methods_for(lite0, "all") == [m for m in METHODS if m != "rollout"]
    vit = load_model("timm:vit_tiny_patch16_224,img_size=32,patch_size=8,depth=2", weights="none", input_size=32)
    assert methods_for(vit, "all") == [m for m in METHODS if m not in ("guided-backprop", "guided-gradcam")]
    assert methods_for(vit, ["vanilla", "ig"]) == ["vanilla", "ig"]  # a list is taken as given


def test_occlusion_window_defaults_to_a_seventh_of_the_image() -> None:
    from preimage.tasks.attribution import occlusion_geometry

    assert occlusion_geometry(224, None, None) == (32, 16)
    assert occlusion_geometry(28, None, None) == (4, 2)
    assert occlusion_geometry(224, 20, None) == (20, 10) and occlusion_geometry(224, None, 8) == (32, 8)


def test_cli_all_writes_every_method_at_a_small_size(tmp_path, capsys) -> None:
    out = tmp_path / "all"
    assert main(["saliency", "sample:chelsea", "--input-size", "32", "--method", "all", "--samples", "2",
                 "--steps", "2", "--out", str(out), "-q"]) == 0
    manifest = json.loads((out / "saliency.json").read_text())
    from preimage.tasks.saliency import METHODS

    assert manifest["methods"] == [m for m in METHODS if m != "rollout"]
    assert manifest["occlusion"] == {"window": 5, "stride": 2, "fill": 0.5}
    assert (out / "chelsea_occlusion.png").exists() and (out / "chelsea_guided-gradcam_overlay.png").exists()
