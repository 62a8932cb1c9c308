"""`preimage caption train | eval | IMAGE...`: end to end on tiny data, and one-line failures."""
from __future__ import annotations

import json
import os
import sys

import pytest
from PIL import Image

from preimage.cli import main
from test_caption_data import write_coco_h5, write_coco_json


def test_module_imports_nothing_heavy_at_module_level():
    import ast

    import preimage.cli.caption as mod

    tree = ast.parse(open(mod.__file__).read())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
    assert set(names) <= {"__future__", "argparse", "os", "sys", "pathlib"}, names


def test_train_eval_on_the_assignment_files_and_refusals(tmp_path, capsys, one_thread):
    write_coco_h5(tmp_path / "coco")
    run = tmp_path / "run"
    def args(cell="rnn", epochs="2"):
        return ["caption", "train", "--cell", cell, "--data", "coco-h5", str(tmp_path / "coco"), "--out", str(run),
                "--epochs", epochs, "--hidden", "16", "--wordvec", "8", "--batch-size", "4", "--eval-images", "3", "-q"]

    assert main(args()) == 0
    for name in ("checkpoint.pt", "history.json", "losses.png", "manifest.json"):
        assert (run / name).is_file()
    assert main(args(epochs="3")) == 0  # resumes after epoch 2
    hist = json.loads((run / "history.json").read_text())
    assert [e["epoch"] for e in hist["epochs"]] == [1, 2, 3]
    capsys.readouterr()
    assert main(args(epochs="3")[:-1]) == 0  # done already (and not quiet): says so, writes nothing new
    err = capsys.readouterr().err
    assert "nothing to do" in err and "wrote" not in err
    assert main(["caption", "eval", str(run), "-q"]) == 0
    out = capsys.readouterr().out
    assert "rnn (greedy)" in out and "most frequent caption" in out and "nearest neighbour" in out
    report = json.loads((run / "eval_test.json").read_text())
    assert set(report["scores"]["nearest neighbour"]) == {"bleu1", "bleu2", "bleu3", "bleu4", "cider"}
    # another cell in the same folder: refused, naming the difference
    assert main(args(cell="lstm", epochs="4")) == 2
    assert "other settings" in capsys.readouterr().err
    # a model trained on precomputed features cannot caption image files
    img = tmp_path / "a.png"
    Image.new("RGB", (32, 32), (200, 10, 10)).save(img)
    assert main(["caption", str(img), "--model", str(run), "--out", str(tmp_path / "o")]) == 2
    assert "cannot caption image files" in capsys.readouterr().err
    # an earlier evaluation is kept unless --force, as other commands keep their outputs
    before = (run / "eval_test.json").read_bytes()
    assert main(["caption", "eval", str(run), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("preimage caption eval: error: ") and "exists; use --force" in err and "\n" not in err
    assert "--out" not in err  # eval always writes into the run folder
    assert (run / "eval_test.json").read_bytes() == before
    # the vocabulary of the data changed under the run: eval refuses it
    (tmp_path / "coco" / "coco2014_vocab.json").write_text(json.dumps({"idx_to_word": ["<NULL>", "<START>", "<END>", "<UNK>", "a", "red", "circle", "cat"]}))
    assert main(["caption", "eval", str(run), "--force", "-q"]) == 2
    assert "is not the checkpoint's" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["caption", "train", "--data", "coco-h5"], "needs one path"),
    (["caption", "train", "--data", "imagenet"], "unknown --data 'imagenet'"),
    (["caption", "train", "--data", "coco-json", "/nonexistent.json"], "no such file"),
    (["caption", "train", "--data", "shapes", "--max-train", "5"], "--max-train is for --data coco-h5"),
    (["caption", "train", "--explain"], "--explain is an option of `preimage caption IMAGE...`"),
    (["caption", "eval"], "usage: preimage caption eval DIR"),
    (["caption", "eval", "/nonexistent"], "holds no checkpoint.pt"),
    (["caption", "eval", "/nonexistent", "--out", "/tmp/elsewhere"], "--out does not apply to `preimage caption eval`"),
    (["caption", "some.png"], "--model DIR"),
    (["caption", "some.png", "--model", "/nonexistent"], "holds no checkpoint.pt"),
])
def test_bad_arguments_fail_in_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_bad_numbers_are_refused_by_the_parser(capsys):
    assert main(["caption", "train", "--epochs", "0"]) == 2
    assert main(["caption", "train", "--lr-decay", "1.5"]) == 2
    assert "must be" in capsys.readouterr().err


