"""The model zoo: the embedded EfficientNet-Lite (real weights, offline), torchvision and timm models,
--weights default/none/PATH, preprocessing, class names, freezing."""
from __future__ import annotations

import urllib.error

import pytest
import torch
from torch import nn

from preimage.errors import PreimageError
from preimage.images import load_tensor
from preimage.models import (
    DEFAULT_MODEL, IMAGENET_MEAN, IMAGENET_STD, Model, efficientnet_lite, imagenet_classes, list_models,
    load_model,
)
from preimage.tasks.classify import classify, predict

CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


# -- the embedded model ------------------------------------------------------------------------

def test_embedded_model_classifies_coffee_and_chelsea(lite0):
    assert lite0.name == DEFAULT_MODEL and lite0.input_size == 224
    x = torch.cat([load_tensor("sample:coffee", 224), load_tensor("sample:chelsea", 224)])
    coffee, chelsea = classify(lite0, x, top=3)
    assert coffee[0][1] == "espresso" and coffee[0][2] > 0.5
    assert chelsea[0][1] == "Egyptian cat"
    assert {name for _, name, _ in chelsea} <= CAT_CLASSES


def test_classify_takes_sources_and_refuses_a_bad_top(lite0):
    pixels = load_tensor("sample:coffee", lite0.input_size)
    want = classify(lite0, pixels, top=2)
    assert classify(lite0, "sample:coffee", top=2) == want
    assert classify(lite0, ["sample:coffee"], top=2) == want
    with pytest.raises(PreimageError, match="top must be a positive"):
        classify(lite0, pixels, top=0)
    with pytest.raises(PreimageError, match=r"\[0, 1\]"):
        classify(lite0, pixels * 255)


def test_embedded_model_prefers_its_own_normalization(lite0):
    x = load_tensor("sample:coffee", lite0.input_size)
    espresso = lite0.class_index("espresso")
    own = float(predict(lite0, x)[0, espresso])
    imagenet = Model(name="lite0-imagenet-norm", net=lite0.net, input_size=224, mean=IMAGENET_MEAN,
                     std=IMAGENET_STD, classes=lite0.classes)
    other = float(predict(imagenet, x)[0, espresso])
    assert lite0.mean == lite0.std == (0.5, 0.5, 0.5)
    assert own > other + 0.05, (own, other)


def test_embedded_weights_work_offline_and_are_listed_so(lite0):
    infos = {m.name: m for m in list_models()}
    assert infos[DEFAULT_MODEL].offline and infos[DEFAULT_MODEL].source == "embedded"
    assert lite0.weights == "embedded"


