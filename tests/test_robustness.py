"""Hostile but realistic inputs: every failure one line and the right exit code, nothing written,
no model loaded for a bad input; SIGTERM saves like Ctrl-C; the memory guard; fast start-up."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import preimage.models
from preimage.cli import main
from preimage.errors import PreimageError, Terminated

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "\x1b[" not in lines[0]
    return lines[0]


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model is a test failure: bad inputs must be refused before."""
    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the inputs were checked")
    monkeypatch.setattr(preimage.models, "load_model", refuse)


# --- the bad-input matrix ----------------------------------------------------------------------

def _bad_inputs(tmp: Path) -> dict[str, str]:
    (tmp / "folder").mkdir()
    (tmp / "empty.png").write_bytes(b"")
    good = tmp / "good.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(good)
    (tmp / "truncated.png").write_bytes(good.read_bytes()[:60])
    (tmp / "notes.png").write_text("not an image at all")
    (tmp / "drawing.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
    Image.new("RGB", (1, 1)).save(tmp / "dot.png")
    Image.new("1", (10000, 10000)).save(tmp / "bomb.png")  # 10^8 pixels: over the decompression limit
    return {
        "missing": str(tmp / "nope.jpg"), "directory": str(tmp / "folder"), "empty": str(tmp / "empty.png"),
        "truncated": str(tmp / "truncated.png"), "non-image": str(tmp / "notes.png"),
        "svg": str(tmp / "drawing.svg"), "1x1": str(tmp / "dot.png"), "bomb": str(tmp / "bomb.png"),
        "url": "https://example.com/cat.jpg", "unknown sample": "sample:chelsee",
    }


COMMANDS = {
    "invert": lambda img, out: ["invert", img, "--out", out],
    "classify": lambda img, out: ["classify", img],
    "saliency": lambda img, out: ["saliency", img, "--out", out],
    "fool": lambda img, out: ["fool", img, "--target", "1", "--out", out],
    "style content": lambda img, out: ["style", img, "sample:brick", "--out", out],
    "style style": lambda img, out: ["style", "sample:chelsea", img, "--out", out],
}


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    return _bad_inputs(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "truncated", "non-image", "svg", "1x1", "bomb",
                                  "url", "unknown sample"])
def test_a_bad_image_is_one_line_exit_2_before_any_model_and_writes_nothing(command, kind, bad_inputs, tmp_path,
                                                                          capsys, no_model):
    out = tmp_path / "out"
    code, stdout, err = _run(COMMANDS[command](bad_inputs[kind], str(out)), capsys)
    assert code == 2
    line = _one_line(err)
    assert line.startswith(f"preimage {command.split()[0]}: error:")
    assert not out.exists()


def test_unicode_paths_load(tmp_path, capsys):
    path = tmp_path / "café ☕.png"
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(path)
    from preimage.images import load_image

    assert load_image(path).size == (32, 32)


@pytest.mark.parametrize("argv, words", [
    (["invert", "sample:chelsea", "-m", "efficientnet_lite00"], "'efficientnet_lite0'"),
    (["classify", "sample:chelsea", "-m", "resnet181"], "did you mean 'resnet18'"),
    (["dream", "--class", "goldfish", "-m", "alexnett"], "did you mean 'alexnet'"),
    (["layers", "vgg61"], "'vgg16'"),
    (["invert", "sample:chelsea", "--steps", "0"], "must be > 0"),
    (["invert", "sample:chelsea", "--lambda-tv", "inf"], "must be finite"),
    (["invert", "sample:chelsea", "--jitter", "-1"], "must be >= 0"),
    (["dream", "--class", "goldfish", "--size", "8"], "too small"),
    (["invert", "sample:chelsea", "--max-memory", "lots"], "not a size"),
])
def test_bad_names_and_numbers_are_one_line_before_any_model(argv, words, capsys, no_model, tmp_path):
    code, _, err = _run(argv + ["--out", str(tmp_path / "o")] if argv[0] in ("invert", "dream") else argv, capsys)
    assert code == 2
    assert words in _one_line(err)
    assert not (tmp_path / "o").exists()


def test_an_unknown_layer_is_the_only_line_invert_says(tmp_path, capsys):
    code, stdout, err = _run(["invert", "sample:chelsea", "--layer", "nope", "--steps", "2",
                              "--out", tmp_path / "o"], capsys)
    line = _one_line(err)
    assert code == 2 and "unknown layer 'nope'" in line and stdout == ""
    assert not (tmp_path / "o").exists()


