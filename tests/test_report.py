"""Reports of a sweep: grid, curves, metrics table, HTML page; partial sweeps; CLI; Ray = local table."""
from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from preimage.cli import main
from preimage.errors import PreimageError
from preimage.report import CSV_COLUMNS, metrics_rows, write_report
from preimage.sweep import load_sweep, run_sweep

AXES = {"image": "sample:chelsea", "input_size": 64, "steps": 3, "layer": ["blocks.1", "blocks.3"],
        "lambda_tv": [0.0, 1.0]}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("sweep") / "s"
    run_sweep(AXES, out)
    torch.set_num_threads(before)
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_report_writes_every_output(sweep_dir, tmp_path):
    paths = write_report(sweep_dir, tmp_path / "r")
    assert set(paths) == {"grid", "curves", "metrics", "csv", "html"}
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    for key in ("grid", "curves", "metrics"):
        with Image.open(paths[key]) as im:
            assert im.format == "PNG" and im.width > 300


def test_grid_rows_and_columns_follow_the_swept_axes(sweep_dir, tmp_path):
    from preimage.report import _layout

    meta, runs = load_sweep(sweep_dir)
    col, rows, col_values, row_keys = _layout(meta, runs, None)  # columns: the last swept axis
    assert (col, rows, col_values, row_keys) == ("lambda_tv", ["layer"], [0.0, 1.0], [("blocks.1",), ("blocks.3",)])
    col, rows, _, row_keys = _layout(meta, runs, "layer")
    assert (col, rows, row_keys) == ("layer", ["lambda_tv"], [(0.0,), (1.0,)])
    # original + 2 columns of 200 px cells, 2 rows, under a header
    with Image.open(write_report(sweep_dir, tmp_path / "r", cell=200)["grid"]) as im:
        assert 3 * 200 < im.width < 3 * 200 + 200 and 2 * 200 + 60 < im.height < 3 * 200


def test_grid_captions_are_never_cut_in_small_cells(sweep_dir, tmp_path, cut_captions):
    cut = cut_captions
    # 24 px cells: "original" or "blocks.1+blocks.3" would be cut to "or…"; the cells widen instead
    with Image.open(write_report(sweep_dir, tmp_path / "r", cell=24)["grid"]) as im:
        assert im.width > 3 * 40
    assert cut == []


def test_a_swept_tuple_setting_finds_its_runs_in_the_grid_and_page(tmp_path, monkeypatch):
    import preimage.viz as viz

    out = tmp_path / "s"
    run_sweep({"image": "sample:chelsea", "input_size": 64, "steps": 3, "layer": "blocks.1",
               "decay_steps": [[1, 2], [2]]}, out)
    captions, grid = [], viz.grid
    monkeypatch.setattr(viz, "grid", lambda cells, **kw: captions.extend(kw["labels"]) or grid(cells, **kw))
    page = write_report(out, tmp_path / "r")["html"].read_text()
    assert captions == ["original", "decay_steps 1 · 2", "decay_steps 2"]  # not "decay_steps [1, 2] (not run)"
    assert "decay_steps 1 · 2, decay_steps 2</td>" in page


def test_images_in_columns_show_each_column_its_own_original(tmp_path, monkeypatch):
    import preimage.viz as viz

    out = tmp_path / "s"
    run_sweep({"image": ["sample:chelsea", "sample:coffee"], "input_size": 64, "steps": 3, "layer": "blocks.1",
               "lambda_tv": [0.0, 1.0]}, out)
    seen, grid = {}, viz.grid
    monkeypatch.setattr(viz, "grid", lambda cells, **kw: seen.update(cells=cells, **kw) or grid(cells, **kw))
    write_report(out, tmp_path / "r", cols="image")
    assert seen["ncols"] == 2 and seen["row_labels"] == ["original", "TV 0", "TV 1"]
    assert seen["labels"][:4] == ["original sample:chelsea", "original sample:coffee", "sample:chelsea",
                                  "sample:coffee"]
    chelsea, coffee = seen["cells"][:2]
    assert chelsea.tobytes() != coffee.tobytes()  # not the first photo twice
    write_report(out, tmp_path / "r")  # the default: images in rows, each row with its original first
    assert seen["ncols"] == 3 and seen["labels"][0] == seen["labels"][3] == "original"


def test_csv_has_one_row_per_run_with_the_manifest_metrics(sweep_dir, tmp_path):
    rows = read_csv(write_report(sweep_dir, tmp_path / "r")["csv"])
    _, runs = load_sweep(sweep_dir)
    assert len(rows) == 4 and [r["key"] for r in rows] == [r["key"] for r in runs]
    assert set(CSV_COLUMNS) <= set(rows[0]) and {"layer", "lambda_tv"} <= set(rows[0])
    assert [(r["layer"], float(r["lambda_tv"])) for r in rows] == [
        ("blocks.1", 0.0), ("blocks.1", 1.0), ("blocks.3", 0.0), ("blocks.3", 1.0)]
    assert [r["run"] for r in rows] == ["blocks.1 · TV 0", "blocks.1 · TV 1", "blocks.3 · TV 0", "blocks.3 · TV 1"]
    # the settings in effect: λ_TV scaled by the layer's stride (0 stays 0), lr as configured up to stride 16
    assert [float(r["lambda_tv_used"]) <= float(r["lambda_tv"]) for r in rows] == [True] * 4
    assert all(float(r["lr_used"]) == float(r["lr"]) for r in rows)
    for row, run in zip(rows, runs):
        m = run["manifest"]["metrics"]["chelsea"]
        assert float(row["psnr_db"]) == pytest.approx(m["psnr"], rel=1e-5)
        assert float(row["ssim"]) == pytest.approx(m["ssim"], rel=1e-5)
        assert float(row["tv_ratio"]) == pytest.approx(m["tv_ratio"], rel=1e-5)
        assert float(row["feature_error"]) == pytest.approx(m["feature_error"][row["layer"]], rel=1e-5)
        assert row["top1_agrees"] == str(m["top1_agrees"]) and row["top1_original"] == "Egyptian cat"
        assert float(row["wall_time_s"]) > 0 and row["status"] == "done"