@pytest.mark.parametrize("argv,prefix", [
    (["caption", "train", "--cell", "gru"], "preimage caption train: error: argument --cell"),
    (["caption", "eval", "run", "--beam", "0"], "preimage caption eval: error: argument --beam"),
    (["caption", "eval", "run", "--bogus"], "preimage caption eval: error: unrecognized arguments: --bogus"),
    (["caption", "some.png", "--bogus"], "preimage caption: error: unrecognized arguments: --bogus"),
    (["caption", "-q", "train", "--bogus"], "preimage caption train: error: unrecognized arguments: --bogus"),
])
def test_a_usage_error_names_the_action(argv, prefix, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(prefix) and len(err.splitlines()) == 1, err


def test_out_folder_with_other_files_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    write_coco_h5(tmp_path / "coco")
    assert main(["caption", "train", "--data", "coco-h5", str(tmp_path / "coco"), "--out", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_coco_json_with_a_broken_image_fails_in_one_line(tmp_path, capsys):
    path = write_coco_json(tmp_path)
    (tmp_path / "imgs" / "1.png").write_bytes(b"\x89PNG broken")
    assert main(["caption", "train", "--data", "coco-json", str(path), "--out", str(tmp_path / "run"),
                 "--cache", str(tmp_path / "cache"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "1.png" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_shapes_train_then_caption_and_explain_images(tmp_path, capsys, one_thread):
    run = tmp_path / "run"
    assert main(["caption", "train", "--data", "shapes", "--scenes", "12", "--epochs", "1", "--hidden", "16",
                 "--wordvec", "8", "--input-size", "64", "--out", str(run), "--cache", str(tmp_path / "cache"),
                 "--eval-images", "2", "-q"]) == 0
    img = tmp_path / "photo.png"
    Image.new("RGB", (80, 60), (20, 200, 20)).save(img)
    out = tmp_path / "captions"
    capsys.readouterr()
    assert main(["caption", "scene:5", str(img), "--model", str(run), "--explain", "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0].startswith("scene:5: ") and printed[1].startswith(f"{img}: ")
    record = json.loads((out / "captions.json").read_text())
    for rec in record["images"]:
        assert (out / rec["file"]).is_file() and (out / rec["explain"]).is_file()
        assert len(rec["words"]) == len(rec["caption"].split())
    # outputs exist: refused without --force, written with it
    assert main(["caption", "scene:5", "--model", str(run), "--out", str(out), "-q"]) == 2
    assert main(["caption", "scene:5", "--model", str(run), "--out", str(out), "--force", "-q"]) == 0
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    assert main(["caption", str(broken), "--model", str(run), "--out", str(tmp_path / "x"), "-q"]) == 2
    assert "broken.jpg" in capsys.readouterr().err
    # a failed write: one line naming the file, and nothing of this run left behind
    import preimage.images

    save = preimage.images.save_image
    calls = {"n": 0}

    def full_disk_on_the_second(image, path):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return save(image, path)

    preimage.images.save_image = full_disk_on_the_second
    try:
        assert main(["caption", "scene:5", "--model", str(run), "--explain", "--out", str(tmp_path / "y"), "-q"]) == 2
    finally:
        preimage.images.save_image = save
    err = capsys.readouterr().err.strip()
    assert err == f"preimage caption: error: cannot write {tmp_path / 'y' / 'scene_5_explain.png'}: " \
                  "No space left on device", err
    assert not any(p.is_file() for p in (tmp_path / "y").rglob("*"))
    if os.geteuid() == 0:  # root passes the access check; the kernel refuses the folder under /proc
        assert main(["caption", "scene:5", "--model", str(run), "--out", "/proc/preimage-captions", "-q"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("preimage caption: error: cannot write /proc/preimage-captions/") and \
            len(err.splitlines()) == 1, err


def test_an_empty_caption_is_said_to_be_empty(tmp_path, capsys, monkeypatch, one_thread):
    from preimage.captioning import task

    run = tmp_path / "run"
    assert main(["caption", "train", "--data", "shapes", "--scenes", "12", "--epochs", "1", "--hidden", "16",
                 "--wordvec", "8", "--input-size", "64", "--out", str(run), "--cache", str(tmp_path / "cache"),
                 "-q"]) == 0
    monkeypatch.setattr(task.LoadedCaptioner, "caption_pixels", lambda self, pixels, beam_size=1: [""] * len(pixels))
    capsys.readouterr()
    assert main(["caption", "scene:3", "--model", str(run), "--out", str(tmp_path / "c"), "-q"]) == 0
    assert capsys.readouterr().out.strip() == "scene:3: (empty caption: the model said <END> first)"
    assert json.loads((tmp_path / "c" / "captions.json").read_text())["images"][0]["caption"] == ""


def test_coco_json_train_eval_and_caption_end_to_end(tmp_path, capsys, one_thread):
    path = write_coco_json(tmp_path, n=8)
    run = tmp_path / "run"
    assert main(["caption", "train", "--data", "coco-json", str(path), "--out", str(run), "--epochs", "1",
                 "--hidden", "8", "--wordvec", "4", "--input-size", "32", "--pca", "4", "--cache",
                 str(tmp_path / "cache"), "--eval-images", "1", "-q"]) == 0
    assert main(["caption", "eval", str(run), "--split", "val", "--cache", str(tmp_path / "cache"), "-q"]) == 0
    assert (run / "eval_val.json").is_file()
    capsys.readouterr()
    assert main(["caption", str(tmp_path / "imgs" / "0.png"), "--model", str(run), "--out", str(tmp_path / "o"),
                 "-q"]) == 0
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'imgs' / '0.png'}: ")
    # a model trained on the JSON refuses a folder that now holds a different vocabulary
    write_coco_json(tmp_path, n=8, caption=lambda i: f"entirely new words {i}")
    assert main(["caption", "eval", str(run), "--cache", str(tmp_path / "cache"), "-q"]) == 2
    assert "is not the checkpoint's" in capsys.readouterr().err


def test_eval_report_numbers_follow_from_the_captions_it_writes(tmp_path, capsys, one_thread):
    from collections import Counter

    import h5py
    import numpy as np

    from preimage.captioning.metrics import caption_scores

    vocab = write_coco_h5(tmp_path / "coco", n_train=6, n_val=4)
    run = tmp_path / "run"
    assert main(["caption", "train", "--data", "coco-h5", str(tmp_path / "coco"), "--out", str(run), "--epochs", "1",
                 "--cell", "lstm", "--hidden", "16", "--wordvec", "8", "--batch-size", "4", "--eval-images", "2",
                 "-q"]) == 0
    capsys.readouterr()
    assert main(["caption", "eval", str(run), "-q"]) == 0
    printed = capsys.readouterr().out.splitlines()
    report = json.loads((run / "eval_test.json").read_text())
    examples = report["examples"]
    assert report["images"] == len(examples) == 4
    assert (report["split"], report["beam"], report["epoch"]) == ("test", 1, 1)
    # the references are the data's: each test (val) image's two captions, in order
    with h5py.File(tmp_path / "coco" / "coco2014_captions.h5") as f:
        caps = {s: f[f"{s}_captions"][:] for s in ("train", "val")}
        idx = {s: f[f"{s}_image_idxs"][:] for s in ("train", "val")}
    for i, ex in enumerate(examples):
        assert ex["references"] == [vocab.decode(c) for c, j in zip(caps["val"], idx["val"]) if j == i]
        assert ex["matches_a_reference"] == (ex["caption"] in ex["references"])
    assert report["exact_match"] == pytest.approx(np.mean([ex["matches_a_reference"] for ex in examples]))
    # the baselines: the training set's most frequent caption, and each image's nearest training image's first
    train_caps = [vocab.decode(c) for c in caps["train"]]
    assert report["most_frequent_caption"] == Counter(train_caps).most_common(1)[0][0]
    with h5py.File(tmp_path / "coco" / "train2014_vgg16_fc7_pca.h5") as f:
        train_feats = f["features"][:]
    with h5py.File(tmp_path / "coco" / "val2014_vgg16_fc7_pca.h5") as f:
        val_feats = f["features"][:]
    nearest = ((val_feats[:, None] - train_feats[None]) ** 2).sum(-1).argmin(1)
    first = {int(j): train_caps[k] for k, j in reversed(list(enumerate(idx["train"])))}
    assert [ex["nearest_neighbour"] for ex in examples] == [first[int(j)] for j in nearest]
    # every score is that of the written captions against the references, BLEU in [0, 1]
    refs = [ex["references"] for ex in examples]
    expected = {"lstm (greedy)": caption_scores([ex["caption"] for ex in examples], refs),
                "most frequent caption": caption_scores([report["most_frequent_caption"]] * 4, refs),
                "nearest neighbour": caption_scores([ex["nearest_neighbour"] for ex in examples], refs)}
    assert report["scores"].keys() == expected.keys()
    for label, scores in expected.items():
        assert report["scores"][label] == pytest.approx(scores)
        assert all(0 <= scores[f"bleu{n}"] <= 1 for n in range(1, 5)) and scores["cider"] >= 0
        # ... and the table printed is the report's
        row = next(line for line in printed if line.startswith(label))
        assert [float(v) for v in row[len(label):].split()] == pytest.approx(
            [scores[k] for k in ("bleu1", "bleu2", "bleu3", "bleu4", "cider")], abs=5e-4)


@pytest.mark.parametrize("bad,message", [("json", "is not valid JSON"), ("binary", "is not a JSON text file"),
                                         ("model", "did you mean 'efficientnet_lite0'")])
def test_a_bad_captions_file_or_feature_model_fails_before_the_model_loads(tmp_path, capsys, monkeypatch, bad, message):
    import preimage.models

    def no_model(*a, **k):
        raise AssertionError("the feature model was loaded before the input was checked")

    monkeypatch.setattr(preimage.models, "load_model", no_model)
    path = write_coco_json(tmp_path)
    if bad == "json":
        path = tmp_path / "BAD.json"
        path.write_text("{not json")
    if bad == "binary":  # an image given where the captions file goes
        path = tmp_path / "photo.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    argv = ["caption", "train", "--data", "coco-json", str(path), "--out", str(tmp_path / "run"), "-q"]
    if bad == "model":
        argv += ["--feature-model", "efficientnet_lit0"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("preimage caption train: error: ") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_feature_progress_writes_plain_lines_when_stderr_is_not_a_terminal(capsys, monkeypatch):
    import argparse

    from preimage.cli.caption import _feature_progress

    monkeypatch.delenv("PREIMAGE_PROGRESS", raising=False)
    progress = _feature_progress(argparse.Namespace(quiet=False))
    progress(5)
    progress.close()
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
