"""Reports of a sweep: grid, curves, metrics table and one self-contained HTML page; and the Ray path
giving the same table as local processes."""
from __future__ import annotations

import csv
import re

import pytest
from PIL import Image

from preimage.cli import main
from preimage.errors import PreimageError
from preimage.report import write_report
from preimage.sweep import run_sweep

AXES = {"image": "sample:chelsea", "input_size": 64, "steps": 3, "layer": ["blocks.1", "blocks.3"],
        "lambda_tv": [0.0, 0.4]}


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_report_writes_grid_curves_table_and_a_self_contained_page(tmp_path):
    run_sweep(AXES, tmp_path / "s")
    paths = write_report(tmp_path / "s")
    assert set(paths) == {"grid", "curves", "metrics", "csv", "html"}
    rows = _rows(paths["csv"])
    assert len(rows) == 4
    header = set(rows[0])
    for column in ("feature_error", "psnr_db", "ssim", "tv_ratio", "top1_agrees", "wall_time_s"):
        assert any(column in h for h in header), header
    assert any("feature" in h for h in header) and any("top1" in h or "agree" in h for h in header)
    grid = Image.open(paths["grid"])
    assert grid.width > 2 * 64 and grid.height > 2 * 64   # 2 rows x (original + 2 columns) at least
    assert Image.open(paths["curves"]).width > 300
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") >= 3
    assert not re.search(r'src="(?!data:)', page)           # nothing loaded from elsewhere
    assert "blocks.1" in page and "blocks.3" in page


def test_report_of_an_empty_folder_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(PreimageError):
        write_report(tmp_path)
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_ray_path_gives_the_same_table_as_local_processes(tmp_path):
    ray = pytest.importorskip("ray", reason="the Ray path needs `pip install 'preimage[ray]'`")
    axes = {**AXES, "lambda_tv": [0.4]}
    run_sweep(axes, tmp_path / "local")
    try:
        run_sweep(axes, tmp_path / "ray", ray_address="local")
    finally:
        if ray.is_initialized():
            ray.shutdown()
    local = _rows(write_report(tmp_path / "local")["csv"])
    remote = _rows(write_report(tmp_path / "ray")["csv"])
    drop = {"wall_time_s", "total_time_s"}
    strip = lambda rows: [{k: v for k, v in r.items() if k not in drop} for r in rows]  # noqa: E731
    assert strip(local) == strip(remote)
