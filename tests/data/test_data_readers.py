"""File-format readers, checked pixel by pixel against independently decoded sources."""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neuralign.data import imagecache, load_dataset, readers
from neuralign.errors import DataError


def _foolbox_data() -> Path:
    spec = importlib.util.find_spec("foolbox")
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) / "data" if locations else Path("/nonexistent")


FOOLBOX_DATA = _foolbox_data()
REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")


def _pngs(prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """foolbox's PNGs decoded with PIL: (20, 3, 32, 32) uint8 and the labels in the names."""
    pat = re.compile(rf"{prefix}_(\d+)_(\d+)\.png")
    found = [
        (int(m.group(1)), int(m.group(2)), p)
        for p in FOOLBOX_DATA.iterdir()
        if (m := pat.fullmatch(p.name))
    ]
    found.sort()
    imgs = np.stack(
        [np.asarray(Image.open(p).convert("RGB")).transpose(2, 0, 1) for _, _, p in found]
    )
    return imgs, np.array([lab for _, lab, _ in found])


needs_foolbox = pytest.mark.skipif(not FOOLBOX_DATA.is_dir(), reason="foolbox PNGs missing")


@needs_foolbox
@pytest.mark.parametrize(
    ("name", "prefix", "layout"),
    [
        ("cifar10", "cifar10", "cifar-10-batches-py"),
        ("cifar10", "cifar10", "cifar-10-batches-bin"),
        ("cifar100", "cifar100", "cifar-100-python"),
        ("cifar100", "cifar100", "cifar-100-binary"),
    ],
)
def test_cifar_readers_reproduce_source_pixels(
    fixtures: Path, name: str, prefix: str, layout: str
) -> None:
    imgs, labels = _pngs(prefix)
    train = load_dataset(name, "train", data_dir=fixtures / layout)
    test = load_dataset(name, "test", data_dir=fixtures / layout)
    assert train.images.shape == (15, 3, 32, 32) and test.images.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(train.images.numpy(), imgs[:15])
    np.testing.assert_array_equal(test.images.numpy(), imgs[15:])
    np.testing.assert_array_equal(train.labels.numpy(), labels[:15])
    np.testing.assert_array_equal(test.labels.numpy(), labels[15:])
    assert train.num_classes == (10 if name == "cifar10" else 100)
    assert train.classes is not None and len(train.classes) == train.num_classes
    assert str(train.images.dtype) == "torch.uint8"


def test_cifar_pickle_and_binary_agree(fixtures: Path) -> None:
    for name, py, binary in (
        ("cifar10", "cifar-10-batches-py", "cifar-10-batches-bin"),
        ("cifar100", "cifar-100-python", "cifar-100-binary"),
    ):
        for split in ("train", "test"):
            a = load_dataset(name, split, data_dir=fixtures / py)
            b = load_dataset(name, split, data_dir=fixtures / binary)
            assert a.images.equal(b.images) and a.labels.equal(b.labels)
            assert a.classes == b.classes
    # The parent directory works too and prefers the python layout.
    assert load_dataset("cifar10", data_dir=fixtures).classes[:2] == ["airplane", "automobile"]
    assert load_dataset("cifar100", data_dir=fixtures).classes[:2] == ["apple", "aquarium_fish"]


def test_cifar100_uses_fine_labels(fixtures: Path) -> None:
    raw = pickle.loads((fixtures / "cifar-100-python" / "train").read_bytes(), encoding="bytes")
    ds = load_dataset("cifar100", data_dir=fixtures)
    assert ds.labels.tolist() == raw[b"fine_labels"]
    assert ds.labels.tolist() != raw[b"coarse_labels"]


class _Evil:
    def __init__(self, func: object, arg: str) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return self.func, (self.arg,)


@pytest.mark.parametrize("payload", ["system", "eval"])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "pwned"
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    if payload == "system":
        evil = _Evil(os.system, f"touch {marker}")
    else:
        evil = _Evil(eval, f"open({str(marker)!r}, 'w').close()")
    good = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}
    for i in range(1, 6):
        (batches / f"data_batch_{i}").write_bytes(pickle.dumps(good, protocol=2))
    (batches / "test_batch").write_bytes(pickle.dumps({b"data": evil, b"labels": [0]}, protocol=2))
    with pytest.raises(DataError, match="refusing to unpickle"):
        load_dataset("cifar10", "test", data_dir=tmp_path)
    with pytest.raises(DataError, match="refusing to unpickle"):
        readers.restricted_load(batches / "test_batch")
    assert not marker.exists()


