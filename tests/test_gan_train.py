"""GAN training on scikit-learn's digits through preimage.train.fit: exact resume, the CLI
(`preimage gan train|sample|interpolate`), bad input, and GAN inversion (`preimage invert --model gan:`)."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from preimage import gan
from preimage.cli import main
from preimage.data import ImageData, load_data
from preimage.errors import PreimageError
from preimage.gan.task import GanTask, gan_config
from preimage.params import Latent
from preimage.train import fit


@pytest.fixture(scope="module")
def digits() -> ImageData:
    d = load_data("digits")
    return ImageData(d.images[:256], d.labels[:256], d.classes, "digits")


def small_task(data: ImageData, **kw) -> GanTask:
    cfg = gan_config(data="digits", arch=kw.pop("arch", "fc"), batch_size=kw.pop("batch_size", 64), grid=4, **kw)
    return GanTask(data, cfg)


def weights(task: GanTask) -> dict[str, torch.Tensor]:
    return {f"{m}.{k}": v.clone() for m, mod in task.modules().items() for k, v in mod.state_dict().items()}


@pytest.mark.parametrize("arch", ["fc", "dc"])
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, digits, arch):
    size = {"batch_size": 64} if arch == "fc" else {"batch_size": 16}
    data = ImageData(digits.images[:128], None, None, "digits") if arch == "fc" else \
        ImageData(digits.images[:32], None, None, "digits")
    straight = small_task(data, arch=arch, **size)
    assert fit(straight, tmp_path / "a", epochs=2, seed=3).status == "done"

    first = small_task(data, arch=arch, **size)
    calls = {"n": 0}
    step = first.train_step

    def dies_in_epoch_two(batch, g):
        calls["n"] += 1
        if calls["n"] == first.num_batches() + 1:  # the first step of epoch 2: Ctrl-C / kill
            raise KeyboardInterrupt
        return step(batch, g)

    first.train_step = dies_in_epoch_two
    res = fit(first, tmp_path / "b", epochs=2, seed=3)
    assert res.status == "interrupted" and res.epochs_done == 1
    again = small_task(data, arch=arch, **size)  # a new process: fresh networks, state from the checkpoint
    assert fit(again, tmp_path / "b", epochs=2, seed=3).status == "done"
    a, b = weights(straight), weights(again)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_initial_weights_follow_the_init_seed(digits):
    a, b, c = small_task(digits), small_task(digits), small_task(digits, init_seed=1)
    assert torch.equal(a.G[0].weight, b.G[0].weight) and torch.equal(a.D.body[1].weight, b.D.body[1].weight)
    assert not torch.equal(a.G[0].weight, c.G[0].weight)


def test_a_training_step_moves_both_networks_and_reports_both_losses(digits):
    task = small_task(digits, loss="ls")
    g0, d0 = task.G[0].weight.clone(), task.D.body[1].weight.clone()
    batch = next(iter(task.batches(1, torch.Generator().manual_seed(0))))
    assert batch.min() >= -1 and batch.max() <= 1 and batch.min() < -0.9  # images scaled to [-1, 1]
    losses = task.train_step(batch, torch.Generator().manual_seed(0))
    assert set(losses) == {"D", "G"} and all(math.isfinite(v) for v in losses.values())
    assert not torch.equal(g0, task.G[0].weight) and not torch.equal(d0, task.D.body[1].weight)


def test_settings_out_of_range_are_refused():
    with pytest.raises(PreimageError, match="unknown loss 'wgan'"):
        gan_config(loss="wgan")
    with pytest.raises(PreimageError, match="beta1 must be in"):
        gan_config(beta1=1.5)
    with pytest.raises(PreimageError, match="fewer than one batch"):
        GanTask(ImageData(torch.zeros(5, 1, 28, 28, dtype=torch.uint8), None, None, "x"), gan_config())


def test_a_misspelt_keyword_of_train_is_named_with_its_did_you_mean_before_the_data_loads(tmp_path):
    from preimage import gan

    with pytest.raises(PreimageError, match=r"unknown setting 'epochz' for GAN training \(did you mean 'epochs'"):
        gan.train(out=tmp_path / "g", data="no-such-data", epochz=1)
    with pytest.raises(PreimageError, match=r"unknown setting 'batchsize' for GAN training \(did you mean 'batch_size'"):
        gan.train(out=tmp_path / "g", data="no-such-data", batchsize=8)
    assert not (tmp_path / "g").exists()


def _png(path, size, grey=True):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (size, size) if grey else (size, size, 3), dtype=np.uint8)
    Image.fromarray(a).save(path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("gan") / "run"
    assert main(["gan", "train", "--data", "digits", "--arch", "fc", "--loss", "ls", "--epochs", "1",
                 "--out", str(out), "-q"]) == 0
    return out


def test_cli_train_writes_checkpoint_curves_samples_and_manifest(trained):
    import json

    for name in ("checkpoint.pt", "history.json", "losses.png", "manifest.json", "samples.png",
                 "samples/epoch_001.png"):
        assert (trained / name).is_file(), name
    manifest = json.loads((trained / "manifest.json").read_text())
    assert manifest["kind"] == "gan" and manifest["config"]["loss"] == "ls" and manifest["config"]["lr"] == 1e-3
    assert manifest["status"] == "done"


def test_cli_train_with_the_dcgan_preset_records_its_settings(tmp_path):
    import json

    out = tmp_path / "run"
    assert main(["gan", "train", "--data", "digits", "--arch", "fc", "--preset", "dcgan", "--epochs", "1",
                 "--out", str(out), "-q"]) == 0
    config = json.loads((out / "manifest.json").read_text())["config"]
    assert (config["lr"], config["init"], config["beta1"]) == (2e-4, "normal", 0.5)


def test_cli_train_resumes_to_more_epochs_and_refuses_other_settings(trained, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    assert main(["gan", "train", "--data", "digits", "--arch", "fc", "--loss", "ls", "--epochs", "2",
                 "--out", str(run), "-q"]) == 0
    assert (run / "samples" / "epoch_002.png").is_file()
    capsys.readouterr()
    assert main(["gan", "train", "--data", "digits", "--arch", "fc", "--loss", "ls", "--epochs", "2",
                 "--out", str(run), "-q"]) == 0  # done already: says so, and does not claim to have trained
    out = capsys.readouterr().out
    assert "nothing to do" in out and "trained" not in out and f"checkpoint {run / 'checkpoint.pt'}" in out
    assert main(["gan", "train", "--data", "digits", "--arch", "fc", "--loss", "vanilla", "--epochs", "2",
                 "--out", str(run), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "other settings (loss: 'ls' there, 'vanilla' now)" in err and "\n" not in err


def test_cli_sample_and_interpolate_write_grids(trained, tmp_path, capsys):
    assert main(["gan", "sample", str(trained), "--n", "16", "--out", str(tmp_path / "s.png")]) == 0
    assert Image.open(tmp_path / "s.png").size == (4 * 30 + 2, 4 * 30 + 2)
    assert main(["gan", "interpolate", str(trained / "checkpoint.pt"), "--rows", "2", "--steps", "5",
                 "--out", str(tmp_path / "i.png")]) == 0
    assert Image.open(tmp_path / "i.png").size == (5 * 30 + 2, 2 * 30 + 2)
    assert main(["gan", "sample", str(trained), "--out", str(tmp_path / "s.png")]) == 2  # exists, no --force


def test_samples_are_seeded_and_interpolation_ends_at_the_two_noises(trained):
    G, cfg = gan.load_generator(trained)
    a, b = gan.sample(G, 4, noise_dim=cfg.noise_dim, seed=5), gan.sample(G, 4, noise_dim=cfg.noise_dim, seed=5)
    assert torch.equal(a, b) and a.shape == (4, 1, 28, 28) and 0 <= a.min() and a.max() <= 1
    strip = gan.interpolate(G, noise_dim=cfg.noise_dim, steps=3, rows=1, seed=0)
    g = torch.Generator().manual_seed(0)
    za, zb = gan.sample_noise(1, cfg.noise_dim, g), gan.sample_noise(1, cfg.noise_dim, g)
    with torch.no_grad():
        ends = (G(torch.cat([za, (za + zb) / 2, zb])) + 1) / 2
    assert torch.allclose(strip, ends, atol=1e-6)


@pytest.mark.parametrize("argv,message", [
    (["--data", "no/such/folder"], "no data set or folder 'no/such/folder'"),
    (["--data", "digit"], "did you mean 'digits'"),
])
def test_cli_train_refuses_bad_data_in_one_line(tmp_path, capsys, argv, message):
    assert main(["gan", "train", *argv, "--out", str(tmp_path / "o"), "-q"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_cli_train_refuses_an_idx_folder_with_a_wrong_magic_number(tmp_path, capsys):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x01" + bytes(10))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + bytes(8))
    assert main(["gan", "train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "1-dimensional" in err and "expected 3" in err and err.count("\n") == 1


def test_a_diverged_run_exits_1_and_writes_no_checkpoint(tmp_path, capsys, monkeypatch):
    from preimage.gan import task as task_module

    nan = lambda *scores: scores[0].sum() * float("nan")  # noqa: E731
    monkeypatch.setitem(task_module.LOSSES, "vanilla", (nan, nan))
    assert main(["gan", "train", "--data", "digits", "--arch", "fc", "--epochs", "1", "--out", str(tmp_path / "o"),
                 "-q"]) == 1
    err = capsys.readouterr().err
    assert "diverged" in err and "the D loss became nan at epoch 1, step 1" in err and err.count("\n") == 1
    assert not (tmp_path / "o" / "checkpoint.pt").exists()


def test_a_checkpoint_of_another_kind_or_architecture_is_refused(trained, tmp_path, capsys):
    ckpt = torch.load(trained / "checkpoint.pt", weights_only=True)
    ckpt["config"]["arch"] = "dc"
    torch.save(ckpt, tmp_path / "dc.pt")
    with pytest.raises(PreimageError, match="do not fit the dc architecture"):
        gan.load_generator(tmp_path / "dc.pt")
    ckpt["kind"] = "caption"
    torch.save(ckpt, tmp_path / "cap.pt")
    assert main(["gan", "sample", str(tmp_path / "cap.pt"), "--out", str(tmp_path / "x.png")]) == 2
    assert "holds a 'caption' model, not a 'gan' one" in capsys.readouterr().err


def test_inversion_finds_the_noise_of_a_generated_image():
    # a generator whose images change a lot with z: a random linear map through tanh
    torch.manual_seed(0)
    G = torch.nn.Sequential(torch.nn.Linear(96, 784), torch.nn.Tanh(), torch.nn.Unflatten(1, (1, 28, 28)))
    cfg = gan_config(arch="fc")
    z = gan.sample_noise(3, 96, torch.Generator().manual_seed(42))
    with torch.no_grad():
        target = (G(z) + 1) / 2
    inv = gan.invert((G, cfg), target, steps=60, lr=0.1, decay_steps=(45,), restarts=2, seed=0)
    start = gan.invert((G, cfg), target, steps=0, restarts=1, seed=0)
    assert inv.image.shape == (3, 3, 28, 28)
    assert max(m["mae"] for m in inv.metrics) < 0.2 * min(m["mae"] for m in start.metrics)
    assert all(m["psnr"] > 30 for m in inv.metrics)
    assert all(len(m["z"]) == 96 and max(map(abs, m["z"])) <= 1 for m in inv.metrics)


def test_the_starting_codes_are_not_the_codes_gan_sample_draws_with_the_same_seed():
    torch.manual_seed(0)
    G = torch.nn.Sequential(torch.nn.Linear(96, 784), torch.nn.Tanh(), torch.nn.Unflatten(1, (1, 28, 28)))
    cfg = gan_config(arch="fc")
    images = gan.sample(G, 2, noise_dim=96, seed=0)
    start = gan.invert((G, cfg), images, steps=0, restarts=1, seed=0)
    drawn = gan.sample_noise(2, 96, torch.Generator().manual_seed(0))
    assert not torch.allclose(torch.tensor([m["z"] for m in start.metrics]), drawn)
    assert max(m["psnr"] for m in start.metrics) < 30  # image 0 is not found before the search begins
    from preimage.gan.inversion import START_STREAM

    same = gan.invert((G, cfg), images, steps=0, restarts=1, seed=-START_STREAM)  # seed 0's stream itself
    assert torch.allclose(torch.tensor([m["z"] for m in same.metrics]), drawn, atol=1e-6)


def test_gan_inversion_moves_its_lr_drop_with_the_users_steps():
    G = torch.nn.Sequential(torch.nn.Linear(96, 784), torch.nn.Tanh(), torch.nn.Unflatten(1, (1, 28, 28)))
    cfg = gan_config(arch="fc")
    target = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    assert gan.invert((G, cfg), target, steps=6, restarts=1).config.decay_steps == (4,)  # 200 of 300
    assert gan.invert((G, cfg), target, steps=6, restarts=1, decay_steps=(5,)).config.decay_steps == (5,)
    assert gan.invert((G, cfg), target, steps=6, restarts=1, decay_steps=()).config.decay_steps == ()


def test_the_latent_parameterization_keeps_z_in_its_box():
    decode = torch.nn.Linear(2, 3)
    p = Latent(decode, torch.tensor([[3.0, -0.5]]), bounds=(-1.0, 1.0))
    assert p.z.tolist() == [[1.0, -0.5]] and not any(q.requires_grad for q in decode.parameters())
    assert [q for q in p.parameters() if q.requires_grad] == [p.z]


def test_cli_invert_with_a_gan_model_writes_the_usual_files(trained, tmp_path, capsys):
    img = _png(tmp_path / "digit.png", 28)
    out = tmp_path / "inv"
    assert main(["invert", str(img), "--model", f"gan:{trained}", "--steps", "20", "--out", str(out), "-q"]) == 0
    assert "digit: per-pixel error" in capsys.readouterr().out
    for name in ("digit.png", "digit_compare.png", "manifest.json", "history.json"):
        assert (out / name).is_file()
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == f"gan:{trained}" and manifest["config"]["steps"] == 20


def test_an_image_of_another_size_is_resized_and_a_tensor_refused(trained, tmp_path, capsys):
    img = _png(tmp_path / "big.png", 32, grey=False)
    out = tmp_path / "o"
    assert main(["invert", str(img), "--model", f"gan:{trained}", "--steps", "2", "--out", str(out), "-q"]) == 0
    assert Image.open(out / "big.png").size == (28, 28)
    with pytest.raises(PreimageError, match="the image0 tensor is 32x32 but the generator makes 28x28 images"):
        gan.invert(trained, torch.rand(1, 1, 32, 32), steps=1)
    assert main(["invert", str(img), "--model", f"gan:{tmp_path / 'none'}", "--out", str(tmp_path / "o")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_sigterm_stops_training_like_ctrl_c_and_the_run_resumes(tmp_path, capsys, monkeypatch):
    import os
    import signal

    from preimage.gan import task as task_module

    real_step = task_module.GanTask.train_step
    calls = {"n": 0}

    def step(self, batch, g):
        calls["n"] += 1
        if calls["n"] == 3:  # the first step of epoch 2 (two batches of 512 an epoch): `kill PID`
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, batch, g)

    monkeypatch.setattr(task_module.GanTask, "train_step", step)
    argv = ["gan", "train", "--data", "digits", "--arch", "fc", "--batch-size", "512", "--epochs", "2",
            "--out", str(tmp_path / "o"), "-q"]
    before = signal.getsignal(signal.SIGTERM)  # not SIG_DFL after another test started Ray in this process
    assert main(argv) == 143
    assert "rerun the same command to resume after epoch 1" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before  # restored
    assert main(argv) == 0 and (tmp_path / "o" / "samples" / "epoch_002.png").is_file()


# -- scoring: gan classifier / gan score ---------------------------------------------------------------

@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    out = tmp_path_factory.mktemp("lenet") / "run"
    assert main(["gan", "classifier", "--data", "digits", "--epochs", "1", "--out", str(out), "-q"]) == 0
    return out


def test_cli_score_gives_fd_lenet_kid_and_the_class_histogram(trained, lenet, tmp_path, capsys):
    import json

    from preimage import gan
    from preimage.data import load_data
    from preimage.gan.score import frechet_kid

    out = tmp_path / "score.json"
    capsys.readouterr()
    assert main(["gan", "score", str(trained), "--classifier", str(lenet), "--n", "300", "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    r = json.loads(out.read_text())["lenet"]
    assert f"FD-LeNet {r['fd']:.3f}" in printed and "class shares" in printed
    assert sum(r["class_histogram"]) == pytest.approx(1.0, abs=1e-3) and r["test_accuracy"] > 0.5
    # the same numbers as the statistics computed by hand from the same samples and real subset
    net, _ = gan.load_classifier(lenet)
    G, cfg = gan.load_generator(trained)
    pixels = load_data("digits", split="train").pixels()
    real = pixels[torch.randperm(len(pixels), generator=torch.Generator().manual_seed(1))[:300]]
    fake = gan.sample(G, 300, noise_dim=cfg.noise_dim, seed=0)
    want = frechet_kid(net, real, fake, kid_subset_size=300, seed=0)
    assert r["fd"] == pytest.approx(want["fd"], rel=1e-5) and r["kid"] == pytest.approx(want["kid"], rel=1e-5)


def test_cli_score_says_how_many_samples_it_used_when_the_data_has_fewer(trained, lenet, capsys):
    # digits has 1,438 training images: --n 5000 compares 1,438 samples with them, and says so
    capsys.readouterr()
    assert main(["gan", "score", str(trained), "--classifier", str(lenet), "--n", "5000", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "FD-LeNet " in printed and "n=1438" in printed


@pytest.mark.parametrize("argv, message", [
    ([], "nothing to score with"),
    (["--classifier", "nowhere"], "no such checkpoint: nowhere"),
    (["--inception", "--inception-weights", "missing.pth"], "no such Inception weights file: missing.pth"),
])
def test_cli_score_refuses_bad_arguments_in_one_line(trained, capsys, argv, message):
    assert main(["gan", "score", str(trained), *argv, "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_cli_score_refuses_runs_of_the_wrong_kind_before_its_first_line(trained, lenet, capsys):
    # not quiet: the "scoring ..." line would come first if the kinds were checked late
    assert main(["gan", "score", str(lenet), "--classifier", str(lenet)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "not a 'gan' one" in err
    assert main(["gan", "score", str(trained), "--classifier", str(trained)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "not a 'classifier' one" in err


def test_fid_offline_fails_in_one_line_naming_the_way_out(trained, lenet, capsys, monkeypatch):
    import urllib.error

    import torch_fidelity.feature_extractor_inceptionv3 as tf

    def offline(*args, **kwargs):
        print("Downloading: https://...", file=sys.stderr)
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tf, "load_state_dict_from_url", offline)
    assert main(["gan", "score", str(trained), "--classifier", str(lenet), "--inception", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "could not download the Inception weights" in err and "--inception-weights" in err and "\n" not in err


def test_fid_without_torch_fidelity_names_the_extra(monkeypatch):
    import torchmetrics.utilities.imports as imports

    from preimage.errors import PreimageError
    from preimage.gan.evaluate import inception_features

    monkeypatch.setattr(imports, "_TORCH_FIDELITY_AVAILABLE", False)
    with pytest.raises(PreimageError, match=r"pip install 'preimage\[fid\]'"):
        inception_features()


def test_fid_from_a_local_weights_file(trained, tmp_path, monkeypatch):
    """The Inception path end to end, with a weights file written here (random weights: the real ones
    cannot be downloaded in the tests): FID is ~0 for a set against itself and positive otherwise."""
    import torch_fidelity.feature_extractor_inceptionv3 as tf

    from preimage.gan.evaluate import inception_features
    from preimage.gan.score import frechet_kid

    with monkeypatch.context() as m:  # build the network once without loading anything, and save it
        m.setattr(tf, "load_state_dict_from_url", lambda *a, **k: {})
        m.setattr(tf.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        torch.manual_seed(0)
        net = tf.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    weights = tmp_path / "inception.pth"
    torch.save(net.state_dict(), weights)
    feats = inception_features(weights)
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(4, 1, 28, 28, generator=g), torch.rand(4, 1, 28, 28, generator=g) * 0.2
    assert feats(a[:1]).shape == (1, 2048)
    same = frechet_kid(feats, a, a, kid_subset_size=4)["fd"]
    other = frechet_kid(feats, a, b, kid_subset_size=4)["fd"]
    assert abs(same) < 1e-2 * other and other > 0


def test_the_task_trains_with_its_configs_optimizer_settings_and_initial_weights(digits):
    def check(task, lr, betas, init):
        for opt, net in ((task.opt_g, task.G), (task.opt_d, task.D)):
            (group,) = opt.param_groups
            assert isinstance(opt, torch.optim.Adam) and (group["lr"], group["betas"]) == (lr, betas)
            assert [id(p) for p in group["params"]] == [id(p) for p in net.parameters()]
            linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
            if init == "normal":  # Radford et al.: N(0, 0.02), biases 0
                assert all(float(m.bias.abs().max()) == 0 for m in linears)
                assert float(linears[0].weight.std()) == pytest.approx(0.02, rel=0.05)
            else:  # PyTorch's defaults: U(±1/√fan_in), biases too
                assert all(float(m.bias.abs().max()) > 0 for m in linears)
                fan_in = linears[0].weight.shape[1]
                assert float(linears[0].weight.abs().max()) == pytest.approx(fan_in ** -0.5, rel=0.01)

    check(small_task(digits), 1e-3, (0.5, 0.999), "torch")  # the notes' settings
    check(small_task(digits, lr=3e-4, beta1=0.3, beta2=0.9, init="normal"), 3e-4, (0.3, 0.9), "normal")
    dcgan = GanTask(digits, gan_config("dcgan", data="digits", arch="fc", batch_size=64, grid=4))
    check(dcgan, 2e-4, (0.5, 0.999), "normal")


def _bce(logits, label):  # −mean(y log σ(s) + (1 − y) log(1 − σ(s))), written out
    p = torch.sigmoid(logits.double())
    return float(-(label * p.log() + (1 - label) * (1 - p).log()).mean())


HAND_LOSSES = {  # (D loss on real and fake scores, G loss on fake scores), from the papers' formulas
    "vanilla": (lambda r, f: _bce(r, 1) + _bce(f, 0), lambda f: _bce(f, 1)),
    "ls": (lambda r, f: float(0.5 * ((r - 1).pow(2).mean() + f.pow(2).mean())),
           lambda f: float(0.5 * (f - 1).pow(2).mean())),
}


def _one_step(digits, loss, scale=1.0):
    """A task, copies of its networks before one training step, the batch, the step's losses and noises."""
    import copy

    task = small_task(digits, loss=loss)
    with torch.no_grad():
        task.D.body[-1].weight.mul_(scale)
    G0, D0 = copy.deepcopy(task.G), copy.deepcopy(task.D)
    real = next(iter(task.batches(1, torch.Generator().manual_seed(0))))
    losses = task.train_step(real, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # the step's two noise draws: D's batch of fakes, then G's
    z_d, z_g = gan.sample_noise(len(real), 96, g), gan.sample_noise(len(real), 96, g)
    return task, G0, D0, real, losses, z_d, z_g


@pytest.mark.parametrize("loss", ["vanilla", "ls"])
def test_one_training_step_replays_by_hand(digits, loss):
    # known inputs: a batch of digits, and a discriminator that already tells them from the generator's
    # images (its last layer's weights scaled up), so that real and fake scores are far apart
    task, G0, D0, real, losses, z_d, z_g = _one_step(digits, loss, scale=20.0)
    d_hand, g_hand = HAND_LOSSES[loss]
    with torch.no_grad():
        s_real, s_fake = D0(real), D0(G0(z_d))
        assert float(s_real.mean() - s_fake.mean()) > 0.5  # the labels matter
        assert losses["D"] == pytest.approx(d_hand(s_real, s_fake), rel=1e-5)
        assert losses["D"] != pytest.approx(d_hand(s_fake, s_real), rel=1e-2)  # real and fake swapped
        assert losses["G"] == pytest.approx(g_hand(task.D(G0(z_g))), rel=1e-5)  # read through the updated D


@pytest.mark.parametrize("loss", ["vanilla", "ls"])
def test_one_training_step_moves_each_network_down_its_loss(digits, loss):
    task, G0, D0, real, losses, z_d, z_g = _one_step(digits, loss)
    d_hand, g_hand = HAND_LOSSES[loss]
    with torch.no_grad():
        fake = G0(z_d)
        assert d_hand(task.D(real), task.D(fake)) < losses["D"]
        # D learned to score the real images above the fakes
        assert float(task.D(real).mean() - task.D(fake).mean()) > float(D0(real).mean() - D0(fake).mean()) + 0.1
        # G's new fakes fool the updated D more than its old ones
        assert g_hand(task.D(task.G(z_g))) < losses["G"]


def test_inversion_keeps_the_best_of_its_restarts():
    torch.manual_seed(0)
    G = torch.nn.Sequential(torch.nn.Linear(96, 784), torch.nn.Tanh(), torch.nn.Unflatten(1, (1, 28, 28)))
    cfg = gan_config(arch="fc")
    target = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    # no steps: each restart is its starting code; more restarts draw the same first codes, and more
    one, four = (gan.invert((G, cfg), target[:1], steps=0, restarts=k, seed=3) for k in (1, 4))
    assert four.metrics[0]["mse"] < one.metrics[0]["mse"]
    both = gan.invert((G, cfg), target, steps=0, restarts=4, seed=3)
    from preimage.gan.inversion import START_STREAM

    starts = gan.sample_noise(8, 96, torch.Generator().manual_seed(3 + START_STREAM))  # image i's: rows 4i ... 4i + 3
    with torch.no_grad():
        images = ((G(starts) + 1) / 2).view(2, 4, 1, 28, 28)
    mse = (images - target[:, None]).pow(2).flatten(2).mean(2)  # 2 x 4
    for i, m in enumerate(both.metrics):
        best = int(mse[i].argmin())
        assert m["mse"] == pytest.approx(float(mse[i].min()), rel=1e-4) and float(mse[i].min()) < float(mse[i].max())
        assert m["z"] == pytest.approx(starts[4 * i + best].tolist(), abs=1e-6)
        assert torch.allclose(both.image[i], images[i, best].expand(3, -1, -1), atol=1e-6)
    assert both.result.per_image_loss == pytest.approx(mse.min(1).values.tolist(), rel=1e-4)


# -- one-line refusals of sample / interpolate / train / classifier ---------------------------------------

def _one_error_line(capsys, prefix):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"preimage {prefix}: error: "), err
    return err