def test_a_misspelt_model_is_named_before_the_missing_layer(capsys, no_model):
    code, _, err = _run(["invert", "sample:chelsea", "-m", "efficientnet_lite00"], capsys)
    assert code == 2 and "unknown model 'efficientnet_lite00'" in err and "--layer" not in err


def test_unwritable_output_and_existing_outputs_are_refused(tmp_path, capsys, no_model):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # running as root: permissions do not bind
            pytest.skip("permissions are not enforced for this user")
        code, _, err = _run(["invert", "sample:chelsea", "--out", locked / "o"], capsys)
        assert code == 2 and "cannot write" in _one_line(err)
    finally:
        locked.chmod(0o700)


def test_existing_outputs_are_never_overwritten_without_force(tmp_path, capsys, no_model):
    out = tmp_path / "o"
    out.mkdir()
    (out / "chelsea.png").write_bytes(b"mine")
    code, _, err = _run(["invert", "sample:chelsea", "--out", out], capsys)
    assert code == 2 and "--force" in _one_line(err)
    assert (out / "chelsea.png").read_bytes() == b"mine"


# --- the files of one result appear together or not at all ------------------------------------

def test_files_written_in_one_block_appear_together_at_its_end(tmp_path):
    from preimage.io import all_or_nothing, atomic_write

    with all_or_nothing():
        atomic_write(tmp_path / "new" / "a.txt", b"a")
        with all_or_nothing():  # a nested block joins the outer one
            atomic_write(tmp_path / "new" / "b.txt", b"b")
        assert not (tmp_path / "new" / "a.txt").exists() and not (tmp_path / "new" / "b.txt").exists()
    assert (tmp_path / "new" / "a.txt").read_bytes() == b"a" and (tmp_path / "new" / "b.txt").read_bytes() == b"b"
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["a.txt", "b.txt"]


def test_a_failure_inside_the_block_leaves_what_was_there_and_nothing_else(tmp_path):
    from preimage.io import all_or_nothing, atomic_write

    (tmp_path / "old.txt").write_bytes(b"mine")
    with pytest.raises(KeyboardInterrupt):
        with all_or_nothing():
            atomic_write(tmp_path / "old.txt", b"theirs")
            atomic_write(tmp_path / "made" / "deep" / "c.txt", b"c")
            raise KeyboardInterrupt
    assert (tmp_path / "old.txt").read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.txt"]  # no .part files, no folders it made