def test_plain_python3_pickle_without_codecs_is_readable(tmp_path: Path) -> None:
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (d / f).write_bytes(pickle.dumps({"data": data, "labels": [1, 2, 3, 4]}, protocol=4))
    ds = load_dataset("cifar10", "test", data_dir=tmp_path)
    np.testing.assert_array_equal(ds.images.numpy().reshape(4, -1), data)


def test_corrupt_cifar_files(tmp_path: Path, fixtures: Path) -> None:
    shutil.copytree(fixtures / "cifar-10-batches-bin", tmp_path / "cifar-10-batches-bin")
    f = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    f.write_bytes(f.read_bytes()[:-7])
    with pytest.raises(DataError, match="truncated"):
        load_dataset("cifar10", "test", data_dir=tmp_path)
    shutil.copytree(fixtures / "cifar-10-batches-py", tmp_path / "p" / "cifar-10-batches-py")
    g = tmp_path / "p" / "cifar-10-batches-py" / "test_batch"
    g.write_bytes(g.read_bytes()[:100])
    with pytest.raises(DataError, match="truncated"):
        load_dataset("cifar10", "test", data_dir=tmp_path / "p")
    (tmp_path / "p" / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="incomplete.*data_batch_3"):
        load_dataset("cifar10", "train", data_dir=tmp_path / "p")


# ---------------------------------------------------------------------------------- IDX


def test_fashion_mnist_slice_matches_fixture_header_and_known_labels(fixtures: Path) -> None:
    train = load_dataset("fashion-mnist", "train", data_dir=fixtures)
    test = load_dataset("fashion-mnist", "test", data_dir=fixtures / "fashion-mnist")
    assert train.images.shape == (100, 1, 28, 28) and test.images.shape == (50, 1, 28, 28)
    assert train.labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert test.labels[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert int(train.images[0].sum()) == 76247 and int(train.images[0, 0, 14, 14]) == 217
    assert train.classes is not None and train.classes[9] == "Ankle boot"
    assert train.mean == (0.2860,) and train.std == (0.3530,)


@pytest.mark.skipif(not REAL_FASHION.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_slice_equals_real_file(fixtures: Path) -> None:
    with gzip.open(REAL_FASHION / "train-images-idx3-ubyte.gz", "rb") as f:
        magic, n, h, w = struct.unpack(">IIII", f.read(16))
        real = np.frombuffer(f.read(100 * h * w), np.uint8).reshape(100, h, w)
    assert (magic, n, h, w) == (0x803, 60000, 28, 28)
    ds = load_dataset("fashion-mnist", data_dir=fixtures)
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), real)
    for i, r, c in ((0, 14, 14), (5, 3, 20), (99, 27, 0), (42, 10, 10)):
        assert int(ds.images[i, 0, r, c]) == int(real[i, r, c])