def test_huge_sample_and_interpolation_counts_are_refused_up_front(trained, tmp_path, capsys):
    out = tmp_path / "s.png"
    assert main(["gan", "sample", str(trained), "--n", "1000000000", "--out", str(out)]) == 2
    assert "lower --n" in _one_error_line(capsys, "gan sample") and not out.exists()
    assert main(["gan", "interpolate", str(trained), "--rows", "100000", "--steps", "100000", "--out", str(out)]) == 2
    assert "lower --rows or --steps" in _one_error_line(capsys, "gan interpolate") and not out.exists()
    assert main(["gan", "sample", str(trained), "--n", "16", "--max-memory", "1K", "--out", str(out)]) == 2
    assert "more than the 1 KB --max-memory allows" in _one_error_line(capsys, "gan sample") and not out.exists()


def test_sample_refuses_an_out_that_is_not_a_png(trained, tmp_path, capsys):
    assert main(["gan", "sample", str(trained), "--out", str(tmp_path / "s.txt")]) == 2
    assert "writes a PNG" in _one_error_line(capsys, "gan sample")
    assert main(["gan", "interpolate", str(trained), "--out", str(tmp_path / "strip")]) == 2
    assert "has no extension" in _one_error_line(capsys, "gan interpolate")
    assert not list(tmp_path.iterdir())


