"""Layer names (dotted, underscore form, paper aliases), listing, and the FeatureExtractor's contract:
one pass, truncation, no weight gradients, hook cleanup, last call of a module reused in a forward."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from preimage.errors import PreimageError
from preimage.layers import LOGITS, FeatureExtractor, list_layers, parse_layer_spec, resolve_layer
from preimage.models import IMAGENET_MEAN, IMAGENET_STD, Model

ALEXNET = {
    "conv1": "features.0", "relu1": "features.1", "pool1": "features.2",
    "conv2": "features.3", "relu2": "features.4", "pool2": "features.5",
    "conv3": "features.6", "relu3": "features.7", "conv4": "features.8", "relu4": "features.9",
    "conv5": "features.10", "relu5": "features.11", "pool5": "features.12",
    "fc6": "classifier.1", "relu6": "classifier.2", "fc7": "classifier.4", "relu7": "classifier.5",
    "fc8": "classifier.6",
}


def _vgg16_expected() -> dict[str, str]:
    out, i = {}, 0
    for block, convs in enumerate([2, 2, 3, 3, 3], start=1):
        for k in range(1, convs + 1):
            out[f"conv{block}_{k}"] = f"features.{i}"
            out[f"relu{block}_{k}"] = f"features.{i + 1}"
            i += 2
        out[f"pool{block}"] = f"features.{i}"
        i += 1
    out.update({"fc6": "classifier.0", "relu6": "classifier.1", "fc7": "classifier.3", "relu7": "classifier.4",
                "fc8": "classifier.6"})
    return out


# -- names -------------------------------------------------------------------------------------

@pytest.mark.parametrize("alias,path", sorted(ALEXNET.items()))
def test_alexnet_paper_aliases(alexnet, alias, path):
    assert resolve_layer(alexnet, alias) == path


def test_alexnet_alias_types(alexnet):
    modules = dict(alexnet.net.named_modules())
    assert all(isinstance(modules[ALEXNET[f"conv{k}"]], nn.Conv2d) for k in range(1, 6))
    assert all(isinstance(modules[ALEXNET[f"fc{k}"]], nn.Linear) for k in range(6, 9))
    assert all(isinstance(modules[ALEXNET[p]], nn.MaxPool2d) for p in ("pool1", "pool2", "pool5"))
    assert modules[ALEXNET["fc8"]].out_features == 1000


def test_vgg16_paper_aliases(vgg16):
    expected = _vgg16_expected()
    assert len([a for a in expected if a.startswith("conv")]) == 13
    for alias, path in expected.items():
        assert resolve_layer(vgg16, alias) == path, alias
    modules = dict(vgg16.net.named_modules())
    assert isinstance(modules[expected["conv5_3"]], nn.Conv2d)
    assert isinstance(modules[expected["pool5"]], nn.MaxPool2d)


@pytest.mark.parametrize("alias,path", [("res2", "layer1"), ("res3", "layer2"), ("res4", "layer3"),
                                        ("res5", "layer4"), ("pool1", "maxpool"), ("pool5", "avgpool")])
def test_resnet_stage_aliases(resnet18, alias, path):
    assert resolve_layer(resnet18, alias) == path


def test_dotted_and_underscore_names(alexnet, resnet18):
    assert resolve_layer(alexnet, "features.10") == "features.10"
    assert resolve_layer(alexnet, "features_10") == "features.10"
    assert resolve_layer(alexnet, "classifier_6") == "classifier.6"
    assert resolve_layer(resnet18, "layer2_1_relu") == "layer2.1.relu"
    assert resolve_layer(resnet18, LOGITS) == ""


def test_ambiguous_underscore_name_is_refused():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.ModuleDict({"b_c": nn.Identity()})
            self.a_b = nn.ModuleDict({"c": nn.Identity()})

        def forward(self, x):
            return self.a_b["c"](self.a["b_c"](x))

    model = Model("twins", Net(), 16, IMAGENET_MEAN, IMAGENET_STD)
    with pytest.raises(PreimageError, match="ambiguous.*a.b_c, a_b.c"):
        resolve_layer(model, "a_b_c")
    assert resolve_layer(model, "a.b_c") == "a.b_c"


def test_unknown_layer_suggests_the_closest(alexnet):
    with pytest.raises(PreimageError, match="did you mean 'conv3'") as info:
        resolve_layer(alexnet, "conv33")
    assert "\n" not in str(info.value)
    with pytest.raises(PreimageError, match="did you mean 'features.10'"):
        resolve_layer(alexnet, "features.100")
    with pytest.raises(PreimageError, match="unknown layer 'xyzzy'"):
        FeatureExtractor(alexnet, ["conv1", "xyzzy"])


def test_list_layers_gives_shapes_in_execution_order(alexnet):
    layers = list_layers(alexnet)
    by_name = {i.name: i for i in layers}
    assert by_name["features.0"].shape == (64, 55, 55)
    assert by_name["features.12"].shape == (256, 6, 6)
    assert by_name["classifier.1"].shape == (4096,)
    assert by_name["classifier.6"].shape == (1000,)
    assert "conv1" in by_name["features.0"].aliases and "fc8" in by_name["classifier.6"].aliases
    orders = [i.order for i in layers]
    assert orders == sorted(orders)
    assert [i.name for i in layers].index("features.0") < [i.name for i in layers].index("classifier.6")


def test_list_layers_counts_repeated_calls(resnet18):
    by_name = {i.name: i for i in list_layers(resnet18)}
    assert by_name["layer1.0.relu"].calls == 2
    assert by_name["layer1.0.conv1"].calls == 1
    assert by_name["layer4"].shape == (512, 2, 2)


def test_parse_layer_spec():
    assert parse_layer_spec("conv3_1+fc6:0.1") == [("conv3_1", 1.0), ("fc6", 0.1)]
    assert parse_layer_spec(" conv1 ") == [("conv1", 1.0)]
    for bad, pattern in [("conv1+", "empty"), ("conv1:x", "not a number"), ("conv1:-1", ">= 0"),
                         ("conv1:inf", "finite")]:
        with pytest.raises(PreimageError, match=pattern):
            parse_layer_spec(bad)


# -- FeatureExtractor ---------------------------------------------------------------------------

def _input(model: Model, size: int = 64, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return model.normalize(torch.rand(batch, 3, size, size, generator=g))


def test_several_layers_from_one_pass(alexnet):
    calls = []
    handle = alexnet.net.features[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        feats = FeatureExtractor(alexnet, ["conv1", "features.3", "conv5"])(_input(alexnet, 96))
    finally:
        handle.remove()
    assert list(feats) == ["conv1", "features.3", "conv5"]
    assert feats["conv1"].shape[:2] == (2, 64) and feats["conv5"].shape[:2] == (2, 256)
    assert len(calls) == 1


def test_extractor_stops_at_the_deepest_requested_layer(alexnet):
    fired = []
    later = [alexnet.net.features[7], alexnet.net.avgpool, alexnet.net.classifier[1]]
    handles = [m.register_forward_pre_hook(lambda *a: fired.append(1)) for m in later]
    try:
        fx = FeatureExtractor(alexnet, ["conv3", "conv1"])
        assert fx.last == "features.6"
        feats = fx(_input(alexnet, 96))
    finally:
        for h in handles:
            h.remove()
    assert fired == []
    assert set(feats) == {"conv3", "conv1"}


def test_extracted_activations_equal_a_full_forward(alexnet):
    x = _input(alexnet, 96)
    expected = {}
    names = {"features.2": "pool1", "features.10": "conv5", "classifier.4": "fc7"}
    modules = dict(alexnet.net.named_modules())
    handles = [modules[p].register_forward_hook(lambda m, i, o, p=p: expected.__setitem__(p, o.clone()))
               for p in names]
    try:
        with torch.no_grad():
            logits = alexnet.net(x)
    finally:
        for h in handles:
            h.remove()
    feats = FeatureExtractor(alexnet, list(names.values()) + [LOGITS])(x)
    for path, alias in names.items():
        assert torch.equal(feats[alias], expected[path]), alias
    assert torch.allclose(feats[LOGITS], logits)


def test_logits_name_gives_the_network_output(tiny_model, pixels):
    x = tiny_model.normalize(pixels)
    feats = FeatureExtractor(tiny_model, [LOGITS])(x)
    assert torch.equal(feats[LOGITS], tiny_model.net(x))
    assert torch.equal(feats[LOGITS], tiny_model(pixels))


def test_hand_built_model_captures_conv_before_its_in_place_relu(tiny_model, pixels):
    feats = FeatureExtractor(tiny_model, ["conv1", "relu1"])(tiny_model.normalize(pixels))
    assert (feats["conv1"] < 0).any()  # not overwritten by the following (formerly in-place) ReLU
    assert torch.equal(feats["relu1"], feats["conv1"].clamp_min(0))


def test_no_parameter_gets_a_gradient(alexnet, tiny_model, pixels):
    for model, size in [(alexnet, 96), (tiny_model, 16)]:
        image = torch.rand(1, 3, size, size, requires_grad=True)
        feats = FeatureExtractor(model, ["conv1", "conv2", LOGITS])(model.normalize(image))
        sum(f.pow(2).sum() for f in feats.values()).backward()
        assert image.grad is not None and image.grad.abs().sum() > 0
        assert all(p.grad is None for p in model.net.parameters())


def _hooks(model: Model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.net.modules())


def test_hooks_are_removed_after_a_call_and_when_the_forward_raises(alexnet):
    assert _hooks(alexnet) == 0
    fx = FeatureExtractor(alexnet, ["conv2", "fc6"])
    fx(_input(alexnet, 96, batch=1))
    assert _hooks(alexnet) == 0
    with pytest.raises(RuntimeError):
        fx(torch.zeros(1, 5, 96, 96))  # wrong number of channels: conv1 raises
    assert _hooks(alexnet) == 0
    with pytest.raises(PreimageError, match="failed on a 20x20 image .*Output size is too small"):
        fx(torch.zeros(1, 3, 20, 20))  # too small: a pooling layer raises before fc6, said in one line
    assert _hooks(alexnet) == 0


def test_hooks_are_removed_when_a_hooked_module_itself_raises(tiny_model, pixels):
    class Boom(nn.Module):
        def forward(self, x):
            raise ValueError("boom")

    fx = FeatureExtractor(tiny_model, ["conv1", "conv2"])
    tiny_model.net.features[3] = Boom()  # conv2 is requested and raises
    with pytest.raises(ValueError, match="boom"):
        fx(tiny_model.normalize(pixels))
    assert _hooks(tiny_model) == 0


def test_module_called_twice_returns_the_last_call(resnet18):
    x = _input(resnet18, 64, batch=1)
    feats = FeatureExtractor(resnet18, ["layer1.0.relu", "layer1.0"])(x)
    assert torch.equal(feats["layer1.0.relu"], feats["layer1.0"])  # the block's output
    # and the first call (after bn1) is not what is returned
    first = FeatureExtractor(resnet18, ["layer1.0.bn1"])(x)["layer1.0.bn1"].clamp_min(0)
    assert not torch.equal(feats["layer1.0.relu"], first)


def test_extractor_keys_are_the_callers_names_and_shapes_known(alexnet):
    fx = FeatureExtractor(alexnet, ["fc6", "classifier.1", "pool5"])
    assert fx.names == ["fc6", "classifier.1", "pool5"]
    assert fx.shapes["fc6"] == (4096,) and fx.shapes["pool5"] == (256, 6, 6)
    with pytest.raises(PreimageError, match="no layer"):
        FeatureExtractor(alexnet, [])


def test_extractor_batch_elements_are_independent(alexnet):
    x = _input(alexnet, 96, batch=3)
    fx = FeatureExtractor(alexnet, ["conv4"])
    together = fx(x)["conv4"]
    alone = fx(x[1:2])["conv4"]
    assert torch.allclose(together[1:2], alone, atol=1e-5)


def test_embedded_model_stage_aliases_shapes_and_truncation(lite0):
    by_name = {i.name: i for i in list_layers(lite0)}
    expected = {"stem": ("bn1", (32, 112, 112)), "stage0": ("blocks.0", (16, 112, 112)),
                "stage3": ("blocks.3", (80, 14, 14)), "stage6": ("blocks.6", (320, 7, 7)),
                "head": ("bn2", (1280, 7, 7))}
    for alias, (path, shape) in expected.items():
        assert resolve_layer(lite0, alias) == path
        assert by_name[path].shape == shape and alias in by_name[path].aliases
    fired = []
    handle = lite0.net.blocks[3].register_forward_pre_hook(lambda *a: fired.append(1))
    try:
        feats = FeatureExtractor(lite0, ["stage2"])(lite0.normalize(torch.rand(1, 3, 64, 64)))
    finally:
        handle.remove()
    assert fired == [] and feats["stage2"].shape == (1, 40, 8, 8)


def test_a_layer_or_model_of_the_wrong_kind_is_refused_with_one_line(tiny_model):
    module = next(m for n, m in tiny_model.net.named_modules() if n)
    with pytest.raises(PreimageError, match="layer is given by its name"):
        resolve_layer(tiny_model, module)
    with pytest.raises(PreimageError, match="layer is given by its name"):
        parse_layer_spec(module)
    with pytest.raises(PreimageError, match="size must be a positive"):
        list_layers(tiny_model, -1)
    for call in (lambda net: list_layers(net), lambda net: resolve_layer(net, "x"),
                 lambda net: FeatureExtractor(net, "x")):
        with pytest.raises(PreimageError, match="not a bare .*preimage.load_model"):
            call(tiny_model.net)


def test_extractor_refuses_an_input_that_is_not_a_batch(tiny_model, pixels):
    fx = FeatureExtractor(tiny_model, LOGITS)
    with pytest.raises(PreimageError, match=r"B x C x H x W batch, not \(3, 16, 16\)"):
        fx(pixels[0])