def test_ctrl_c_while_renaming_into_place_finishes_the_renames_then_raises(tmp_path, monkeypatch):
    from preimage.io import all_or_nothing, atomic_write

    for n in "abc":
        (tmp_path / f"{n}.txt").write_bytes(b"old")
    real, calls = os.replace, []

    def interrupted(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # just after the second rename
            real(src, dst)
            raise KeyboardInterrupt
        if len(calls) == 4:  # just before the third (its retry)
            raise KeyboardInterrupt
        real(src, dst)

    with pytest.raises(KeyboardInterrupt):
        with all_or_nothing():
            for n in "abc":
                atomic_write(tmp_path / f"{n}.txt", b"new")
            monkeypatch.setattr(os, "replace", interrupted)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {f"{n}.txt": b"new" for n in "abc"}  # no mix


def test_a_rename_that_fails_puts_back_the_files_already_renamed(tmp_path, monkeypatch):
    from preimage.errors import WriteError
    from preimage.io import all_or_nothing, atomic_write

    (tmp_path / "a.txt").write_bytes(b"old a")
    (tmp_path / "c.txt").write_bytes(b"old c")
    real = os.replace

    def fails_on_c(src, dst):
        if str(dst).endswith("c.txt"):
            raise OSError(errno.EIO, "Input/output error")
        real(src, dst)

    with pytest.raises(WriteError, match="c.txt: Input/output error$"):
        with all_or_nothing():
            for n in "abc":  # a and c replace files, b is new
                atomic_write(tmp_path / f"{n}.txt", b"new")
            monkeypatch.setattr(os, "replace", fails_on_c)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {"a.txt": b"old a", "c.txt": b"old c"}


def test_a_result_written_in_place_leaves_no_kept_copies(tmp_path):
    from preimage.io import all_or_nothing, atomic_write

    (tmp_path / "a.txt").write_bytes(b"old")
    with all_or_nothing():
        atomic_write(tmp_path / "a.txt", b"new")
        atomic_write(tmp_path / "b.txt", b"new")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {"a.txt": b"new", "b.txt": b"new"}


def test_a_folder_in_the_way_when_the_block_ends_leaves_every_file_as_it_was(tmp_path):
    from preimage.io import all_or_nothing, atomic_write

    from preimage.errors import WriteError

    (tmp_path / "a.txt").write_bytes(b"mine")
    with pytest.raises(WriteError, match="^cannot write .*b.txt: Is a directory$") as caught:
        with all_or_nothing():
            atomic_write(tmp_path / "a.txt", b"theirs")
            atomic_write(tmp_path / "b.txt", b"b")
            (tmp_path / "b.txt").mkdir()  # made by someone else while the block ran
    assert caught.value.filename == str(tmp_path / "b.txt") and caught.value.errno == errno.EISDIR
    assert (tmp_path / "a.txt").read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"] and not any((tmp_path / "b.txt").iterdir())


def test_a_failed_write_is_one_user_error_and_still_an_os_error(tmp_path, full_disk):
    from preimage.errors import PreimageError, WriteError
    from preimage.io import atomic_write, write_failure

    full_disk("x")
    with pytest.raises(WriteError) as caught:
        atomic_write(tmp_path / "x.txt", b"x")
    exc = caught.value
    assert isinstance(exc, OSError) and isinstance(exc, PreimageError) and exc.errno == errno.ENOSPC
    assert str(exc) == f"cannot write {tmp_path / 'x.txt'}: No space left on device"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(WriteError, match="^cannot write y.png: Read-only file system$"):
        with write_failure("y.png"):
            raise OSError(errno.EROFS, "Read-only file system")


def test_an_os_error_shows_its_traceback_with_debug(capsys):
    import argparse

    from preimage.cli import _run as run_command

    def fails(args):
        raise OSError(5, "Input/output error", "some/file")

    args = argparse.Namespace(command="invert", run=fails, debug=False)
    assert run_command(args) == 2
    assert _one_line(capsys.readouterr().err) == "preimage invert: error: Input/output error: some/file"
    with pytest.raises(OSError, match="Input/output error"):
        run_command(argparse.Namespace(command="invert", run=fails, debug=True))


def test_a_full_disk_while_saving_an_inversion_keeps_the_old_files_and_says_one_line(tmp_path, capsys, full_disk):
    out = tmp_path / "o"
    out.mkdir()
    (out / "chelsea.png").write_bytes(b"mine")
    full_disk("manifest")
    code, _, err = _run(["invert", "sample:chelsea", "--steps", "2", "--force", "-q", "--out", out], capsys)
    assert code == 2
    assert _one_line(err) == f"preimage invert: error: cannot write {out / 'manifest.json'}: No space left on device"
    assert (out / "chelsea.png").read_bytes() == b"mine"  # the files written before the failure never appeared
    assert sorted(p.name for p in out.iterdir()) == ["chelsea.png"]


# --- one validation for the API and the CLI ------------------------------------------------------

def test_the_api_refuses_what_the_cli_refuses(tiny_model):
    from preimage.tasks.invert import invert

    ref = torch.rand(1, 3, 16, 16)
    with pytest.raises(PreimageError, match="steps must be >= 1"):
        invert(tiny_model, ref, layers=["conv2"], steps=0)
    with pytest.raises(PreimageError, match="lambda_tv must be finite"):
        invert(tiny_model, ref, layers=["conv2"], lambda_tv=float("inf"))
    with pytest.raises(PreimageError, match="learning rate must be finite"):
        invert(tiny_model, ref, layers=["conv2"], lr=float("nan"))


# --- weights files ------------------------------------------------------------------------------

class _Thing:
    pass


@pytest.mark.parametrize("kind, words", [
    ("text", "is not a PyTorch weights file"), ("pickled object", "pickled Python objects"),
    ("truncated", "damaged or truncated"), ("empty", "is empty"), ("not tensors", "not a state_dict of tensors"),
])
def test_damaged_weights_are_said_in_preimages_words(kind, words, tmp_path, capsys):
    path = tmp_path / "w.pt"
    if kind == "text":
        path.write_text("hello")
    elif kind == "pickled object":
        torch.save({"a": _Thing()}, path)
    elif kind == "truncated":
        torch.save({"a": torch.zeros(100)}, path)
        path.write_bytes(path.read_bytes()[:120])
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        torch.save({"a": [1, 2]}, path)
    code, _, err = _run(["classify", "sample:coffee", "-m", "efficientnet_lite0", "--weights", path], capsys)
    line = _one_line(err)
    assert code == 2 and words in line and "weights_only" not in line
    assert "state_dict" in line  # what is accepted


# --- memory guard -------------------------------------------------------------------------------

def test_a_run_too_large_for_memory_is_refused_before_allocating(tmp_path, capsys):
    code, _, err = _run(["dream", "--class", "goldfish", "--size", "100000", "--steps", "3", "--out", tmp_path / "d"],
                        capsys)
    line = _one_line(err)
    assert code == 2 and "needs about" in line and "--size" in line and "--max-memory" in line
    assert not (tmp_path / "d").exists()


def test_the_memory_limit_can_be_set_by_flag_or_environment(tmp_path, capsys, monkeypatch):
    argv = ["dream", "--class", "goldfish", "--size", "64", "--steps", "1", "--out", tmp_path / "d", "-q"]
    code, _, err = _run(argv + ["--max-memory", "1M"], capsys)
    assert code == 2 and "1.0 MB --max-memory" in _one_line(err)
    monkeypatch.setenv("PREIMAGE_MAX_MEMORY", "2M")
    code, _, err = _run(argv, capsys)
    assert code == 2 and "PREIMAGE_MAX_MEMORY" in _one_line(err)
    code, _, err = _run(argv + ["--max-memory", "off"], capsys)
    assert code in (0, 1) and (tmp_path / "d" / "dream.json").is_file()


def test_the_estimate_grows_with_batch_and_pixels(tiny_model):
    from preimage.memory import estimate_bytes, parse_size

    one = estimate_bytes(tiny_model, batch=1, size=16)
    assert estimate_bytes(tiny_model, batch=2, size=16) > one
    assert estimate_bytes(tiny_model, batch=1, size=32) > 3 * (one - estimate_bytes(tiny_model, batch=0, size=16))
    assert parse_size("8G") == 8 * 1024 ** 3 and parse_size("500m") == 500 * 1024 ** 2 and parse_size("off") is None


# --- interruption -------------------------------------------------------------------------------

def test_sigterm_inside_a_command_exits_143_after_the_commands_own_cleanup(capsys, monkeypatch):
    import argparse

    import preimage.cli.models as cmd

    def run(args: argparse.Namespace) -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
        return 0

    monkeypatch.setattr(cmd, "run", run)
    before = signal.getsignal(signal.SIGTERM)
    code, _, err = _run(["models"], capsys)
    assert code == 143 and "terminated" in _one_line(err)
    assert signal.getsignal(signal.SIGTERM) is before  # restored


def test_terminated_is_what_every_ctrl_c_path_catches(tiny_model):
    from preimage.objectives import l2
    from preimage.optimize import optimize
    from preimage.params import Pixels

    def term(step):
        if step.step == 3:
            raise Terminated()

    res = optimize(Pixels(torch.rand(1, 3, 16, 16)), l2(), tiny_model, steps=10, callbacks=[term])
    assert res.status == "interrupted"
    assert res.message == f"interrupted after {res.steps} steps"  # the same count the manifest records


def test_sigterm_saves_the_partial_inversion_and_exits_143(tmp_path):
    out = tmp_path / "o"
    proc = subprocess.Popen(
        [sys.executable, "-m", "preimage", "invert", "sample:chelsea", "--input-size", "64", "--steps", "100000",
         "--out", str(out)], env={**ENV, "PREIMAGE_PROGRESS": "plain", "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    proc.stderr.readline()  # "inverting ...": the model is loaded, the loop starts
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["steps_run"] > 0
    assert (out / "chelsea.png").is_file()
    assert f"interrupted after {manifest['steps_run']} steps" in err


# --- divergence ---------------------------------------------------------------------------------

def test_divergence_names_the_term_that_became_non_finite(tmp_path, capsys):
    code, _, err = _run(["invert", "sample:chelsea", "--input-size", "64", "--steps", "3", "--lambda-tv", "1e308",
                         "--out", tmp_path / "o", "-q"], capsys)
    line = _one_line(err)
    assert code == 1 and "'tv' term" in line and "--lambda-tv" in line and "--lr" not in line


# --- silent conversions -------------------------------------------------------------------------

def test_an_animated_gif_and_transparency_are_announced_once_and_recorded(tmp_path, capsys):
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    rgba = tmp_path / "clear.png"
    Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(rgba)
    out = tmp_path / "o"
    code, _, err = _run(["invert", gif, rgba, "--input-size", "64", "--steps", "1", "--out", out, "-q"], capsys)
    assert code == 0, err
    warnings = [ln for ln in err.splitlines() if "warning:" in ln]
    assert len(warnings) == 2
    assert "first frame" in warnings[0] and "flattened onto white" in warnings[1]
    notes = json.loads((out / "manifest.json").read_text())["image_notes"]
    assert "first frame" in notes[str(gif)][0] and "white" in notes[str(rgba)][0]
    sal = tmp_path / "s"
    code, _, err = _run(["saliency", gif, rgba, "--input-size", "64", "--out", sal, "-q"], capsys)
    assert code == 0, err
    notes = json.loads((sal / "saliency.json").read_text())["image_notes"]
    assert "first frame" in notes[str(gif)][0] and "white" in notes[str(rgba)][0]
    fooled = tmp_path / "f"
    code, _, err = _run(["fool", gif, "--untargeted", "--input-size", "64", "--max-steps", "1", "--out", fooled, "-q"],
                        capsys)
    assert code in (0, 1), err  # 1: not fooled in one step
    notes = json.loads((fooled / "fool.json").read_text())["image_notes"]
    assert "first frame" in notes[str(gif)][0]


def test_an_opaque_alpha_channel_is_not_announced(tmp_path, recwarn):
    from preimage.images import load_image

    path = tmp_path / "opaque.png"
    Image.new("RGBA", (32, 32), (5, 5, 5, 255)).save(path)
    load_image(path)
    assert not [w for w in recwarn if "flattened" in str(w.message)]


# --- progress in logs ---------------------------------------------------------------------------

def test_progress_off_a_terminal_is_a_plain_line_every_tenth(tiny_model, capsys, monkeypatch):
    from preimage.objectives import l2
    from preimage.optimize import optimize
    from preimage.params import Pixels

    monkeypatch.delenv("PREIMAGE_PROGRESS", raising=False)
    import preimage.progress as P

    monkeypatch.setattr(P.PlainProgress, "__init__", _fast_plain(P.PlainProgress.__init__))
    optimize(Pixels(torch.rand(1, 3, 16, 16)), l2(), tiny_model, steps=200, progress=True)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert 2 <= len(lines) <= 11 and "\r" not in err
    assert lines[-1].startswith("optimizing: 200/200 steps (100%)") and "l2=" in lines[-1]


def _fast_plain(init):
    def wrapped(self, *a, **k):
        init(self, *a, **{**k, "min_seconds": 0.0})
    return wrapped


# --- sweeps and reports on damaged folders ------------------------------------------------------

@pytest.fixture(scope="module")
def _computed_sweep(tmp_path_factory):
    from preimage.sweep import run_sweep

    out = tmp_path_factory.mktemp("sweep") / "s"
    run_sweep({"image": "sample:chelsea", "input_size": 64, "steps": 2, "layer": ["blocks.1", "blocks.3"]}, out)
    return out


@pytest.fixture
def small_sweep(_computed_sweep, tmp_path):
    """A fresh copy of a finished two-run sweep (run folders are named relative to it)."""
    import shutil

    return Path(shutil.copytree(_computed_sweep, tmp_path / "s"))


def test_a_cached_run_with_a_deleted_png_is_recomputed(small_sweep):
    from preimage.sweep import run_sweep

    run = sorted((small_sweep / "runs").iterdir())[0]
    png = next(p for p in run.iterdir() if p.name.endswith("_compare.png"))
    png.unlink()
    res = run_sweep({"image": "sample:chelsea", "input_size": 64, "steps": 2, "layer": ["blocks.1", "blocks.3"]},
                    small_sweep)
    assert len(res.computed) == 1 and len(res.cached) == 1
    assert png.is_file()


@pytest.mark.parametrize("damage", ["png deleted", "png truncated", "manifest garbage", "run.json deleted"])
def test_report_on_a_damaged_run_warns_and_never_ends_in_an_internal_error(small_sweep, damage, capsys):
    run = sorted((small_sweep / "runs").iterdir())[0]
    png = next(p for p in run.iterdir() if p.name.endswith(".png") and "_" not in p.name.split("-")[-1])
    if damage == "png deleted":
        png.unlink()
    elif damage == "png truncated":
        png.write_bytes(png.read_bytes()[:50])
    elif damage == "manifest garbage":
        (run / "manifest.json").write_text("{not json")
    else:
        (run / "run.json").unlink()
    code, _, err = _run(["report", small_sweep, "-q"], capsys)
    assert code == 0, err
    assert "internal error" not in err and "damaged" in _one_line(err) or "missing" in err


@pytest.mark.parametrize("damage", ["sweep.json garbage", "no runs list", "not a folder", "missing"])
def test_report_on_a_damaged_or_missing_sweep_folder_is_one_line_exit_2(tmp_path, damage, capsys):
    folder = tmp_path / "s"
    if damage == "sweep.json garbage":
        folder.mkdir()
        (folder / "sweep.json").write_text("[[[")
    elif damage == "no runs list":
        folder.mkdir()
        (folder / "sweep.json").write_text('{"runs": 3}')
    elif damage == "not a folder":
        folder.write_text("x")
    code, _, err = _run(["report", folder], capsys)
    line = _one_line(err)
    assert code == 2 and "internal error" not in line
    if damage == "missing":
        assert "no such folder" in line


def test_report_out_that_is_a_file_is_one_line_exit_2(small_sweep, tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("mine")
    for out in (f, f / "sub"):
        code, stdout, err = _run(["report", small_sweep, "--out", out], capsys)
        line = _one_line(err)
        assert code == 2 and "internal error" not in line and "is a file, not a folder" in line
        assert stdout == "" and f.read_text() == "mine"


def test_report_unknown_cols_names_the_swept_axes_not_a_damaged_run(small_sweep, capsys):
    code, _, err = _run(["report", small_sweep, "--cols", "nope"], capsys)
    line = _one_line(err)
    assert code == 2 and "cols 'nope' (--cols) is not a swept axis" in line and "swept axes: layer" in line
    assert "cannot read" not in line and "--force" not in line
    assert not (small_sweep / "report").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_sweep_on_cuda_without_a_gpu_is_one_line_exit_2(tmp_path, capsys, no_model):
    code, stdout, err = _run(["sweep", "sample:chelsea", "-l", "blocks.1", "--steps", "2", "--input-size", "64",
                              "--device", "cuda", "-o", tmp_path / "s"], capsys)
    line = _one_line(err)
    assert code == 2 and "CUDA is not available" in line and "internal error" not in line
    assert stdout == "" and not (tmp_path / "s").exists()
    code, stdout, _ = _run(["sweep", "sample:chelsea", "-l", "blocks.1", "--device", "cuda", "--dry-run",
                            "-o", tmp_path / "s"], capsys)  # planning a GPU sweep on a machine without one
    assert code == 0 and "to run" in stdout


@pytest.mark.parametrize("argv, words", [
    (["sample:nosuchphoto", "-l", "blocks.1"], "unknown sample photo"),
    (["sample:chelsea", "-l", "blockz.1"], "blockz.1"),
])
def test_sweep_says_nothing_before_a_validation_error(argv, words, tmp_path, capsys):
    code, stdout, err = _run(["sweep", *argv, "--steps", "2", "--input-size", "64", "-o", tmp_path / "s"], capsys)
    assert code == 2 and words in _one_line(err) and stdout == ""
    assert not (tmp_path / "s").exists()


def test_sweep_refuses_a_run_too_large_for_memory_once_with_exit_2(tmp_path, capsys):
    code, stdout, err = _run(["sweep", "sample:chelsea", "-l", "blocks.1", "--steps", "2", "--max-memory", "1M",
                              "-o", tmp_path / "s"], capsys)
    line = _one_line(err)
    assert code == 2 and "needs about" in line and "--max-memory" in line and "failed" not in line
    assert stdout == "" and not (tmp_path / "s").exists()


def test_a_failed_sweep_run_is_said_once(tmp_path):
    code = ("import preimage.sweep as S; from preimage.cli import main\n"
            "def boom(model, image, **kw): raise RuntimeError('out of memory')\n"
            "S.store.invert = boom\n"
            f"raise SystemExit(main(['sweep', 'sample:chelsea', '-l', 'blocks.1', '--steps', '2', "
            f"'--input-size', '64', '-o', {str(tmp_path / 's')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("out of memory") == 1, proc.stderr
    assert "preimage sweep: run " in proc.stderr and "failed: RuntimeError: out of memory" in proc.stderr


# --- invert --model gan:RUN ---------------------------------------------------------------------

@pytest.mark.parametrize("flags, named", [
    (["--input-size", "28"], "--input-size"),
    (["--lambda-tv", "1", "--init", "zeros"], "--lambda-tv, --init"),
    (["--preset", "fast"], "--preset"),
    (["--judge", "alexnet"], "--judge"),
    (["--weights", "none"], "--weights"),
    (["--jitter", "2", "--copies", "2"], "--jitter, --copies"),
])
def test_invert_with_a_gan_refuses_the_flags_it_would_ignore(flags, named, tmp_path, capsys, no_model):
    (tmp_path / "run").mkdir()
    code, stdout, err = _run(["invert", "sample:chelsea", "--model", f"gan:{tmp_path / 'run'}", *flags,
                              "--out", tmp_path / "o"], capsys)
    line = _one_line(err)
    assert code == 2 and f"{named} do" in line and "not apply to a generator" in line
    assert stdout == "" and not (tmp_path / "o").exists()


def test_invert_with_an_empty_gan_path_says_what_is_missing(tmp_path, capsys, no_model):
    code, _, err = _run(["invert", "sample:chelsea", "--model", "gan:", "--out", tmp_path / "o"], capsys)
    line = _one_line(err)
    assert code == 2 and "--model gan: needs the folder or checkpoint.pt" in line


def test_invert_with_a_gan_passes_decay_device_and_seed_through(tmp_path, capsys, monkeypatch):
    import importlib
    import types

    inversion = importlib.import_module("preimage.gan.inversion")  # the package's names shadow its modules
    sample = importlib.import_module("preimage.gan.sample")

    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"")
    seen = {}

    def fake_load(path, device="cpu"):
        seen["device"] = str(device)
        return "G", types.SimpleNamespace(noise_dim=8)

    def fake_invert(checkpoint, images, **kw):
        seen.update(kw)
        raise PreimageError("stop here")

    monkeypatch.setattr(sample, "load_generator", fake_load)
    monkeypatch.setattr(inversion, "invert_generator", fake_invert)
    # the fake generator cannot be measured: the memory check (tested in test_gan_train) is left out here
    monkeypatch.setattr(sample, "check_memory", lambda *a, **k: None)
    argv = ["invert", "sample:chelsea", "--model", f"gan:{run}", "--steps", "30", "--decay-steps", "10", "20",
            "--decay-factor", "0.5", "--device", "cpu", "--seed", "3", "--out", tmp_path / "o", "-q"]
    code, _, err = _run(argv, capsys)
    assert code == 2 and "stop here" in err
    assert seen["decay_steps"] == (10, 20) and seen["decay_factor"] == 0.5 and seen["seed"] == 3
    assert seen["device"] == "cpu" and seen["steps"] == 30
    code, _, err = _run(argv[:6] + ["--decay-epochs", "10", "--out", tmp_path / "o", "-q"], capsys)
    assert seen["decay_steps"] == (10, 20, 30)


# --- start-up -----------------------------------------------------------------------------------

def test_help_and_argument_errors_do_not_import_torch():
    code = ("import sys; import preimage, preimage.cli as c; c.build_parser(); "
            "from preimage.cli import common; "
            "bad = [m for m in ('torch', 'numpy', 'torchvision', 'timm') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], env=ENV, check=True)


def test_a_missing_image_is_reported_without_importing_torch(capsys, monkeypatch):
    code = ("import sys; from preimage.cli import main; rc = main(['invert', 'nope.png']); "
            "assert rc == 2, rc; assert 'torch' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "preimage invert: error: no such file: nope.png"


@pytest.mark.parametrize("argv", [["layers", "nope.onnx"], ["invert", "sample:chelsea", "--model", "nope.onnx"]])
def test_a_missing_onnx_file_is_reported_before_torch_or_onnx_load(argv):
    code = (f"import sys; from preimage.cli import main; rc = main({argv!r}); assert rc == 2, rc; "
            "bad = [m for m in ('torch', 'onnx', 'onnx2torch') if m in sys.modules]; assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == f"preimage {argv[0]}: error: no such ONNX file: nope.onnx"


@pytest.mark.parametrize("command", [["layers", "--model"], ["invert", "sample:chelsea", "--model"]])
def test_a_folder_given_as_the_model_is_said_to_be_a_folder(command, tmp_path, capsys, no_model):
    for given in (str(tmp_path), str(tmp_path / "resnet5")):  # a path, and a folder named like a model
        (tmp_path / "resnet5").mkdir(exist_ok=True)
        code, stdout, err = _run([*command, given, "--out", tmp_path / "o"] if command[0] == "invert"
                                 else [*command, given], capsys)
        line = _one_line(err)
        assert code == 2 and f"model {given!r} is a folder, not a model file or name" in line, line
        assert "unknown model" not in line and stdout == "" and not (tmp_path / "o").exists()
    (tmp_path / "net.pt").write_bytes(b"")
    code, _, err = _run([*command, tmp_path / "net.pt"] + (["--out", tmp_path / "o"] if command[0] == "invert" else []),
                        capsys)
    assert code == 2 and "is a file but not an ONNX file" in _one_line(err)


def test_a_misspelt_model_file_is_said_missing_with_the_onnx_file_beside_it(tmp_path, capsys, no_model):
    (tmp_path / "net.onnx").write_bytes(b"")
    code, stdout, err = _run(["layers", tmp_path / "net.onx"], capsys)
    line = _one_line(err)
    assert code == 2 and stdout == "" and f"no such model file: {tmp_path / 'net.onx'}" in line, line
    assert f"did you mean {str(tmp_path / 'net.onnx')!r}" in line and "unknown model" not in line


@pytest.mark.parametrize("name, suggested", [("resnet5", "'resnet50'"), ("efficientnet_lite9", "'efficientnet_lite0'"),
                                             ("/no/such/dir", ""), ("timm:resnet5O", "'resnet50'")])
def test_a_misspelt_model_name_is_refused_without_importing_torchvision(name, suggested, tmp_path):
    code = (f"import sys; from preimage.cli import main; rc = main(['layers', '--model', {name!r}]); "
            "assert rc == 2, rc; "
            "bad = [m for m in ('torch', 'torchvision', 'timm') if m in sys.modules]; assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = _one_line(proc.stderr)
    said = (f"no such model file: {name}" if "/" in name  # a path, a timm architecture, or a zoo name
            else f"unknown timm model {name[5:]!r}" if name.startswith("timm:") else f"unknown model {name!r}")
    assert line.startswith(f"preimage layers: error: {said}") and suggested in line, line


@pytest.mark.parametrize("judge, said", [("efficientnet_lit2", "unknown model 'efficientnet_lit2'"),
                                         ("timm:resnet5O", "unknown timm model 'resnet5O'")])
def test_a_misspelt_judge_is_refused_without_importing_torch(judge, said, tmp_path):
    code = (f"import sys; from preimage.cli import main; "
            f"rc = main(['invert', 'sample:chelsea', '--judge', {judge!r}, '--out', 'o']); assert rc == 2, rc; "
            "bad = [m for m in ('torch', 'torchvision', 'timm') if m in sys.modules]; assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = _one_line(proc.stderr)
    assert line.startswith(f"preimage invert: error: --judge: {said}") and "did you mean" in line, line
    assert not (tmp_path / "o").exists()


def test_the_torchvision_names_read_without_importing_match_its_registry():
    import torchvision

    from preimage.models import model_names
    from preimage.validate import check_model_name, torchvision_names_unimported

    assert torchvision_names_unimported() == tuple(sorted(torchvision.models.list_models(module=torchvision.models)))
    for name in model_names():  # every listed name still passes the check
        assert check_model_name(name) == name


def test_the_timm_names_read_without_importing_match_its_registry(monkeypatch):
    import timm

    from preimage import validate

    import timm.models._registry as registry

    assert validate.timm_names_unimported() == tuple(sorted(timm.list_models()))
    assert validate.timm_deprecated_unimported() == tuple(sorted(registry._deprecated_models))
    assert validate.check_model_name("timm:vit_tiny_patch16_224.augreg_in21k,img_size=28")  # a tag and options
    assert validate.check_model_name("timm:convnext_tiny_in22ft1k")  # an old name timm maps to a current one
    monkeypatch.setattr(validate, "timm_names_unimported", lambda: None)  # sources unread: timm itself answers
    with pytest.raises(PreimageError, match="unknown timm model 'resnet5O'.*'resnet50'"):
        validate.check_model_name("timm:resnet5O")
    assert validate.check_model_name("timm:convnext_tiny_in22ft1k")


def test_the_package_keeps_its_public_names():
    import preimage

    assert callable(preimage.optimize) and callable(preimage.invert) and preimage.InvertConfig
    import preimage.optimize as engine_or_function  # the package name stays the function, as before

    assert callable(engine_or_function)
    with pytest.raises(AttributeError):
        preimage.no_such_name


def test_light_lists_match_the_heavy_modules():
    from preimage.cli.style import STYLE_PRESETS as listed
    from preimage.models import DEFAULT_MODEL, efficientnet_lite
    from preimage.recipes import RECIPES
    from preimage.sweep import RECIPES as sweep_recipes
    from preimage.tasks.style import STYLE_PRESETS
    from preimage.validate import DEFAULT_MODEL as light_default, EMBEDDED_MODELS

    assert tuple(listed) == tuple(STYLE_PRESETS)
    assert light_default == DEFAULT_MODEL and tuple(EMBEDDED_MODELS) == tuple(efficientnet_lite.VARIANTS)
    assert RECIPES is sweep_recipes


def test_dream_help_says_when_it_exits_1(capsys):
    assert main(["dream", "--help"]) == 0
    assert "Exit code 1" in " ".join(capsys.readouterr().out.split())