def test_interpolate_needs_at_least_two_steps(trained, tmp_path, capsys):
    assert main(["gan", "interpolate", str(trained), "--steps", "1", "--out", str(tmp_path / "i.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "must be >= 2" in err and len(err.splitlines()) == 1 and not (tmp_path / "i.png").exists()


def test_a_failed_write_ends_in_one_line(trained, tmp_path, capsys, monkeypatch):
    import errno

    import preimage.images

    def fail(image, path):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(preimage.images, "save_image", fail)
    assert main(["gan", "sample", str(trained), "--n", "4", "--out", str(tmp_path / "s.png")]) == 2
    assert "cannot write" in _one_error_line(capsys, "gan sample")


def test_train_and_classifier_refuse_another_run_before_the_data_loads(trained, tmp_path, capsys, monkeypatch):
    import shutil

    import preimage.data

    run = tmp_path / "run"
    shutil.copytree(trained, run)

    def no_data(*a, **k):
        raise AssertionError("the data were loaded before --out was checked")

    monkeypatch.setattr(preimage.data, "load_data", no_data)
    base = ["gan", "train", "--data", "digits", "--epochs", "2", "--out", str(run), "-q"]
    assert main([*base, "--arch", "dc", "--loss", "ls"]) == 2
    assert "(arch: 'fc' there, 'dc' now)" in _one_error_line(capsys, "gan train")
    assert main([*base, "--arch", "fc", "--loss", "vanilla"]) == 2
    assert "(loss: 'ls' there, 'vanilla' now)" in _one_error_line(capsys, "gan train")
    assert main(["gan", "classifier", "--data", "digits", "--out", str(run), "-q"]) == 2
    assert "holds a 'gan' run, not a 'classifier' one" in _one_error_line(capsys, "gan classifier")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert main(["gan", "classifier", "--data", "digits", "--out", str(tmp_path / "other"), "-q"]) == 2
    assert "not empty" in _one_error_line(capsys, "gan classifier")


def test_invert_through_a_generator_keeps_to_max_memory(trained, tmp_path, capsys, monkeypatch):
    img = _png(tmp_path / "d.png", 28)
    out = tmp_path / "o"
    argv = ["invert", str(img), "--model", f"gan:{trained}", "--steps", "2", "--out", str(out), "-q"]
    assert main(argv + ["--max-memory", "1K"]) == 2
    line = _one_error_line(capsys, "invert")
    assert "needs about" in line and "more than the 1 KB --max-memory allows" in line and not out.exists()
    monkeypatch.setenv("PREIMAGE_MAX_MEMORY", "1K")
    assert main(argv) == 2 and "PREIMAGE_MAX_MEMORY" in _one_error_line(capsys, "invert") and not out.exists()
    capsys.readouterr()
    assert main(argv + ["--max-memory", "off"]) == 0 and (out / "d.png").is_file()