@pytest.mark.skipif(not REAL_FASHION.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_default_location() -> None:
    ds = load_dataset("fashion-mnist", "test")
    assert ds.images.shape == (10000, 1, 28, 28)
    assert ds.class_counts().tolist() == [1000] * 10


def _idx(header: bytes, body: bytes, path: Path, compress: bool) -> Path:
    data = header + body
    if compress:
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_roundtrip_and_errors(tmp_path: Path, compress: bool) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    hdr = struct.pack(">BBBBIII", 0, 0, 8, 3, 2, 3, 4)
    np.testing.assert_array_equal(
        readers.read_idx(_idx(hdr, arr.tobytes(), tmp_path / "ok", compress)), arr
    )
    i32 = np.array([1, -2, 70000], dtype=">i4")
    got = readers.read_idx(
        _idx(struct.pack(">BBBBI", 0, 0, 0x0C, 1, 3), i32.tobytes(), tmp_path / "i32", compress)
    )
    assert got.tolist() == [1, -2, 70000] and got.dtype.isnative
    with pytest.raises(DataError, match="truncated"):
        readers.read_idx(_idx(hdr, arr.tobytes()[:-1], tmp_path / "short", compress))
    with pytest.raises(DataError, match="longer"):
        readers.read_idx(_idx(hdr, arr.tobytes() + b"x", tmp_path / "long", compress))
    with pytest.raises(DataError, match="magic"):
        readers.read_idx(_idx(b"\x01\x00\x08\x03", arr.tobytes(), tmp_path / "magic", compress))


def test_truncated_gzip_idx_raises_data_error(tmp_path: Path, fixtures: Path) -> None:
    d = tmp_path / "fashion-mnist"
    shutil.copytree(fixtures / "fashion-mnist", d)
    f = d / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:-200])
    with pytest.raises(DataError, match="truncated"):
        load_dataset("fashion-mnist", data_dir=tmp_path)
    raw = gzip.decompress((fixtures / "fashion-mnist" / "train-images-idx3-ubyte.gz").read_bytes())
    (d / "train-images-idx3-ubyte.gz").unlink()
    (d / "train-images-idx3-ubyte").write_bytes(raw[:5000])  # uncompressed and cut
    with pytest.raises(DataError, match="truncated"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_mismatched_idx_label_count(tmp_path: Path, fixtures: Path) -> None:
    d = tmp_path / "fashion-mnist"
    shutil.copytree(fixtures / "fashion-mnist", d)
    shutil.copy(d / "t10k-labels-idx1-ubyte.gz", d / "train-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match="do not match"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


# ---------------------------------------------------------------------------- Tiny ImageNet


def _tiny_expected(root: Path, split: str) -> tuple[np.ndarray, list[int]]:
    wnids = sorted((root / "wnids.txt").read_text().split())
    files, labels = [], []
    if split == "train":
        for i, w in enumerate(wnids):
            for p in sorted((root / "train" / w / "images").iterdir()):
                files.append(p)
                labels.append(i)
    else:
        for line in sorted((root / "val" / "val_annotations.txt").read_text().splitlines()):
            name, wnid = line.split("\t")[:2]
            files.append(root / "val" / "images" / name)
            labels.append(wnids.index(wnid))
    imgs = np.stack([np.asarray(Image.open(p).convert("RGB")).transpose(2, 0, 1) for p in files])
    return imgs, labels


def test_tinyimagenet_reads_pixels_and_reuses_cache(
    tmp_path: Path, fixtures: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "tiny-imagenet-200"
    shutil.copytree(fixtures / "tiny-imagenet-200", root)
    for split, n in (("train", 9), ("test", 5)):
        ds = load_dataset("tinyimagenet", split, data_dir=tmp_path)
        exp_imgs, exp_labels = _tiny_expected(root, split)
        assert ds.images.shape == (n, 3, 64, 64) and ds.num_classes == 3
        np.testing.assert_array_equal(ds.images.numpy(), exp_imgs)
        assert ds.labels.tolist() == exp_labels
        assert ds.classes == ["bull mastiff", "beaker", "folding chair"]
        assert (root / f"neuralign-cache-{split}.npz").is_file()
    gray = load_dataset("tinyimagenet", data_dir=tmp_path).images[0]
    assert gray[0].equal(gray[1]) and gray[1].equal(gray[2])  # grayscale JPEG -> RGB

    def no_decode(path: Path, *args: object) -> np.ndarray:
        raise AssertionError(f"decoded {path} although a cache exists")

    monkeypatch.setattr(imagecache, "decode_image", no_decode)
    again = load_dataset("tinyimagenet", "test", data_dir=root)
    np.testing.assert_array_equal(again.images.numpy(), _tiny_expected(root, "test")[0])
    # A changed folder invalidates the cache.
    shutil.copy(root / "val" / "images" / "val_0.JPEG", root / "val" / "images" / "val_5.JPEG")
    with (root / "val" / "val_annotations.txt").open("a") as f:
        f.write("val_5.JPEG\tn90000243\t0\t0\t10\t10\n")
    with pytest.raises(AssertionError, match="decoded"):
        load_dataset("tinyimagenet", "test", data_dir=root)


def test_tinyimagenet_cache_falls_back_when_root_not_writable(
    tmp_path: Path, fixtures: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ro" / "tiny-imagenet-200"
    shutil.copytree(fixtures / "tiny-imagenet-200", root)
    real_write = imagecache.write_cache

    def write(path: Path, *args: object) -> bool:
        if root in path.parents:
            return False  # as if the dataset directory were read-only
        return real_write(path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(imagecache, "write_cache", write)
    load_dataset("tinyimagenet", "test", data_dir=root.parent)
    assert not list(root.glob("*.npz"))
    cached = list((Path(os.environ["XDG_CACHE_HOME"]) / "neuralign").rglob("*.npz"))
    assert len(cached) == 1


def test_tinyimagenet_incomplete(tmp_path: Path, fixtures: Path) -> None:
    root = tmp_path / "tiny-imagenet-200"
    shutil.copytree(fixtures / "tiny-imagenet-200", root)
    shutil.rmtree(root / "train" / "n90000438")
    with pytest.raises(DataError, match="incomplete"):
        load_dataset("tinyimagenet", data_dir=tmp_path)
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn12345678\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match="unknown wnid"):
        load_dataset("tinyimagenet", "test", data_dir=tmp_path)