def test_html_page_is_self_contained(sweep_dir, tmp_path):
    page = write_report(sweep_dir, tmp_path / "r")["html"].read_text()
    srcs = re.findall(r"src='([^']*)'", page)
    assert len(srcs) == 3 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in page and "<script" not in page and "href=" not in page
    assert "<table>" in page and "blocks.3 · TV 1" in page and "PSNR (dB)" in page


def test_combined_layers_report_the_mean_and_each_layer(tmp_path):
    out = tmp_path / "s"
    run_sweep({**AXES, "layer": ["blocks.1+blocks.3"], "lambda_tv": 1.0}, out)
    rows = read_csv(write_report(out)["csv"])
    by_layer = dict(kv.split("=") for kv in rows[0]["feature_error_by_layer"].split(";"))
    assert set(by_layer) == {"blocks.1", "blocks.3"}
    mean = sum(float(v) for v in by_layer.values()) / 2
    assert float(rows[0]["feature_error"]) == pytest.approx(mean, rel=1e-3)
    assert (out / "report" / "report.html").is_file()  # default output folder


def test_partial_sweep_shows_missing_runs(sweep_dir, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(sweep_dir, partial)
    _, runs = load_sweep(partial)
    shutil.rmtree(runs[1]["path"])
    rows = read_csv(write_report(partial)["csv"])
    assert len(rows) == 4 and rows[1]["status"] == "not run" and rows[1]["psnr_db"] == ""
    assert "3 of 4 runs done" in (partial / "report" / "report.html").read_text()


def test_report_errors(tmp_path, sweep_dir):
    with pytest.raises(PreimageError, match="not a sweep folder"):
        write_report(tmp_path)
    with pytest.raises(PreimageError, match="not a swept axis"):
        write_report(sweep_dir, tmp_path / "r", cols="lr")
    empty = tmp_path / "empty"
    shutil.copytree(sweep_dir, empty)
    shutil.rmtree(empty / "runs")
    with pytest.raises(PreimageError, match="no run .* has finished"):
        write_report(empty)


def test_a_report_that_fails_while_saving_leaves_the_old_report(sweep_dir, tmp_path, full_disk, capsys):
    out = tmp_path / "r"
    old = {p.name: p.read_bytes() for p in write_report(sweep_dir, out).values()}
    full_disk("report.html")
    assert main(["report", str(sweep_dir), "-o", str(out), "--cell", "100", "-q"]) == 2
    assert capsys.readouterr().err.strip() == f"preimage report: error: cannot write {out / 'report.html'}: No space left on device"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old  # the grid drawn at 100 px never appeared


def test_cli_report(sweep_dir, tmp_path, capsys):
    assert main(["report", str(sweep_dir), "-o", str(tmp_path / "r"), "-q"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "r" / "report.html")
    assert main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "no such folder" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow  # starting Ray and its workers takes ~10 s
def test_ray_gives_the_same_table_as_local_processes(sweep_dir, tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'preimage[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        res = run_sweep(AXES, tmp_path / "ray", ray_address="auto")
    finally:
        ray.shutdown()
    assert res.ok and len(res.computed) == 4
    volatile = {"dir", "wall_time_s", "total_time_s"}
    local = metrics_rows(*load_sweep(sweep_dir))
    remote = metrics_rows(*load_sweep(tmp_path / "ray"))
    assert len(remote) == len(local) == 4
    for a, b in zip(local, remote):
        assert a.keys() == b.keys()
        for k in a:
            if k in volatile:
                continue
            if isinstance(a[k], float):
                assert b[k] == pytest.approx(a[k], rel=1e-4), k
            else:
                assert b[k] == a[k], k
    # and the Ray results land in the same cache: a local sweep over them computes nothing
    again = run_sweep(AXES, tmp_path / "ray")
    assert again.computed == [] and len(again.cached) == 4


def test_a_ray_address_that_cannot_be_reached_writes_nothing(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'preimage[ray]')")

    def unreachable(*args, **kwargs):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", unreachable)
    with pytest.raises(PreimageError, match="cannot connect to Ray at auto"):
        run_sweep(AXES, tmp_path / "out", ray_address="auto", validate=False)
    assert not (tmp_path / "out").exists()


def test_grid_header_lists_only_the_settings_every_run_shares(sweep_dir):
    from preimage.report import _fixed_settings

    meta, runs = load_sweep(sweep_dir)
    fixed = _fixed_settings(meta, runs)
    assert "model efficientnet_lite0" in fixed and "steps 3" in fixed and "input 64 px" in fixed
    assert not any(f.startswith("TV") for f in fixed)  # swept
    runs[1]["manifest"]["config"]["lr"] = 123.0  # one run differs: lr is no longer shared
    assert not any(f.startswith("lr") for f in _fixed_settings(meta, runs))


def test_a_bad_cell_width_names_the_cell_not_a_damaged_run(sweep_dir, tmp_path):
    with pytest.raises(PreimageError, match="cell must be a whole number of pixels >= 1, not -3"):
        write_report(sweep_dir, tmp_path / "r", cell=-3)
