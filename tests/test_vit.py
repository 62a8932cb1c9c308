"""Vision Transformers on random-weight timm ViTs at small sizes: token layers read as patch grids
with class / distillation / register tokens apart, the MLP's GELU units, attention maps and rollout
against a hand computation, rollout saliency, augmentation ensembling (copies, per-copy jitter, colour
shift, noise), inversion and class visualization, timm options in the model name, and the CLI."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import preimage
from preimage.cli import main
from preimage.errors import PreimageError
from preimage.layers import FeatureExtractor, list_layers, resolve_layer
from preimage.models import load_model, parse_timm_spec, vit
from preimage.objectives import State, class_score, feature_loss
from preimage.transforms import color_shift, ensemble, gaussian_noise, jitter, repeat

# 32 x 32 input, 8 x 8 patches: a 4 x 4 grid and one class token; width 32, 2 blocks of 2 heads
TINY = "timm:vit_tiny_patch16_224,patch_size=8,embed_dim=32,depth=2,num_heads=2,num_classes=10"


@pytest.fixture(scope="module")
def tiny_vit():
    return load_model(TINY, weights="none", input_size=32)


@pytest.fixture(scope="module")
def reg_vit():
    """Two register tokens after the class token."""
    return load_model("timm:vit_tiny_patch16_224,patch_size=8,embed_dim=32,depth=1,num_heads=2,reg_tokens=2",
                      weights="none", input_size=32)


@pytest.fixture(scope="module")
def deit_distilled():
    return load_model("timm:deit_tiny_distilled_patch16_224,patch_size=8,embed_dim=32,depth=1,num_heads=2",
                      weights="none", input_size=32)


def _images(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# -- layers --------------------------------------------------------------------------------------

def test_token_layers_are_listed_as_patch_grids(tiny_vit):
    info = {i.name: i for i in list_layers(tiny_vit)}
    assert info["blocks.1"].shape == (32, 4, 4) and info["blocks.1"].tokens == "prefix"
    assert info["blocks.0.mlp.act"].shape == (128, 4, 4)  # 4 x 32 hidden units after the GELU
    assert info["blocks.0.attn.qkv"].shape == (96, 4, 4)
    assert info["blocks.1.cls"].shape == (32,) and info["blocks.1.cls"].kind == "ClassToken"
    assert info["norm.cls"].shape == (32,)
    assert info["patch_embed"].shape == (32, 4, 4)
    assert info["head"].shape == (10,) and not info["head"].tokens


def test_grid_holds_the_patch_tokens_row_by_row_and_cls_the_first_token(tiny_vit):
    fx = FeatureExtractor(tiny_vit, ["blocks.1", "blocks.1.cls", "blocks.1.tokens"])
    f = fx(tiny_vit.normalize(_images()))
    tokens = f["blocks.1.tokens"]
    assert tokens.shape == (2, 17, 32) and f["blocks.1"].shape == (2, 32, 4, 4)
    for i, j in [(0, 0), (0, 3), (2, 1), (3, 3)]:
        assert torch.equal(f["blocks.1"][:, :, i, j], tokens[:, 1 + 4 * i + j])
    assert torch.equal(f["blocks.1.cls"], tokens[:, 0])
    assert fx.shapes == {"blocks.1": (32, 4, 4), "blocks.1.cls": (32,), "blocks.1.tokens": (17, 32)}


def test_patch_embedding_grid_is_the_convolution_output(tiny_vit):
    f = FeatureExtractor(tiny_vit, ["patch_embed", "patch_embed.proj"])(tiny_vit.normalize(_images()))
    assert torch.equal(f["patch_embed"], f["patch_embed.proj"])


def test_mlp_act_is_the_gelu_of_the_first_mlp_layer(tiny_vit):
    f = FeatureExtractor(tiny_vit, ["blocks.0.mlp.fc1", "blocks.0.mlp.act"])(tiny_vit.normalize(_images()))
    assert torch.allclose(f["blocks.0.mlp.act"], F.gelu(f["blocks.0.mlp.fc1"]), atol=1e-6)
    assert f["blocks.0.mlp.act"].shape == (2, 128, 4, 4)


def test_register_tokens_are_read_apart(reg_vit):
    assert vit.token_layout(reg_vit.net).names == ("cls", "reg", "reg")
    f = FeatureExtractor(reg_vit, ["blocks.0", "blocks.0.reg", "blocks.0.cls", "blocks.0.tokens"])(
        reg_vit.normalize(_images()))
    tokens = f["blocks.0.tokens"]
    assert tokens.shape == (2, 19, 32)
    assert torch.equal(f["blocks.0.reg"], tokens[:, 1:3]) and torch.equal(f["blocks.0.cls"], tokens[:, 0])
    assert torch.equal(f["blocks.0"][:, :, 0, 0], tokens[:, 3])  # the grid starts after the registers
    assert {i.name: i.shape for i in list_layers(reg_vit)}["blocks.0.reg"] == (2, 32)


def test_deit_distillation_token_is_read_apart(deit_distilled):
    assert vit.token_layout(deit_distilled.net).names == ("cls", "dist")
    f = FeatureExtractor(deit_distilled, ["blocks.0.dist", "blocks.0.tokens", "blocks.0"])(
        deit_distilled.normalize(_images()))
    assert torch.equal(f["blocks.0.dist"], f["blocks.0.tokens"][:, 1])
    assert torch.equal(f["blocks.0"][:, :, 0, 0], f["blocks.0.tokens"][:, 2])


def test_views_that_do_not_exist_are_one_clear_error(tiny_vit):
    with pytest.raises(PreimageError, match="has no reg token"):
        FeatureExtractor(tiny_vit, ["blocks.0.reg"])
    with pytest.raises(PreimageError, match="has no cls token"):
        FeatureExtractor(tiny_vit, ["patch_embed.cls"])  # the patch embedding has no prefix tokens
    with pytest.raises(PreimageError, match="has no tokens"):
        FeatureExtractor(tiny_vit, ["head.cls"])
    with pytest.raises(PreimageError, match="did you mean"):
        resolve_layer(tiny_vit, "blocks.0.mlp.actt")
    # a misspelt token view gets the view itself as its suggestion
    with pytest.raises(PreimageError, match="did you mean 'blocks.1.cls'"):
        resolve_layer(tiny_vit, "blocks.1.clss")


def test_views_are_not_names_on_a_cnn(tiny_model):
    with pytest.raises(PreimageError, match="unknown layer"):
        resolve_layer(tiny_model, "features.0.cls")


def test_other_input_sizes_give_other_grids(tiny_vit):
    f = FeatureExtractor(tiny_vit, ["blocks.1", "blocks.1.cls"])(tiny_vit.normalize(_images(size=48)))
    assert f["blocks.1"].shape == (2, 32, 6, 6) and f["blocks.1.cls"].shape == (2, 32)
    f = FeatureExtractor(tiny_vit, ["blocks.1"])(tiny_vit.normalize(_images(size=28)))  # padded to 32
    assert f["blocks.1"].shape == (2, 32, 4, 4)


def test_a_torchvision_vit_with_random_weights_is_built_for_the_input_size_asked():
    model = load_model("vit_b_16", weights="none", input_size=64)
    assert model.input_size == 64 and model.net.image_size == 64
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1000)
    with pytest.raises(PreimageError, match="whole 16-pixel patches: not 60"):
        load_model("vit_b_16", weights="none", input_size=60)


def test_a_torchvision_vit_with_trained_weights_at_another_size_is_one_line_before_any_download(capsys):
    with pytest.raises(PreimageError, match="position embedding is for 224-pixel inputs, not 64"):
        load_model("vit_b_16", input_size=64)  # offline this would otherwise fail on the download
    assert main(["layers", "vit_b_16", "--input-size", "64"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "internal error" not in err and "224-pixel" in err


# -- attention and rollout -----------------------------------------------------------------------

def _hand_forward(net, x: torch.Tensor) -> list[np.ndarray]:
    """The attention probabilities of every block, written out from the weights (Vaswani et al.):
    softmax(q kᵀ / sqrt(d)) per head, with q, k, v from the block's qkv projection."""
    b = x.shape[0]
    tokens = net.patch_embed.proj(x).flatten(2).transpose(1, 2)
    tokens = torch.cat([net.cls_token.expand(b, -1, -1), tokens], 1) + net.pos_embed
    maps = []
    for blk in net.blocks:
        h = blk.norm1(tokens)
        heads, d = blk.attn.num_heads, blk.attn.head_dim
        qkv = (h @ blk.attn.qkv.weight.T + blk.attn.qkv.bias).reshape(b, -1, 3, heads, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = torch.softmax(q @ k.transpose(-2, -1) / d ** 0.5, -1)
        maps.append(a.detach().numpy().astype(np.float64))
        out = (a @ v).transpose(1, 2).reshape(b, -1, heads * d)
        tokens = tokens + blk.attn.proj(out)
        tokens = tokens + blk.mlp(blk.norm2(tokens))
    return maps


def test_attention_maps_match_a_hand_computation(tiny_vit):
    x = _images()
    with torch.no_grad():
        hand = _hand_forward(tiny_vit.net, tiny_vit.normalize(x))
        got = vit.attention_maps(tiny_vit, x)
    assert len(got) == 2 and got[0].shape == (2, 2, 17, 17)
    for a, h in zip(got, hand):
        np.testing.assert_allclose(a.numpy(), h, atol=1e-5)
    # the fused kernel is back on afterwards
    assert all(m.fused_attn == vit._attention_modules(tiny_vit.net)[0].fused_attn
               for m in vit._attention_modules(tiny_vit.net))


def test_rollout_matches_a_hand_computation(tiny_vit):
    x = _images()
    with torch.no_grad():
        hand = _hand_forward(tiny_vit.net, tiny_vit.normalize(x))
        grid = vit.rollout_map(tiny_vit, x, upsample=False)
    # Abnar & Zuidema 2020: Â = 0.5 mean_heads(A) + 0.5 I, rows renormalized; R = Â_2 Â_1
    rollout = None
    for a in hand:
        hat = 0.5 * a.mean(1) + 0.5 * np.eye(17)
        hat = hat / hat.sum(-1, keepdims=True)
        rollout = hat if rollout is None else np.einsum("bij,bjk->bik", hat, rollout)
    np.testing.assert_allclose(rollout.sum(-1), 1.0, atol=1e-9)
    expected = rollout[:, 0, 1:].reshape(2, 4, 4)  # the class token's row over the patch grid
    np.testing.assert_allclose(grid.numpy(), expected, atol=1e-5)
    up = vit.rollout_map(tiny_vit, x)
    assert up.shape == (2, 32, 32)
    assert torch.allclose(up, F.interpolate(grid[:, None], size=(32, 32), mode="bilinear", align_corners=False)[:, 0])


def test_rollout_of_identity_attention_is_the_identity():
    eye = torch.eye(5).expand(1, 3, 5, 5)
    assert torch.allclose(vit.attention_rollout([eye, eye, eye]), torch.eye(5))
    uniform = torch.full((1, 2, 4, 4), 0.25)
    r = vit.attention_rollout([uniform], residual=0.0)
    assert torch.allclose(r, torch.full((1, 4, 4), 0.25))


def test_rollout_saliency_method(tiny_vit, tiny_model):
    x = _images()
    res = preimage.saliency(tiny_vit, x, method=["vanilla", "rollout"])
    assert set(res.maps) == {"vanilla", "rollout"}
    assert res.maps["rollout"].shape == (2, 32, 32) and (res.maps["rollout"] >= 0).all()
    assert torch.allclose(res.maps["rollout"], vit.rollout_map(tiny_vit, x))
    with pytest.raises(PreimageError, match="needs a Vision Transformer"):
        preimage.saliency(tiny_model, torch.rand(1, 3, 16, 16), method="rollout")


# -- augmentation ensembling --------------------------------------------------------------------

def test_repeat_makes_copy_major_copies():
    x = torch.arange(2.0).view(2, 1, 1, 1).expand(2, 3, 4, 4)
    y = repeat(3)(x, torch.Generator())
    assert y.shape == (6, 3, 4, 4)
    assert y[:, 0, 0, 0].tolist() == [0, 1, 0, 1, 0, 1]


def test_per_image_jitter_draws_a_shift_per_copy():
    x = torch.zeros(1, 1, 9, 9)
    x[..., 4, 4] = 1
    y = jitter(3, per_image=True)(repeat(8)(x, torch.Generator()), torch.Generator().manual_seed(0))
    where = {tuple((y[i, 0] == 1).nonzero()[0].tolist()) for i in range(8)}
    assert len(where) > 1  # different copies, different shifts
    z = jitter(3)(repeat(8)(x, torch.Generator()), torch.Generator().manual_seed(0))
    assert len({tuple((z[i, 0] == 1).nonzero()[0].tolist()) for i in range(8)}) == 1  # one shift for all


def test_color_shift_is_an_affine_map_per_image_and_channel():
    zeros, ones = torch.zeros(4, 3, 2, 2), torch.ones(4, 3, 2, 2)
    mu = color_shift(0.5, 0.3)(zeros, torch.Generator().manual_seed(0))
    both = color_shift(0.5, 0.3)(ones, torch.Generator().manual_seed(0))
    sigma = both - mu
    assert (mu.abs() <= 0.5).all() and (sigma >= np.exp(-0.3) - 1e-6).all() and (sigma <= np.exp(0.3) + 1e-6).all()
    assert torch.equal(mu, mu[..., :1, :1].expand_as(mu))  # constant over space
    assert len(set(mu[:, :, 0, 0].flatten().tolist())) == 12  # one draw per image and channel


def test_gaussian_noise_has_the_asked_std_and_is_seeded():
    x = torch.zeros(2, 3, 64, 64)
    a = gaussian_noise(0.2)(x, torch.Generator().manual_seed(1))
    b = gaussian_noise(0.2)(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and abs(float(a.std()) - 0.2) < 0.01


def test_ensemble_is_empty_when_off_and_starts_with_the_copies():
    assert ensemble(1) == []
    ts = ensemble(4, jitter_pixels=2, shift=0.5, noise=0.1)
    assert len(ts) == 4
    assert ts[0](torch.zeros(2, 3, 8, 8), torch.Generator()).shape == (8, 3, 8, 8)


def test_objective_averages_each_image_over_its_copies():
    target = torch.randn(2, 4, 3, 3)
    feats = torch.randn(6, 4, 3, 3)  # 3 copies of 2 images
    state = State(image=torch.zeros(2, 3, 8, 8), input=torch.zeros(2, 3, 8, 8), features={"l": feats})
    rec = feature_loss("l", target).terms(state)["rec[l]"]
    per_copy = torch.stack([feature_loss("l", target).terms(
        State(image=torch.zeros(2, 3, 8, 8), input=torch.zeros(2, 3, 8, 8), features={"l": feats[2 * c:2 * c + 2]})
    )["rec[l]"] for c in range(3)])
    assert rec.shape == (2,) and torch.allclose(rec, per_copy.mean(0))
    logits = torch.randn(6, 5)
    s = State(image=torch.zeros(2, 3, 8, 8), input=torch.zeros(2, 3, 8, 8), features={"logits": logits})
    score = class_score([1, 3]).terms(s)["score"]
    expected = -torch.stack([logits[[0, 2, 4], 1].mean(), logits[[1, 3, 5], 3].mean()])
    assert torch.allclose(score, expected)


# -- tasks ---------------------------------------------------------------------------------------

def test_inversion_of_a_vit_block_lowers_its_feature_error(tiny_vit):
    inv = preimage.invert(tiny_vit, _images(1), layers=["blocks.0"], steps=30, preset="fast", lr=0.05)
    first, last = inv.history[0]["rec[blocks.0]"], inv.history[-1]["rec[blocks.0]"]
    assert inv.status == "done" and last < 0.5 * first


def test_inversion_with_augmentation_ensembling_runs_and_records_it(tiny_vit):
    inv = preimage.invert(tiny_vit, _images(1), layers=["blocks.1.cls", "blocks.0.mlp.act:0.5"], steps=8,
                          copies=3, color_shift=0.2, noise=0.05, jitter=2, jitter_until=0.5)
    assert inv.status == "done" and inv.config.copies == 3
    assert set(inv.metrics[0]["feature_error"]) == {"blocks.1.cls", "blocks.0.mlp.act"}
    with pytest.raises(PreimageError, match="copies"):
        preimage.invert(tiny_vit, _images(1), layers=["blocks.0"], steps=1, copies=0)


def test_class_visualization_raises_the_score_with_ensembling(tiny_vit):
    res = preimage.visualize_class(tiny_vit, [2, 7], steps=10, copies=3, color_shift=0.3, noise=0.05, jitter=2)
    assert res.image.shape == (2, 3, 32, 32)
    assert res.history[-1]["score"] < res.history[0]["score"]  # the score term is -S_c


def test_class_visualization_with_random_rescaling_and_another_size(tiny_vit):
    res = preimage.visualize_class(tiny_vit, 1, steps=3, size=40)  # fourier preset: rescales 0.9..1.1
    assert res.image.shape == (1, 3, 40, 40) and res.status == "done"


# -- models --------------------------------------------------------------------------------------

def test_timm_options_are_parsed_with_their_types():
    arch, kw = parse_timm_spec("vit_tiny_patch16_224, img_size=28,mlp_ratio=2.5,qkv_bias=false,global_pool=avg")
    assert arch == "vit_tiny_patch16_224"
    assert kw == {"img_size": 28, "mlp_ratio": 2.5, "qkv_bias": False, "global_pool": "avg"}
    with pytest.raises(PreimageError, match="KEY=VALUE"):
        parse_timm_spec("vit_tiny_patch16_224,depth")
    with pytest.raises(PreimageError, match="timm cannot build"):
        load_model("timm:vit_tiny_patch16_224,no_such_option=3", weights="none")


def test_model_name_gives_its_size_and_indexed_classes(tiny_vit):
    assert tiny_vit.input_size == 32 and tiny_vit.classes == tuple(f"class {i}" for i in range(10))
    assert tiny_vit.class_index("3") == 3
    m = load_model("timm:vit_tiny_patch16_224,patch_size=4,embed_dim=16,depth=1,num_heads=1,img_size=28",
                   weights="none")
    assert m.input_size == 28 and m.classes is not None and len(m.classes) == 1000


def test_outputs_equal_timms_own_fixed_size_model_with_the_same_weights(tiny_vit):
    """preimage builds ViTs that take any input size; at the model's own size nothing changes, so
    timm's pretrained weights behave as in timm."""
    import timm

    plain = timm.create_model("vit_tiny_patch16_224", patch_size=8, embed_dim=32, depth=2, num_heads=2,
                              num_classes=10, img_size=32).eval()
    plain.load_state_dict(tiny_vit.net.state_dict())
    x = tiny_vit.normalize(_images())
    with torch.no_grad():
        assert torch.allclose(plain(x), tiny_vit.net(x), atol=1e-6)


def test_a_weights_file_for_another_grid_is_resampled(tiny_vit, tmp_path):
    path = tmp_path / "vit.pth"
    torch.save({k: v.clone() for k, v in tiny_vit.net.state_dict().items()}, path)
    same = load_model(TINY, weights=str(path), input_size=32)
    x = _images()
    with torch.no_grad():
        assert torch.allclose(same(x), tiny_vit(x), atol=1e-5)
    bigger = load_model(TINY, weights=str(path), input_size=48)  # 6 x 6 grid, position embedding resampled
    assert bigger.net.pos_embed.shape == (1, 37, 32)
    with torch.no_grad():
        assert bigger(_images(size=48)).shape == (2, 10)


# -- CLI -----------------------------------------------------------------------------------------

def test_cli_layers_shows_grid_shapes_and_the_class_token(capsys):
    assert main(["layers", "timm:vit_tiny_patch16_224", "--weights", "none", "--filter", "blocks.11"]) == 0
    out = capsys.readouterr().out
    assert "14x14 grid of patch tokens" in out
    rows = {line.split()[0]: line.split()[-1] for line in out.splitlines()[2:] if line.strip()}
    assert rows["blocks.11"] == "192x14x14" and rows["blocks.11.mlp.act"] == "768x14x14"
    assert rows["blocks.11.cls"] == "192"


def test_cli_saliency_rollout_and_dream_with_ensembling(tmp_path, capsys):
    common = ["--model", TINY, "--weights", "none", "--input-size", "32", "--quiet"]
    assert main(["saliency", "sample:chelsea", "--method", "rollout,vanilla", "-o", str(tmp_path / "s"), *common]) == 0
    line = capsys.readouterr().out.splitlines()[0]  # a model without class names: its index, said once
    assert re.fullmatch(r"chelsea: class \d+ \(p=[0-9.]+\)", line), line
    manifest = json.loads((tmp_path / "s" / "saliency.json").read_text())
    assert manifest["methods"] == ["rollout", "vanilla"]
    assert (tmp_path / "s" / "chelsea_rollout_overlay.png").is_file()
    code = main(["dream", "--class", "3", "--steps", "3", "--copies", "2", "--color-shift", "0.5", "--noise", "0.1",
                 "--jitter", "1", "-o", str(tmp_path / "d"), *common])
    assert code in (0, 1)  # 1: three steps did not make class 3 the top-1 of a random network
    assert (tmp_path / "d" / "0003_class_3.png").is_file()
    capsys.readouterr()
    assert main(["saliency", "sample:chelsea", "--method", "rollout", "-o", str(tmp_path / "c"), "--quiet",
                 "--model", "alexnet", "--weights", "none"]) == 2
    assert "needs a Vision Transformer" in capsys.readouterr().err


def test_depth_sweep_picks_blocks_of_a_vit():
    from preimage.sweep import _depth_layers

    picks = _depth_layers("timm:vit_tiny_patch16_224,patch_size=8,embed_dim=32,depth=4,num_heads=2,img_size=32")
    assert [p for p, _ in picks] == ["blocks.0", "blocks.2", "blocks.3", "blocks.2+blocks.3"]


def test_cli_fool_and_style_run_on_a_vit(tmp_path):
    common = ["--model", TINY, "--weights", "none", "--input-size", "32", "--quiet"]
    code = main(["fool", "sample:chelsea", "--target", "5", "--max-steps", "3", "-o", str(tmp_path / "f"), *common])
    assert code in (0, 1)  # 1: three steps were not enough to reach the target
    assert main(["style", "sample:chelsea", "sample:brick", "--content-layer", "blocks.1",
                 "--style-layers", "blocks.0+blocks.1", "--steps", "3", "--image-size", "32", "--style-size", "32",
                 "-o", str(tmp_path / "s"), *common]) == 0
    assert any((tmp_path / "s").glob("*.png"))
