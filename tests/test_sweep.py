"""Sweeps: axes, run keys, caching, resume after an interruption, parallel = serial, files, recipes, CLI."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import preimage.sweep as S
from preimage.cli import main
from preimage.errors import PreimageError
from preimage.sweep import build_sweep, load_sweep, normalize_axes, read_axes_file, recipe_axes, run_sweep

# 64 px and a handful of steps keep every run well under a second
SMALL = {"image": "sample:chelsea", "input_size": 64, "steps": 3}


pytestmark = pytest.mark.usefixtures("one_thread")


def small(**axes):
    return {**SMALL, **axes}


@pytest.fixture
def count_inverts(monkeypatch):
    """Count the inversions a sweep really runs (in-process runs only)."""
    calls: list[str] = []
    real = S.invert

    def counting(model, image, **kw):
        calls.append(kw["layers"])
        return real(model, image, **kw)

    monkeypatch.setattr(S.store, "invert", counting)
    return calls


def complete_dirs(out: Path) -> list[Path]:
    return sorted(p for p in (out / "runs").iterdir() if S.is_complete(p))


# -- axes --------------------------------------------------------------------------------------

def test_axes_accept_plural_names_scalars_and_strings_and_drop_duplicates():
    ax = normalize_axes({"images": "sample:chelsea", "layers": ["blocks.1", "blocks.1", "blocks.3 + conv_head"],
                         "lr": ["0.01", 0.05], "steps": "5", "seeds": [0, 1], "lambda-tv": 0})
    assert ax == {"image": ["sample:chelsea"], "layer": ["blocks.1", "blocks.3+conv_head"], "lr": [0.01, 0.05],
                  "steps": [5], "seed": [0, 1], "lambda_tv": [0.0]}
    assert isinstance(ax["steps"][0], int) and isinstance(ax["lambda_tv"][0], float)


def test_tuple_settings_take_a_flat_list_as_one_value():
    assert normalize_axes({"decay_steps": [150, 225]})["decay_steps"] == [(150, 225)]
    assert normalize_axes({"decay_steps": [[150], [225]]})["decay_steps"] == [(150,), (225,)]
    assert normalize_axes({"decay_steps": "150/225"})["decay_steps"] == [(150, 225)]
    assert normalize_axes({"decay_steps": []})["decay_steps"] == [()]


def test_cli_set_gives_tuple_values_with_slashes(tmp_path, capsys):
    # as `preimage sweep --help` says: --set decay_steps=150/225 is one value, a comma starts the next
    assert normalize_axes({"decay_steps": ["150/225", "300"]})["decay_steps"] == [(150, 225), (300,)]
    rc = main(["sweep", "sample:chelsea", "--layers", "blocks.1", "--set", "decay_steps=150/225,300", "--dry-run",
               "-o", str(tmp_path / "s")])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[2] for line in lines] == ["decay_steps 150 · 225", "decay_steps 300"]


@pytest.mark.parametrize("axes, message", [
    ({"learning_rte": [0.1]}, "unknown sweep axis 'learning_rte'"),
    ({"lr": ["fast"]}, "bad value 'fast' for lr"),
    ({"steps": [1.5]}, "bad value 1.5 for steps"),
    ({"preset": ["natrual"]}, "did you mean 'natural'"),
    ({"layer": ["a++b"]}, "empty layer name"),
    ({"model+layer": [["vgg16"]]}, "needs 2 items"),
    ({"lr": []}, "has no values"),
])
def test_bad_axes_raise_one_line_errors(axes, message):
    with pytest.raises(PreimageError, match=message.replace("(", r"\(").replace("+", r"\+")) as info:
        normalize_axes(axes)
    assert "\n" not in str(info.value)


def test_sweep_is_the_cartesian_product_labelled_by_the_swept_axes():
    sw = build_sweep(small(layer=["blocks.1", "blocks.3"], lr=[0.01, 0.05], seed=[0, 1]))
    assert len(sw.runs) == 8 and sw.swept == ["layer", "lr", "seed"]
    assert len({r.key for r in sw.runs}) == 8 and len({r.spec.dirname for r in sw.runs}) == 8
    assert sw.runs[0].labels == {"layer": "blocks.1", "lr": 0.01, "seed": 0}
    assert sw.axes["model"] == ["efficientnet_lite0"]  # the default model is recorded
    assert sw.runs[-1].spec.config().lr == 0.05 and sw.runs[-1].spec.config().seed == 1


def test_composite_axis_varies_settings_together():
    sw = build_sweep({"image": "sample:chelsea", "model+layer": [["hog", "hog"], ["efficientnet_lite0", "blocks.3"]]})
    assert [(r.spec.model, r.spec.layer) for r in sw.runs] == [("hog", "hog"), ("efficientnet_lite0", "blocks.3")]


def test_missing_image_or_layer_is_an_error():
    with pytest.raises(PreimageError, match="no image"):
        build_sweep({"layer": "blocks.3"})
    with pytest.raises(PreimageError, match="no layer"):
        build_sweep({"image": "sample:chelsea"})


def test_invalid_combination_fails_when_the_sweep_is_built():
    with pytest.raises(PreimageError, match="unknown optimizer"):
        build_sweep(small(layer="blocks.1", optimizer=["adam", "rmsprop"]))


def test_steps_move_the_presets_lr_drops_in_proportion():
    base = S.INVERT_PRESETS["default"]
    sw = build_sweep(small(layer="blocks.1", steps=[base.steps * 2]))
    assert sw.runs[0].spec.config().decay_steps == tuple(2 * s for s in base.decay_steps)
    explicit = build_sweep(small(layer="blocks.1", steps=[100], decay_steps=[[50]]))
    assert explicit.runs[0].spec.config().decay_steps == (50,)


# -- run keys ----------------------------------------------------------------------------------

def test_key_depends_on_every_setting_and_on_image_content(tmp_path):
    from PIL import Image

    def key(**kw):
        return build_sweep(small(layer="blocks.1", **kw)).runs[0].key

    assert key() == key()
    assert len({key(), key(lr=0.5), key(seed=1), key(model="efficientnet_lite1"), key(input_size=96),
                key(preset="natural"), key(weights="none")}) == 7
    f = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), (10, 20, 30)).save(f)
    k1 = key(image=str(f))
    Image.new("RGB", (32, 32), (10, 20, 31)).save(f)
    os.utime(f, ns=(1, 1))  # a new mtime and content
    assert key(image=str(f)) != k1


def test_key_includes_the_package_version(monkeypatch):
    import preimage

    k = build_sweep(small(layer="blocks.1")).runs[0].key
    monkeypatch.setattr(preimage, "__version__", "99.0")
    assert build_sweep(small(layer="blocks.1")).runs[0].key != k


# -- config files ------------------------------------------------------------------------------

def test_toml_and_yaml_files_give_the_same_sweep_as_a_dict(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text('image = "sample:chelsea"\nlr = [0.01, 0.05]\nsteps = 3\ninput_size = 64\n'
                    '"model+layer" = [["efficientnet_lite0", "blocks.1"]]\n')
    yaml = tmp_path / "s.yaml"
    yaml.write_text("image: sample:chelsea\nlr: [0.01, 0.05]\nsteps: 3\ninput_size: 64\n"
                    "model+layer:\n  - [efficientnet_lite0, blocks.1]\n")
    direct = build_sweep({"image": "sample:chelsea", "lr": [0.01, 0.05], "steps": 3, "input_size": 64,
                          "model+layer": [["efficientnet_lite0", "blocks.1"]]})
    for f in (toml, yaml):
        assert [r.key for r in build_sweep(read_axes_file(f)).runs] == [r.key for r in direct.runs]


@pytest.mark.parametrize("name, text, message", [
    ("bad.toml", "lr = [0.1,", "cannot parse"),
    ("bad.yaml", "lr: [0.1,", "cannot parse"),
    ("list.yaml", "- 1\n- 2\n", "expected a table"),
    ("s.json", "{}", "unknown sweep file type"),
])
def test_bad_config_files_raise_one_line_errors(tmp_path, name, text, message):
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(PreimageError, match=message) as info:
        read_axes_file(f)
    assert "\n" not in str(info.value)
    with pytest.raises(PreimageError, match="not found"):
        read_axes_file(tmp_path / "missing.toml")


# -- running, caching, resuming ----------------------------------------------------------------

def test_second_sweep_recomputes_nothing(tmp_path, count_inverts):
    axes = small(layer=["blocks.1", "blocks.3"], lambda_tv=[0, 1])
    first = run_sweep(axes, tmp_path / "s")
    assert len(count_inverts) == 4 and len(first.computed) == 4 and first.ok
    again = run_sweep(axes, tmp_path / "s")
    assert len(count_inverts) == 4  # no new inversion
    assert again.computed == [] and sorted(again.cached) == sorted(first.computed)
    # one more value on an axis: only the new runs are computed
    more = run_sweep(small(layer=["blocks.1", "blocks.3"], lambda_tv=[0, 1, 10]), tmp_path / "s")
    assert len(more.computed) == 2 and len(more.cached) == 4 and len(count_inverts) == 6


def test_force_recomputes(tmp_path, count_inverts):
    run_sweep(small(layer="blocks.1"), tmp_path / "s")
    run_sweep(small(layer="blocks.1"), tmp_path / "s", force=True)
    assert len(count_inverts) == 2


def test_run_folders_hold_the_manifest_images_and_spec(tmp_path):
    res = run_sweep(small(layer=["blocks.1"], lr=[0.01, 0.05]), tmp_path / "s")
    meta, runs = load_sweep(tmp_path / "s")
    assert meta["swept"] == ["lr"] and [r["labels"] for r in runs] == [{"lr": 0.01}, {"lr": 0.05}]
    for run in runs:
        assert run["complete"]
        names = {p.name for p in run["path"].iterdir()}
        assert {"run.json", "manifest.json", "history.json", "chelsea.png", "chelsea_compare.png",
                "chelsea_original.png"} <= names
        assert run["manifest"]["config"]["lr"] == run["labels"]["lr"]
        assert run["info"]["key"] == run["key"] and len(run["history"]) == 3
        assert S.RunSpec.from_dict(run["spec"]).key == run["key"]  # the spec round-trips to its key
    assert sorted(r["key"] for r in runs) == sorted(res.computed)


def test_resume_after_an_interruption_between_runs(tmp_path, count_inverts):
    axes = small(layer=["blocks.1", "blocks.3"], lr=[0.01, 0.05])

    def stop_after_first(run, status):
        if status == "computed":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(axes, tmp_path / "s", on_result=stop_after_first)
    assert len(complete_dirs(tmp_path / "s")) == 1
    assert not list((tmp_path / "s" / "runs").glob(".tmp-*"))
    res = run_sweep(axes, tmp_path / "s")
    assert len(res.cached) == 1 and len(res.computed) == 3 and len(count_inverts) == 4


def test_interruption_inside_a_run_leaves_no_run_folder(tmp_path, monkeypatch):
    real = S.invert
    calls = []

    def interrupted_second(model, image, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C during the second optimization
        return real(model, image, **kw)

    monkeypatch.setattr(S.store, "invert", interrupted_second)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(small(layer=["blocks.1", "blocks.3", "conv_head"]), tmp_path / "s")
    runs = list((tmp_path / "s" / "runs").iterdir())
    assert len(runs) == 1 and S.is_complete(runs[0])


def test_interrupted_status_is_not_cached(tmp_path, monkeypatch):
    real = S.invert

    def marks_interrupted(model, image, **kw):
        inv = real(model, image, **kw)
        inv.result.status = "interrupted"  # what optimize returns after Ctrl-C
        return inv

    monkeypatch.setattr(S.store, "invert", marks_interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(small(layer="blocks.1"), tmp_path / "s")
    assert list((tmp_path / "s" / "runs").iterdir()) == []


def test_stale_temporary_folder_of_a_killed_process_is_removed(tmp_path):
    axes = small(layer="blocks.1")
    spec = build_sweep(axes).runs[0].spec
    stale = tmp_path / "s" / "runs" / f".tmp-{spec.dirname}-999999999"
    stale.mkdir(parents=True)
    (stale / "chelsea.png").write_bytes(b"half")
    res = run_sweep(axes, tmp_path / "s")
    assert not stale.exists() and len(res.computed) == 1
    assert [p.name for p in (tmp_path / "s" / "runs").iterdir()] == [spec.dirname]


def test_a_failed_run_is_reported_and_not_cached(tmp_path, monkeypatch):
    real = S.invert

    def fails_on_blocks3(model, image, **kw):
        if kw["layers"] == "blocks.3":
            raise RuntimeError("out of memory\nsecond line")
        return real(model, image, **kw)

    monkeypatch.setattr(S.store, "invert", fails_on_blocks3)
    res = run_sweep(small(layer=["blocks.1", "blocks.3"]), tmp_path / "s")
    assert not res.ok and len(res.computed) == 1
    assert list(res.failed.values()) == ["RuntimeError: out of memory"]
    assert len(complete_dirs(tmp_path / "s")) == 1


def test_unknown_layer_or_image_fails_before_any_run(tmp_path, count_inverts):
    with pytest.raises(PreimageError, match="blocks.99"):
        run_sweep(small(layer=["blocks.1", "blocks.99"]), tmp_path / "s")
    with pytest.raises(PreimageError, match="sample photo"):
        run_sweep(small(layer="blocks.1", image=["sample:chelsea", "sample:nosuchphoto"]), tmp_path / "s")
    assert count_inverts == []


def test_parallel_processes_give_the_serial_results(tmp_path):
    # hog: no weights, fast to build in each spawned worker
    axes = {"image": ["sample:chelsea", "sample:coffee"], "model": "hog", "layer": "hog", "input_size": 32,
            "steps": 4, "lambda_tv": [0.0, 1.0]}
    serial = run_sweep(axes, tmp_path / "serial")
    parallel = run_sweep(axes, tmp_path / "parallel", jobs=2)
    assert len(parallel.computed) == 4 and parallel.ok
    _, a = load_sweep(tmp_path / "serial")
    _, b = load_sweep(tmp_path / "parallel")
    assert [r["key"] for r in a] == [r["key"] for r in b]
    for ra, rb in zip(a, b):
        ma, mb = ra["manifest"]["metrics"], rb["manifest"]["metrics"]
        assert ma.keys() == mb.keys()
        for name in ma:
            assert ma[name]["psnr"] == pytest.approx(mb[name]["psnr"], rel=1e-4)
            assert ma[name]["feature_error"]["hog"] == pytest.approx(mb[name]["feature_error"]["hog"], rel=1e-4)
        assert rb["info"]["threads"] == max(1, S._cores() // 2)
    assert len(serial.computed) == 4


def test_random_init_models_are_the_same_in_every_process():
    spec = build_sweep(small(model="resnet18", weights="none", layer="layer1")).runs[0].spec
    S._MODELS.clear()
    a = next(S._model(spec, "cpu").net.parameters()).clone()
    S._MODELS.clear()
    b = next(S._model(spec, "cpu").net.parameters()).clone()
    S._MODELS.clear()
    assert a.equal(b)


def test_sweep_json_lists_the_axes_and_runs(tmp_path):
    run_sweep(small(layer=["blocks.1", "blocks.3+conv_head"]), tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert meta["axes"]["layer"] == ["blocks.1", "blocks.3+conv_head"] and meta["swept"] == ["layer"]
    assert [r["labels"]["layer"] for r in meta["runs"]] == ["blocks.1", "blocks.3+conv_head"]
    assert all(not Path(r["dir"]).is_absolute() for r in meta["runs"])


def test_shared_cache_folder(tmp_path, count_inverts):
    axes = small(layer="blocks.1")
    run_sweep(axes, tmp_path / "a", cache=tmp_path / "cache")
    res = run_sweep(axes, tmp_path / "b", cache=tmp_path / "cache")
    assert len(count_inverts) == 1 and len(res.cached) == 1
    _, runs = load_sweep(tmp_path / "b")
    assert runs[0]["complete"]


# -- recipes -----------------------------------------------------------------------------------

def test_recipes_on_the_embedded_model():
    axes, display, _ = recipe_axes("depth")
    assert axes["layer"] == ["blocks.1", "blocks.3", "conv_head", "blocks.3+conv_head"]
    assert display["layer"]["conv_head"] == "conv_head (deep)"
    axes, _, _ = recipe_axes("lr")
    assert axes["lr"] == [0.001, 0.01] and axes["steps"] == 1000 and axes["optimizer"] == "adam"
    assert axes["preset"] == "original"  # the lr values are those of the normalized input space
    axes, _, _ = recipe_axes("tv")
    base = S.config_for("default").lambda_tv
    assert axes["lambda_tv"] == [0.0, base, 10 * base]
    axes, _, _ = recipe_axes("models")
    triples = {m: (layer, preset) for m, layer, preset in axes["model+layer+preset"]}
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "hog", "dsift"} <= set(triples)
    assert triples["hog"][1] == "shallow" and triples["efficientnet_lite1"] == ("blocks.3", "default")


def test_recipe_layers_exist_in_their_models(vgg16, resnet18, lite0):
    from preimage.layers import parse_layer_spec, resolve_layer

    for model, name in ((vgg16, "vgg16"), (resnet18, "resnet18"), (lite0, "efficientnet_lite0")):
        axes, _, _ = recipe_axes("depth", model=name)
        for spec in axes["layer"]:
            for layer, _ in parse_layer_spec(spec):
                resolve_layer(model, layer)
    assert recipe_axes("depth", model="vgg16")[0]["layer"] == ["conv1_1", "conv3_1", "fc6", "conv3_1+fc6"]


def test_unknown_recipe():
    with pytest.raises(PreimageError, match="did you mean 'depth'"):
        recipe_axes("dept")
    with pytest.raises(PreimageError, match="one stage"):
        recipe_axes("depth", model="hog")


# -- CLI ---------------------------------------------------------------------------------------

def test_cli_dry_run_lists_the_runs(tmp_path, capsys):
    rc = main(["sweep", "--recipe", "depth", "sample:chelsea", "--dry-run", "-o", str(tmp_path / "s")])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0 and len(out) == 4 and all("to run" in line for line in out)
    assert "conv_head (deep)" in out[2]


def test_progress_lines_end_with_every_run_counted(tmp_path, capsys):
    run_sweep(small(layer="blocks.1", lambda_tv=[0, 1]), tmp_path / "s", progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sweep:")]
    assert lines[-1].startswith("sweep: 6/6 steps (100%)") and lines[-1].endswith("runs 2/2 (+0 cached)")


def test_cli_runs_a_sweep_and_resumes(tmp_path, capsys):
    args = ["sweep", "sample:chelsea", "--layers", "blocks.1,blocks.3", "--tv", "0,1", "--steps", "3",
            "--input-size", "64", "-o", str(tmp_path / "s"), "-q"]
    assert main(args) == 0
    assert len(complete_dirs(tmp_path / "s")) == 4
    assert main(args + ["--dry-run"]) == 0
    assert capsys.readouterr().out.count("cached") == 4
    assert main(args + ["--dry-run", "--force"]) == 0  # --force computes the cached runs again
    assert capsys.readouterr().out.count("cached, to run again (--force)") == 4


def test_cli_config_file_and_options_combine(tmp_path, capsys):
    f = tmp_path / "s.toml"
    f.write_text('image = "sample:chelsea"\nlayer = ["blocks.1", "blocks.3"]\nsteps = 3\ninput_size = 64\n')
    assert main(["sweep", "--config", str(f), "--lr", "0.01,0.02,0.03", "-n", "-o", str(tmp_path / "s")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 6
    # an option replaces the file's axis of the same name
    assert main(["sweep", "--config", str(f), "--layers", "conv_head", "-n", "-o", str(tmp_path / "s")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["--recipe", "dpth"], "unknown recipe 'dpth'"),
    (["sample:chelsea", "--layers", "blocks.1", "--lr", "fast"], "bad value 'fast' for lr"),
    (["sample:chelsea", "--layers", "blocks.1", "--set", "jitterr=0,4"], "unknown sweep axis 'jitterr'"),
    (["sample:chelsea", "--layers", "blocks.1", "--set", "jitter"], "--set takes FIELD=V1,V2"),
    (["sample:chelsea", "--layers", "blockz.1"], "blockz.1"),
    (["sample:chelsea"], "no layer"),
    (["--config", "nosuch.toml"], "sweep file not found"),
    (["--recipe", "depth", "--jobs", "2", "--ray", "local"], "either --jobs"),
    (["--recipe", "models", "--layers", "blocks.1"], "picks a middle layer"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    rc = main(["sweep", *args, "-o", str(tmp_path / "s"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


def test_cli_ctrl_c_exits_130_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    real = S.invert
    calls = []

    def interrupt_second(model, image, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(model, image, **kw)

    monkeypatch.setattr(S.store, "invert", interrupt_second)
    rc = main(["sweep", "sample:chelsea", "--layers", "blocks.1,blocks.3", "--steps", "2", "--input-size", "64",
               "-o", str(tmp_path / "s"), "-q"])
    err = capsys.readouterr().err
    assert rc == 130 and "1 run(s) finished" in err and "again" in err
    assert len(list((tmp_path / "s" / "runs").iterdir())) == 1


def test_in_process_progress_bar_moves_at_every_step(tmp_path, monkeypatch):
    updates: list[int] = []

    class Bar:
        def __init__(self, total, **_kw):
            self.total = total

        def update(self, n):
            updates.append(n)

        def set_postfix_str(self, _s):
            pass

        def close(self):
            pass

    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    monkeypatch.setenv("PREIMAGE_PROGRESS", "bar")  # the bar a terminal gets (pytest's stderr is not one)
    run_sweep(small(layer=["blocks.1", "blocks.3"]), tmp_path / "s", progress=True)
    steps = SMALL["steps"]
    # each run: one update per step, then the remainder (0) when it finishes
    assert updates == ([1] * steps + [0]) * 2


def test_the_memory_check_counts_the_parallel_jobs(tmp_path, capsys, count_inverts, monkeypatch):
    from preimage.memory import estimate_bytes, limit
    from preimage.models import load_model
    from preimage.sweep import executors, validate_sweep

    monkeypatch.setattr(executors, "_cores", lambda: 2)

    one = estimate_bytes(load_model("efficientnet_lite0", input_size=64), batch=1, size=64)
    cap = str(int(one * 1.5))  # one run fits, two at once do not
    sw = build_sweep(small(layer=["blocks.1", "blocks.3"]))
    with limit(cap):
        validate_sweep(sw, tmp_path / "s", jobs=1)
        with pytest.raises(PreimageError, match="in each of 2 parallel jobs .*fewer --jobs"):
            validate_sweep(sw, tmp_path / "s", jobs=2)
        with pytest.raises(PreimageError, match="2 parallel jobs"):
            run_sweep(sw, tmp_path / "s", jobs=4)  # no more jobs than runs
        validate_sweep(sw, tmp_path / "s", jobs=2, pending=1)  # the other run is cached: one at a time
    rc = main(["sweep", "sample:chelsea", "--layers", "blocks.1,blocks.3", "--steps", "3", "--input-size", "64",
               "--jobs", "2", "--max-memory", cap, "-o", str(tmp_path / "s")])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "preimage sweep: error: inverting 1 image at 64 px with efficientnet_lite0 in each of 2 parallel jobs" in err
    assert not (tmp_path / "s").exists() and count_inverts == []
    # with one of the two runs cached, one is left to run: it fits, and only it runs
    base = ["sweep", "sample:chelsea", "--steps", "3", "--input-size", "64", "-o", str(tmp_path / "s"), "-q"]
    assert main([*base, "--layers", "blocks.1"]) == 0 and count_inverts == ["blocks.1"]
    assert main([*base, "--layers", "blocks.1,blocks.3", "--jobs", "2", "--max-memory", cap]) == 0
    assert count_inverts == ["blocks.1", "blocks.3"]
    monkeypatch.setattr(executors, "_cores", lambda: 1)  # --jobs 2 on one core runs one at a time: it fits
    with limit(cap):
        validate_sweep(sw, tmp_path / "s", jobs=2)


@pytest.mark.parametrize("kw, words", [({"jobs": 0}, "jobs must be"), ({"threads": -2}, "threads must be")])
def test_a_bad_job_or_thread_count_is_refused_before_anything_is_written(tmp_path, kw, words):
    with pytest.raises(PreimageError, match=words):
        run_sweep({"image": ["sample:chelsea"], "layer": ["blocks.1"], "steps": [1]}, tmp_path / "s", **kw)
    assert not (tmp_path / "s").exists()


def test_a_sweep_folder_is_not_taken_over_by_a_sweep_that_leaves_its_runs_out(tmp_path, capsys):
    base = ["sweep", "sample:chelsea", "--steps", "2", "--input-size", "64", "-q"]
    first = tmp_path / "s"
    assert main([*base, "--layers", "blocks.1,blocks.2", "-o", str(first)]) == 0
    before = (first / "sweep.json").read_text()
    capsys.readouterr()
    # another sweep without blocks.2: one line, exit 2, the first sweep's sweep.json as it was
    assert main([*base, "--layers", "blocks.1", "--seeds", "0,1", "-o", str(first)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "holds another sweep, with 1 of its 2 runs not in this one" in err and f"--cache {first / 'runs'}" in err
    assert (first / "sweep.json").read_text() == before
    # ... and a dry run of it says so too
    assert main([*base, "--layers", "blocks.1", "--seeds", "0,1", "-o", str(first), "--dry-run"]) == 2
    assert "holds another sweep" in capsys.readouterr().err
    # ... which the new folder may share: its blocks.1 run, seed 0, comes from the cache
    assert main([*base[:-1], "--layers", "blocks.1", "--seeds", "0,1", "-o", str(tmp_path / "t"),
                 "--cache", str(first / "runs")]) == 0
    assert "1 computed, 1 cached" in capsys.readouterr().err
    # the same sweep again, or one that extends it, uses the folder as before
    assert main([*base, "--layers", "blocks.1,blocks.2", "-o", str(first)]) == 0
    assert main([*base, "--layers", "blocks.1,blocks.2,blocks.3", "-o", str(first)]) == 0
    assert len(load_sweep(first)[1]) == 3