def test_key_translation_covers_every_tensor_with_matching_shapes():
    import timm

    source = torch.load(efficientnet_lite.weights_path("efficientnet_lite0"), map_location="cpu", weights_only=True)
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    out = efficientnet_lite.translate_state_dict(source, net)
    target = net.state_dict()
    assert set(out) == set(target)
    assert len(out) == len(source)
    assert all(out[k].shape == target[k].shape for k in target)
    # one to one: every source tensor is used exactly once
    assert sorted(id(v) for v in out.values()) == sorted(id(v) for v in source.values())

    bad_key = dict(source)
    bad_key["_blocks.0._squeeze.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="no rule"):
        efficientnet_lite.translate_state_dict(bad_key, net)
    bad_shape = dict(source)
    bad_shape["_conv_stem.weight"] = torch.zeros(32, 3, 5, 5)
    with pytest.raises(ValueError, match="shape"):
        efficientnet_lite.translate_state_dict(bad_shape, net)
    missing = dict(source)
    del missing["_fc.bias"]
    with pytest.raises(ValueError, match="do not cover"):
        efficientnet_lite.translate_state_dict(missing, net)


@pytest.mark.parametrize("variant", ["efficientnet_lite1", "efficientnet_lite2"])
def test_larger_lite_variants_load_and_classify_coffee(variant):
    if efficientnet_lite.weights_path(variant) is None:
        pytest.skip(f"{variant} weights package not installed")
    model = load_model(variant)
    assert model.input_size == efficientnet_lite.VARIANTS[variant][2]
    rows = classify(model, load_tensor("sample:coffee", model.input_size), top=1)
    assert rows[0][0][1] == "espresso"


def test_embedded_model_random_init_differs_from_default(lite0):
    rnd = load_model("efficientnet_lite0", weights="none")
    assert rnd.weights == "none"
    a, b = lite0.net.state_dict(), rnd.net.state_dict()
    assert not torch.equal(a["conv_stem.weight"], b["conv_stem.weight"])


def test_embedded_model_accepts_its_own_package_file_as_weights_path(lite0):
    path = efficientnet_lite.weights_path("efficientnet_lite0")
    model = load_model("efficientnet_lite0", weights=str(path))
    for k, v in lite0.net.state_dict().items():
        assert torch.equal(v, model.net.state_dict()[k]), k


# -- torchvision / timm ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["alexnet", "vgg16", "resnet18", "squeezenet1_1", "mobilenet_v2"])
def test_random_init_torchvision_models_run(name, request):
    fixture = {"alexnet": "alexnet", "vgg16": "vgg16", "resnet18": "resnet18"}.get(name)
    model = request.getfixturevalue(fixture) if fixture else load_model(name, weights="none", input_size=64)
    assert model.weights == "none"
    assert model.mean == IMAGENET_MEAN and model.std == IMAGENET_STD
    assert model.classes == imagenet_classes() and len(model.classes) == 1000
    size = 64 if name != "alexnet" else 96
    with torch.no_grad():
        logits = model(torch.rand(2, 3, size, size))
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()


def test_loaded_models_are_frozen_in_eval_mode_without_inplace_ops(alexnet):
    assert not alexnet.net.training
    assert not any(p.requires_grad for p in alexnet.net.parameters())
    assert not any(getattr(m, "inplace", False) for m in alexnet.net.modules())


def test_hand_built_model_is_frozen_too(tiny_model):
    assert not tiny_model.net.training
    assert not any(p.requires_grad for p in tiny_model.net.parameters())
    assert not any(getattr(m, "inplace", False) for m in tiny_model.net.modules())


def test_input_size_override():
    model = load_model("squeezenet1_1", weights="none", input_size=96)
    assert model.input_size == 96
    with pytest.raises(PreimageError, match="too small"):
        load_model("squeezenet1_1", weights="none", input_size=8)


def test_an_input_size_too_small_for_the_network_is_refused_with_one_line():
    # inception_v3 at 64 px: a 3 x 3 kernel meets a 2 x 2 map (the CLI called it an internal error)
    with pytest.raises(PreimageError, match="input size 64 is too small for inception_v3") as err:
        load_model("inception_v3", weights="none", input_size=64)
    assert "\n" not in str(err.value)
    assert load_model("inception_v3", weights="none", input_size=80).input_size == 80


def test_timm_model_with_random_init():
    model = load_model("timm:resnet18", weights="none")
    assert model.name == "timm:resnet18" and model.input_size == 224
    assert model.classes is not None and len(model.classes) == 1000
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1000)


def test_a_timm_model_built_for_grey_input_reports_one_channel():
    model = load_model("timm:resnet18,in_chans=1", weights="none", input_size=64)
    assert model.channels == 1 and len(model.mean) == len(model.std) == 1
    assert model.mean[0] == pytest.approx(sum((0.485, 0.456, 0.406)) / 3, abs=1e-3)
    with torch.no_grad():
        assert model(torch.rand(2, 1, 64, 64)).shape == (2, 1000)
    with pytest.raises(PreimageError, match="not in_chans=4"):
        load_model("timm:resnet18,in_chans=4", weights="none")


def test_unknown_timm_model_suggests():
    with pytest.raises(PreimageError, match="unknown timm model.*did you mean 'resnet18'"):
        load_model("timm:resnet18x", weights="none")


def test_unknown_model_suggests_the_closest():
    with pytest.raises(PreimageError, match="did you mean 'alexnet'") as info:
        load_model("alexnt", weights="none")
    assert "\n" not in str(info.value)
    with pytest.raises(PreimageError, match="efficientnet_lite0"):
        load_model("efficientnet_lite", weights="none")


# -- --weights PATH ------------------------------------------------------------------------------

def test_weights_path_loads_a_saved_state_dict(tmp_path):
    torch.manual_seed(3)
    src = load_model("squeezenet1_1", weights="none")
    path = tmp_path / "sq.pth"
    torch.save(src.net.state_dict(), path)
    model = load_model("squeezenet1_1", weights=str(path))
    assert model.weights == str(path)
    for k, v in src.net.state_dict().items():
        assert torch.equal(v, model.net.state_dict()[k])
    # a checkpoint that wraps the state_dict is accepted too
    torch.save({"state_dict": src.net.state_dict(), "epoch": 3}, tmp_path / "ckpt.pth")
    load_model("squeezenet1_1", weights=str(tmp_path / "ckpt.pth"))


def test_weights_path_mismatch_names_missing_and_unexpected_keys(tmp_path):
    state = load_model("squeezenet1_1", weights="none").net.state_dict()
    del state["classifier.1.bias"]
    state["head.weight"] = torch.zeros(3)
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(PreimageError) as info:
        load_model("squeezenet1_1", weights=str(path))
    msg = str(info.value)
    assert "missing keys: classifier.1.bias" in msg
    assert "unexpected keys: head.weight" in msg
    assert "\n" not in msg


