"""Image loading: every Pillow format and mode as RGB, EXIF orientation, samples, bad input, round trips."""
from __future__ import annotations

import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from preimage.errors import PreimageError
from preimage.images import (
    MIN_SIDE, SAMPLES, as_pixels, encode_png, image_name, load_batch, load_image, load_tensor, save_image, to_pil,
    to_tensor,
)

from conftest import png_bytes, rgb_pattern

LOSSLESS = [
    ("PNG", "RGB"), ("PNG", "L"), ("PNG", "1"), ("PNG", "P"), ("PNG", "P+transparency"), ("PNG", "RGBA"),
    ("PNG", "LA"), ("PNG", "I;16"), ("BMP", "RGB"), ("BMP", "L"), ("BMP", "P"), ("TIFF", "RGB"),
    ("TIFF", "L"), ("TIFF", "RGBA"), ("TIFF", "CMYK"), ("TIFF", "I;16"), ("TIFF", "I"), ("TIFF", "F"),
    ("GIF", "P"), ("GIF", "P+transparency"), ("GIF", "L"), ("WEBP", "RGB"), ("WEBP", "RGBA"),
]


def _array(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img)


@pytest.mark.parametrize("fmt,mode", LOSSLESS, ids=[f"{f}-{m}" for f, m in LOSSLESS])
def test_lossless_formats_and_modes_load_as_exact_rgb(image_file, fmt, mode):
    extra = {"lossless": True} if fmt == "WEBP" else {}
    path, expected = image_file(fmt, mode, **extra)
    got = _array(load_image(path))
    assert got.shape == expected.shape
    # alpha blending rounds differently by one level at most; everything else is exact
    tol = 1 if mode in ("RGBA", "LA") else 0
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= tol


