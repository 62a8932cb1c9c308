"""preimage.data: the IDX reader, the named data sets, image folders and seeded batches."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from preimage.data import FASHION_MNIST_DIR, ImageData, load_data, read_idx
from preimage.errors import PreimageError


def write_idx(path: Path, array: np.ndarray, *, type_code: int = 0x08, gz: bool = False) -> Path:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    data = header + array.astype(">u1" if type_code == 0x08 else ">i4").tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_idx_folder(folder: Path, n_train: int = 12, n_test: int = 5, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28)), gz=gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", np.arange(n) % 10, gz=gz)
    return folder


@pytest.mark.parametrize("gz", [False, True])
def test_idx_reader_returns_the_written_array_raw_or_gzipped(tmp_path, gz):
    a = np.arange(2 * 3 * 4).reshape(2, 3, 4).astype(np.uint8)
    out = read_idx(write_idx(tmp_path / "a.idx", a, gz=gz), ndim=3)
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8 and (out == a).all()


def test_idx_reader_reads_big_endian_int32():
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        a = np.array([1, 256, 70000, -5])
        out = read_idx(write_idx(Path(d) / "b.idx", a, type_code=0x0C))
    assert out.tolist() == [1, 256, 70000, -5]


def test_idx_reader_refuses_a_wrong_magic_number_in_one_line(tmp_path):
    p = tmp_path / "bad"
    p.write_bytes(b"\x12\x34\x08\x03" + bytes(100))
    with pytest.raises(PreimageError, match="not an IDX file .*magic number 0x12340803") as e:
        read_idx(p)
    assert "\n" not in str(e.value)


def test_idx_reader_refuses_a_file_shorter_than_its_header_says(tmp_path):
    p = write_idx(tmp_path / "t", np.zeros((4, 28, 28)))
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(PreimageError, match="3126 bytes of data; its header \\(4, 28, 28\\) says 3136"):
        read_idx(p)


def test_idx_reader_refuses_labels_where_images_are_expected(tmp_path):
    p = write_idx(tmp_path / "labels", np.arange(5))
    with pytest.raises(PreimageError, match="1-dimensional .* expected 3"):
        read_idx(p, ndim=3)


def test_idx_reader_refuses_a_damaged_gzip_file(tmp_path):
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(8))[:-6])
    with pytest.raises(PreimageError, match="damaged gzip"):
        read_idx(p)


def test_an_idx_folder_loads_as_labelled_uint8_images(tmp_path):
    folder = make_idx_folder(tmp_path / "fashion", gz=False)
    train, test = load_data(folder, split="train"), load_data(folder, split="test")
    assert train.images.shape == (12, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (5, 1, 28, 28)
    assert train.labels.tolist() == [i % 10 for i in range(12)]
    assert train.classes[0] == "T-shirt/top"  # a folder named *fashion* gets Fashion-MNIST's class names


def test_an_idx_folder_without_its_labels_is_refused_by_name(tmp_path):
    folder = make_idx_folder(tmp_path / "d")
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(PreimageError, match="has no train-labels-idx1-ubyte"):
        load_data(folder)


def test_an_idx_folder_with_mismatched_counts_is_refused(tmp_path):
    folder = make_idx_folder(tmp_path / "d")
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(7) % 10, gz=True)
    with pytest.raises(PreimageError, match="12 images but .* 7 labels"):
        load_data(folder)


def test_fashion_mnist_root_points_at_another_folder(tmp_path):
    folder = make_idx_folder(tmp_path / "elsewhere")
    data = load_data("fashion-mnist", split="test", root=folder)
    assert len(data) == 5 and data.name == "fashion-mnist"


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_the_debian_package_has_the_published_sizes():
    test = load_data("fashion-mnist", split="test")
    assert test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(test.labels).tolist() == [1000] * 10


def test_mnist_offline_fails_in_one_line(monkeypatch, tmp_path):
    import urllib.error

    import torchvision

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(PreimageError, match="could not download MNIST into .*offline, give a folder") as e:
        load_data("mnist", root=tmp_path)
    assert "\n" not in str(e.value)


def test_digits_are_upsampled_to_28_px_with_a_disjoint_test_split():
    train, test = load_data("digits"), load_data("digits", split="test")
    assert train.images.shape[1:] == (1, 28, 28) and len(train) + len(test) == 1797
    assert len(test) == 359 and train.images.max() > 200 and train.images.min() == 0
    assert set(test.labels.tolist()) == set(range(10))


def test_size_and_channels_adapt_the_images():
    d = load_data("digits", size=32, channels=3)
    assert d.images.shape[1:] == (3, 32, 32)
    assert (d.images[:, 0] == d.images[:, 2]).all()


def test_unknown_names_and_sizes_get_one_line_errors():
    with pytest.raises(PreimageError, match="did you mean 'fashion-mnist'"):
        load_data("fashon-mnist")
    with pytest.raises(PreimageError, match="28, 32, 64"):
        load_data("digits", size=30)


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_an_image_folder_is_resized_with_classes_from_sub_folders(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(10):
        _save(tmp_path / ("cats" if i < 6 else "dogs") / f"{i}.png", rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    train, test = load_data(tmp_path, size=32), load_data(tmp_path, split="test", size=32)
    assert train.images.shape == (9, 3, 32, 32) and test.images.shape == (1, 3, 32, 32)
    assert train.classes == ("cats", "dogs") and train.labels.tolist() == [0] * 6 + [1] * 3


def test_a_folder_of_grey_images_loads_with_one_channel(tmp_path):
    for i in range(3):
        _save(tmp_path / f"{i}.png", np.full((64, 64), 40 * i, dtype=np.uint8))
    data = load_data(tmp_path, size=64)
    assert data.images.shape == (3, 1, 64, 64) and data.labels is None
    assert data.images[2].unique().tolist() == [80]


def test_an_empty_folder_and_a_damaged_image_are_refused(tmp_path):
    with pytest.raises(PreimageError, match="holds no images"):
        load_data(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(PreimageError, match="bad.png"):
        load_data(tmp_path)


def test_batches_are_full_and_their_order_follows_the_generator():
    data = ImageData(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous(),
                     torch.arange(10), None, "toy")
    first = [y.tolist() for _, y in data.batches(3, torch.Generator().manual_seed(1))]
    again = [y.tolist() for _, y in data.batches(3, torch.Generator().manual_seed(1))]
    other = [y.tolist() for _, y in data.batches(3, torch.Generator().manual_seed(2))]
    assert first == again != other
    assert [len(b) for b in first] == [3, 3, 3] and len(set(sum(first, []))) == 9
    x, y = next(data.batches(3, torch.Generator().manual_seed(1)))
    assert torch.allclose(x[:, 0, 0, 0] * 255, y.float())