def test_weights_path_wrong_shape_is_named(tmp_path):
    state = load_model("squeezenet1_1", weights="none").net.state_dict()
    state["features.0.weight"] = torch.zeros(1, 3, 3, 3)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(PreimageError, match=r"features.0.weight has shape \(1, 3, 3, 3\)"):
        load_model("squeezenet1_1", weights=str(tmp_path / "shape.pth"))


def test_weights_path_refuses_garbage_missing_files_and_pickled_objects(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(PreimageError, match="is not a PyTorch weights file"):
        load_model("squeezenet1_1", weights=str(tmp_path / "junk.pth"))
    with pytest.raises(PreimageError, match="not found"):
        load_model("squeezenet1_1", weights=str(tmp_path / "absent.pth"))
    torch.save(nn.Linear(2, 2), tmp_path / "module.pth")  # a pickled module: refused by weights_only
    with pytest.raises(PreimageError, match="pickled Python objects"):
        load_model("squeezenet1_1", weights=str(tmp_path / "module.pth"))


# -- --weights default, offline ------------------------------------------------------------------

@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and an empty hub cache, whether or not this machine is online."""
    import torchvision.models._api as tv_api

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


def test_default_weights_offline_fail_in_one_line_pointing_to_path_and_embedded(offline):
    with pytest.raises(PreimageError) as info:
        load_model("squeezenet1_1")
    msg = str(info.value)
    assert "\n" not in msg
    assert "--weights PATH" in msg and DEFAULT_MODEL in msg


def test_default_weights_offline_via_cli(offline, capsys):
    from preimage.cli import main

    code = main(["classify", "sample:coffee", "--model", "squeezenet1_1"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "--weights PATH" in err and "Traceback" not in err


def test_models_lists_torchvision_as_not_offline_without_cache(offline):
    infos = {m.name: m for m in list_models()}
    assert not infos["alexnet"].offline and infos["alexnet"].source == "torchvision"
    assert infos["inception_v3"].input_size == 299


# -- classes -------------------------------------------------------------------------------------

def test_class_index_by_name_index_and_fuzzy(lite0):
    assert lite0.class_index("espresso") == 967
    assert lite0.class_index(76) == lite0.class_index("76") == lite0.class_index("Tarantula") == 76
    with pytest.raises(PreimageError, match="did you mean 'espresso'"):
        lite0.class_index("espreso")
    with pytest.raises(PreimageError, match="ambiguous"):
        lite0.class_index("cat")
    with pytest.raises(PreimageError, match="out of range"):
        lite0.class_index(1000)


def test_normalize_and_denormalize_are_inverse(alexnet):
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(alexnet.denormalize(alexnet.normalize(x)), x, atol=1e-6)
    n = alexnet.normalize(torch.ones(1, 3, 1, 1))
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(n.flatten(), expected)


def test_tasks_refuse_a_bare_network_or_a_name_for_the_model(tiny_model, pixels):
    import preimage

    calls = [
        lambda m: preimage.classify(m, pixels),
        lambda m: preimage.saliency(m, pixels),
        lambda m: preimage.fool(m, pixels, max_steps=1),
        lambda m: preimage.invert(m, pixels, layers="x", steps=1),
        lambda m: preimage.visualize_class(m, 0, steps=1),
        lambda m: preimage.visualize_objective(m, "x:0", steps=1),
        lambda m: preimage.deep_dream(m, pixels[:1], layer="x", steps=1),
        lambda m: preimage.channel_atlas(m, "x", [0], steps=1),
        lambda m: preimage.stylize(m, pixels[0], pixels[1], steps=1),
    ]
    for call in calls:
        with pytest.raises(PreimageError, match="not a bare"):
            call(tiny_model.net)
        with pytest.raises(PreimageError, match=r"from preimage.load_model\), not str"):
            call("efficientnet_lite0")


def test_an_unknown_or_unavailable_device_is_one_preimage_error():
    with pytest.raises(PreimageError, match="unknown device 'gpu0'"):
        load_model("alexnet", weights="none", device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(PreimageError, match="CUDA is not available"):
            load_model("alexnet", weights="none", device="cuda")


def test_a_download_of_weights_is_announced(monkeypatch):
    import torchvision

    import preimage.models as M
    from preimage.errors import PreimageWarning

    get_model = torchvision.models.get_model
    monkeypatch.setattr(M, "_torchvision_cached", lambda name: False)
    monkeypatch.setattr(torchvision.models, "get_model", lambda name, weights=None, **kw: get_model(name))
    with pytest.warns(PreimageWarning, match="downloaded the weights of alexnet from https://"):
        load_model("alexnet")