def test_alpha_is_composited_over_white(image_file):
    path, _ = image_file("PNG", "RGBA")
    got = _array(load_image(path))
    w = got.shape[1]
    assert (got[:, : w // 3] == 255).all()  # fully transparent -> white
    opaque = rgb_pattern(w, got.shape[0])[:, 2 * w // 3:]
    assert (got[:, 2 * w // 3:] == opaque).all()  # fully opaque -> unchanged


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_jpeg_loads_as_rgb_close_to_the_original(image_file, mode):
    path, expected = image_file("JPEG", mode, quality=95)
    got = _array(load_image(path))
    assert got.shape == expected.shape
    assert np.abs(got.astype(float) - expected).mean() < 4


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    v = np.array([[0, 257, 128 * 257, 65535, 1000, 30000, 60000, 65000]] * 8, np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(v).save(path)
    got = _array(load_image(path))[..., 0]
    assert got[0].tolist() == np.round(v[0] / 257).astype(int).tolist()


def test_sixteen_bit_pgm_dark_image_is_scaled_like_a_bright_one(tmp_path):
    # Pillow reads 16-bit PGM as mode "I"; a dark image (all values <= 255) must not be read as 8-bit
    v = np.full((8, 8), 200, np.uint16)
    path = tmp_path / "dark.pgm"
    path.write_bytes(b"P5\n8 8\n65535\n" + v.astype(">u2").tobytes())
    assert Image.open(path).mode == "I"
    got = _array(load_image(path))
    assert (got == round(200 / 257)).all()


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 2
    got = _array(load_image(path))
    assert (got == [255, 0, 0]).all()


def test_exif_orientation_is_honoured(tmp_path):
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :20] = (255, 0, 0)  # left half red
    rgb[:, 20:] = (0, 0, 255)  # right half blue
    img = Image.fromarray(rgb)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    path = tmp_path / "rotated.jpg"
    img.save(path, "JPEG", quality=95, exif=exif.tobytes())
    loaded = load_image(path)
    assert loaded.size == (20, 40)  # width and height swapped
    got = np.asarray(loaded).astype(int)
    assert got[:15, :, 0].mean() > 200 and got[:15, :, 2].mean() < 50  # the left (red) side is now on top
    assert got[25:, :, 2].mean() > 200 and got[25:, :, 0].mean() < 50
    # the same file opened by Pillow and given in memory is turned upright too, and only once
    want = to_tensor(loaded)
    with Image.open(path) as opened:
        assert torch.equal(as_pixels(opened), want)
        assert torch.equal(as_pixels(ImageOps.exif_transpose(opened)), want)


def test_sample_chelsea_loads():
    img = load_image("sample:chelsea")
    assert img.mode == "RGB" and img.size == (451, 300)


def test_every_listed_sample_exists_in_skimage():
    import skimage.data

    for name in SAMPLES:
        assert callable(getattr(skimage.data, name)), name


def test_grayscale_and_binary_samples_load_as_rgb():
    assert load_image("sample:camera").mode == "RGB"
    assert load_image("sample:horse" if "horse" in SAMPLES else "sample:checkerboard").mode == "RGB"


def test_unknown_sample_suggests_the_closest():
    with pytest.raises(PreimageError, match="did you mean 'chelsea'"):
        load_image("sample:chelsae")


def test_image_name():
    assert image_name("sample:chelsea") == "chelsea"
    assert image_name("some/dir/cat.photo.jpg") == "cat.photo"


# -- bad input ---------------------------------------------------------------------------------

def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path | str, str]]:
    """name -> (path, a regex the one-line message must match)."""
    good = png_bytes(Image.fromarray(rgb_pattern(64, 64)))
    jpeg = tmp_path / "full.jpg"
    Image.fromarray(rgb_pattern(64, 64)).save(jpeg, "JPEG")
    cases: dict[str, tuple[Path | str, str]] = {}
    cases["missing"] = (tmp_path / "nope.png", "no such file")
    (tmp_path / "folder.png").mkdir()
    cases["directory"] = (tmp_path / "folder.png", "directory")
    (tmp_path / "empty.png").write_bytes(b"")
    cases["empty"] = (tmp_path / "empty.png", "empty")
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    cases["truncated_png"] = (tmp_path / "cut.png", "damaged or truncated")
    (tmp_path / "cut.jpg").write_bytes(jpeg.read_bytes()[:300])
    cases["truncated_jpeg"] = (tmp_path / "cut.jpg", "damaged or truncated|not an image")
    (tmp_path / "notes.png").write_text("this is not a picture\n")
    cases["text_as_png"] = (tmp_path / "notes.png", "not an image")
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    cases["one_pixel"] = (tmp_path / "dot.png", "too small")
    return cases


BAD = ["missing", "directory", "empty", "truncated_png", "truncated_jpeg", "text_as_png", "one_pixel"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_raises_one_line_preimage_error(tmp_path, case):
    path, pattern = _bad_inputs(tmp_path)[case]
    with pytest.raises(PreimageError, match=pattern) as info:
        load_image(path)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("case", BAD)
def test_bad_input_via_cli_exits_2_with_one_line_and_writes_nothing(tmp_path, case, capsys, monkeypatch):
    from preimage.cli import main

    path, pattern = _bad_inputs(tmp_path)[case]
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code = main(["classify", str(path), "--model", "squeezenet1_1", "--weights", "none"])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith("preimage classify: error: ")
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_small_image_below_min_side_is_refused_and_min_side_accepted(tmp_path):
    Image.new("RGB", (MIN_SIDE - 1, 100)).save(tmp_path / "thin.png")
    Image.new("RGB", (MIN_SIDE, MIN_SIDE)).save(tmp_path / "ok.png")
    with pytest.raises(PreimageError, match="too small"):
        load_image(tmp_path / "thin.png")
    assert load_image(tmp_path / "ok.png").size == (MIN_SIDE, MIN_SIDE)


def test_decompression_bomb_with_a_small_limit(tmp_path):
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    with pytest.raises(PreimageError, match="too large"):
        load_image(tmp_path / "big.png", max_pixels=5000)
    assert load_image(tmp_path / "big.png", max_pixels=10_000).size == (100, 100)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def test_real_decompression_bomb_png_is_refused(tmp_path):
    # a 1-bit 10000 x 9000 PNG: 90M pixels (Pillow's limit is 89.5M) in a file of ~11 kB
    w, h = 10_000, 9_000
    row = b"\x00" + b"\x00" * (w // 8)
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(row * h, 9)) \
        + _png_chunk(b"IEND", b"")
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    assert path.stat().st_size < 100_000
    with pytest.raises(PreimageError, match="too large"):
        load_image(path)


# -- tensors and round trips -------------------------------------------------------------------

def test_to_tensor_resizes_short_side_and_center_crops():
    img = Image.fromarray(rgb_pattern(96, 48))
    t = to_tensor(img, 32)
    assert t.shape == (1, 3, 32, 32) and t.dtype == torch.float32
    assert 0 <= t.min() and t.max() <= 1
    # center crop of a left-to-right red ramp: the middle column is mid-red
    assert abs(float(t[0, 0, :, 16].mean()) - 0.5) < 0.05
    assert to_tensor(img).shape == (1, 3, 48, 96)


def test_tensor_png_round_trip_is_exact(tmp_path):
    img = Image.fromarray(rgb_pattern(40, 24))
    t = to_tensor(img)
    path = save_image(t, tmp_path / "sub" / "out.png")
    assert path.exists()
    again = load_image(path)
    assert np.array_equal(np.asarray(again), np.asarray(img))
    assert torch.equal(load_tensor(path), t)
    assert not list((tmp_path / "sub").glob("*.part"))
    save_image(t, tmp_path / "UPPER.PNG")


def test_save_image_refuses_a_name_that_is_not_png(tmp_path):
    with pytest.raises(PreimageError, match="ending in .png, not '.*out.jpg'"):
        save_image(torch.rand(1, 3, 8, 8), tmp_path / "out.jpg")
    assert list(tmp_path.iterdir()) == []


def test_to_pil_clamps_and_rounds():
    t = torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0]).view(1, 1, 5).expand(3, 1, 5)
    assert np.asarray(to_pil(t))[0, :, 0].tolist() == [0, 0, 128, 255, 255]
    with pytest.raises(ValueError):
        to_pil(torch.zeros(2, 3, 4, 4))


def test_png_encoding_is_deterministic():
    t = torch.rand(1, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    assert encode_png(t) == encode_png(t.clone())
    assert encode_png(t) == encode_png(to_pil(t))


def test_saved_files_get_the_usual_permissions_not_private_ones(tmp_path):
    import os
    import stat

    mask = os.umask(0o022)
    try:
        path = save_image(torch.rand(1, 3, 8, 8), tmp_path / "out.png")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_write_json_turns_non_finite_numbers_and_tensors_into_valid_json(tmp_path):
    import json

    from preimage.io import check_outputs, write_json

    path = write_json(tmp_path / "m.json", {"nan": float("nan"), "inf": float("inf"), "t": torch.tensor(1.5),
                                            "p": tmp_path, "nested": {1: (2, 3)}})
    data = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))
    assert data == {"nan": None, "inf": "inf", "t": 1.5, "p": str(tmp_path), "nested": {"1": [2, 3]}}
    with pytest.raises(PreimageError, match=r"--force \(save\(..., force=True\) in Python\)"):
        check_outputs([path])
    check_outputs([path], force=True)
    check_outputs([tmp_path / "new" / "deeper" / "x.png"])


# -- in-memory images (the Python API) ---------------------------------------------------------

def test_load_batch_takes_pil_numpy_and_uint8_images_as_the_file_would_load():
    img = Image.fromarray(rgb_pattern(16, 12))
    want = to_tensor(img)
    arr = np.asarray(img)
    for given in (img, arr, arr / 255.0, torch.from_numpy(arr).permute(2, 0, 1), want[0], want):
        x, names, sources = load_batch(given, None)
        assert torch.allclose(x, want, atol=1e-6) and names == sources == ["image0"]
    grey, _, _ = load_batch(np.asarray(img.convert("L")), None, channels=1)
    assert grey.shape == (1, 1, 12, 16)


def test_a_numpy_image_with_alpha_is_composited_over_white_as_the_pil_image_is():
    rgba = np.concatenate([rgb_pattern(16, 12), np.zeros((12, 16, 1), np.uint8)], axis=2)
    rgba[:, 8:, 3] = 255
    rgba[:6, :8, 3] = 128
    want = as_pixels(Image.fromarray(rgba, "RGBA"))
    for given in (rgba, rgba / 255.0):
        x, _, _ = load_batch(given, None)
        assert x.shape == (1, 3, 12, 16) and torch.allclose(x, want, atol=1 / 255 + 1e-6)
    assert torch.equal(load_batch(rgba[:, :, :3], None)[0][..., 8:], x[..., 8:])  # opaque: unchanged
    assert (x[..., 6:, :8] == 1).all()  # transparent: white
    la = np.stack([rgba[:, :, 0], rgba[:, :, 3]], axis=2)
    assert torch.allclose(load_batch(la, None)[0], as_pixels(Image.fromarray(la, "LA")), atol=1 / 255 + 1e-6)


def test_a_read_only_numpy_image_loads_without_a_torch_warning():
    arr = np.asarray(Image.fromarray(rgb_pattern(16, 12)))  # Pillow's array view is read-only
    arr.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x, _, _ = load_batch(arr, None)
    assert x.shape == (1, 3, 12, 16)


@pytest.mark.parametrize("given, words", [
    (torch.rand(1, 3, 8, 8) * 255, "[0, 1]"),
    (torch.full((1, 3, 8, 8), float("nan")), "finite"),
    (torch.zeros(1, 3, 8, 8, dtype=torch.int64), "torch.int64"),
    (np.zeros((8, 8, 3), np.int32), "int32"),
    (np.zeros((8, 8, 5), np.uint8), "H x W x 3"),
    (torch.rand(8, 8, 3), "(8, 8, 3)"),
    (3, "not int"),
    ([torch.rand(3, 8, 8)], "not Tensor"),
    (torch.rand(0, 3, 8, 8), "empty"),
    (np.zeros((0, 8, 3), np.uint8), "empty"),
])
def test_load_batch_refuses_wrong_in_memory_images_with_one_line(given, words):
    with pytest.raises(PreimageError) as err:
        load_batch(given, None)
    assert words in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("call, words", [
    (lambda: to_pil(torch.rand(8, 8, 3)), "not (8, 8, 3)"),
    (lambda: to_pil(torch.rand(2, 3, 8, 8)), "not a batch of 2"),
    (lambda: to_pil(np.zeros((8, 8, 3))), "not ndarray"),
    (lambda: to_tensor(np.zeros((8, 8, 3), np.uint8)), "not ndarray"),
    (lambda: to_tensor(Image.new("RGB", (8, 8)), 0), "size must be a positive"),
    (lambda: load_tensor("sample:chelsea", -5), "size must be a positive"),
])
def test_tensor_helpers_refuse_wrong_inputs_with_one_line(call, words):
    with pytest.raises(PreimageError, match=re.escape(words)):
        call()


def test_to_pil_takes_a_grey_h_x_w_tensor():
    assert np.asarray(to_pil(torch.full((4, 5), 1.0))).shape == (4, 5, 3)
