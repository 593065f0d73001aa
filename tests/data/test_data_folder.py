"""Your own data: image folders and tensor files, built from real images and read back exactly."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from neuralign.data import Augment, TensorLoader, dataset_spec, load_dataset
from neuralign.data.datasets import stratified_split
from neuralign.errors import DataError


def _foolbox_pngs() -> list[tuple[int, Path]]:
    spec = importlib.util.find_spec("foolbox")
    locs = list(spec.submodule_search_locations or []) if spec else []
    d = Path(locs[0]) / "data" if locs else Path("/nonexistent")
    pat = re.compile(r"cifar10_(\d+)_(\d+)\.png")
    found = sorted(
        (int(m.group(1)), int(m.group(2)), p)
        for p in (d.iterdir() if d.is_dir() else [])
        if (m := pat.fullmatch(p.name))
    )
    return [(lab, p) for _, lab, p in found]


FOOLBOX = _foolbox_pngs()
needs_foolbox = pytest.mark.skipif(not FOOLBOX, reason="foolbox CIFAR-10 PNGs missing")


def _write_folder(root: Path, images: np.ndarray, labels: np.ndarray, names: list[str]) -> None:
    """One PNG per image in ``root/<class name>/``; returns nothing (lossless, so exact)."""
    for i, (img, lab) in enumerate(zip(images, labels)):
        d = root / names[int(lab)]
        d.mkdir(parents=True, exist_ok=True)
        arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        Image.fromarray(arr).save(d / f"{i:05d}.png")


def _sorted_by_file(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference order of a folder: by class, then by file name (= original index)."""
    order = np.lexsort((np.arange(len(labels)), labels))
    return images[order], labels[order]


def test_fashion_mnist_folder_with_splits_reads_back_exactly(
    tmp_path: Path, fixtures: Path
) -> None:
    names = [f"c{i}" for i in range(10)]
    ref = {
        s: load_dataset("fashion-mnist", s, data_dir=fixtures / "fashion-mnist")
        for s in ("train", "test")
    }
    for s, ds in ref.items():
        _write_folder(tmp_path / "fm" / s, ds.images.numpy(), ds.labels.numpy(), names)
    for s, ds in ref.items():
        got = load_dataset(f"folder:{tmp_path / 'fm'}", s)
        want_x, want_y = _sorted_by_file(ds.images.numpy(), ds.labels.numpy())
        present = sorted(set(ds.labels.tolist()) | set(ref["train"].labels.tolist()))
        remap = {c: i for i, c in enumerate(present)}
        assert got.shape == (1, 28, 28)
        np.testing.assert_array_equal(got.images.numpy(), want_x)
        assert got.labels.tolist() == [remap[int(y)] for y in want_y]
        assert got.classes == [names[c] for c in present]
    # Mean/std come from the training split, whichever split is loaded.
    test = load_dataset(str(tmp_path / "fm"), "test")  # a bare directory path works too
    train_pixels = ref["train"].images.double() / 255
    assert test.mean[0] == pytest.approx(float(train_pixels.mean()), abs=1e-9)
    assert test.std[0] == pytest.approx(float(train_pixels.std(unbiased=False)), abs=1e-9)
    # The cache lives under the user cache folder; the data folder is not written.
    assert not list((tmp_path / "fm").glob("*.npz"))


@needs_foolbox
def test_cifar_pngs_folder_seeded_split_and_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cifar"
    for lab, p in FOOLBOX:
        (root / f"label{lab}").mkdir(parents=True, exist_ok=True)
        shutil.copy(p, root / f"label{lab}" / p.name)
    classes = sorted({f"label{lab}" for lab, _ in FOOLBOX})
    listing = sorted(
        ((classes.index(f"label{lab}"), p.name, p) for lab, p in FOOLBOX), key=lambda t: t[:2]
    )
    imgs = np.stack(
        [np.asarray(Image.open(p).convert("RGB")).transpose(2, 0, 1) for *_, p in listing]
    )
    labels = np.array([c for c, *_ in listing])
    train = load_dataset(f"folder:{root}", "train")
    test = load_dataset(f"folder:{root}", "test")
    assert len(train) + len(test) == len(FOOLBOX) and train.shape == (3, 32, 32)
    for split, ds in (("train", train), ("test", test)):
        idx = stratified_split(labels, split, 0.2, 0)
        np.testing.assert_array_equal(ds.images.numpy(), imgs[idx])
        assert ds.labels.tolist() == labels[idx].tolist()
    # Decoded once: a second load reads the cache without decoding any file.
    from neuralign.data import imagecache

    def no_decode(*args: object) -> np.ndarray:
        raise AssertionError("decoded although a cache exists")

    monkeypatch.setattr(imagecache, "decode_image", no_decode)
    again = load_dataset(f"folder:{root}", "test")
    assert again.images.equal(test.images)
    # The batched augmentation works on it like on any dataset.
    loader = TensorLoader(train, batch_size=4, shuffle=True, augment=Augment(), seed=0)
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and float(x.min()) >= 0


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_tensor_file_round_trip(tmp_path: Path, fixtures: Path, suffix: str) -> None:
    ds = load_dataset("cifar10", "test", data_dir=fixtures)
    x, y = ds.images.numpy(), ds.labels.numpy()
    path = tmp_path / f"mine{suffix}"
    if suffix == ".npz":
        np.savez(path, images=x, labels=y, classes=np.array(ds.classes), num_classes=np.array(10))
    else:
        from safetensors.numpy import save_file

        save_file({"images": x, "labels": y}, str(path))
    for split in ("train", "test"):
        idx = stratified_split(y, split, 0.2, 0)
        for name in (str(path), f"tensors:{path}"):
            got = load_dataset(name, split)
            np.testing.assert_array_equal(got.images.numpy(), x[idx])
            assert got.labels.tolist() == y[idx].tolist()
            want_k = 10 if suffix == ".npz" else int(y.max()) + 1
            assert got.num_classes == want_k
    if suffix == ".npz":
        assert load_dataset(str(path)).classes == ds.classes


def test_tensor_file_explicit_splits_and_grayscale(tmp_path: Path, fixtures: Path) -> None:
    fm = {
        s: load_dataset("fashion-mnist", s, data_dir=fixtures / "fashion-mnist")
        for s in ("train", "test")
    }
    path = tmp_path / "fm.npz"
    np.savez(
        path,
        train_images=fm["train"].images.numpy()[:, 0],  # (N, H, W) is accepted
        train_labels=fm["train"].labels.numpy().astype(np.uint8),
        test_images=fm["test"].images.numpy(),
        test_labels=fm["test"].labels.numpy(),
        num_classes=np.array(10),
    )
    for s in ("train", "test"):
        got = load_dataset(str(path), s)
        assert got.images.equal(fm[s].images) and got.labels.equal(fm[s].labels)
        assert got.num_classes == 10


def _png(path: Path, size: tuple[int, int], value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, dtype=np.uint8)).save(path)


def test_folder_errors_are_typed_and_name_the_file(tmp_path: Path) -> None:
    _png(tmp_path / "mixed" / "a" / "0.png", (8, 8))
    _png(tmp_path / "mixed" / "b" / "1.png", (8, 9))
    with pytest.raises(DataError, match=r"different sizes: .*0\.png is 8x8, .*1\.png is 8x9"):
        load_dataset(f"folder:{tmp_path / 'mixed'}")
    _png(tmp_path / "empty" / "a" / "0.png", (8, 8))
    (tmp_path / "empty" / "b").mkdir()
    with pytest.raises(DataError, match=r"class folder .*empty/b holds no PNG/JPEG"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    _png(tmp_path / "bad" / "a" / "0.png", (8, 8))
    (tmp_path / "bad" / "a" / "1.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read image .*1\.png"):
        load_dataset(f"folder:{tmp_path / 'bad'}")
    (tmp_path / "noclass").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        load_dataset(f"folder:{tmp_path / 'noclass'}")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    with pytest.raises(DataError, match="give a path"):
        load_dataset("folder:")


def test_tensor_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "none.npz"))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="cannot read tensor file"):
        load_dataset(str(tmp_path / "junk.npz"))
    np.savez(tmp_path / "f.npz", images=np.zeros((4, 1, 2, 2), np.float32), labels=np.zeros(4, int))
    with pytest.raises(DataError, match="must be uint8"):
        load_dataset(str(tmp_path / "f.npz"))
    np.savez(tmp_path / "k.npz", x=np.zeros(3))
    with pytest.raises(DataError, match="expected 'images' and 'labels'"):
        load_dataset(str(tmp_path / "k.npz"))
    np.savez(tmp_path / "n.npz", images=np.zeros((4, 1, 2, 2), np.uint8), labels=np.zeros(3, int))
    with pytest.raises(DataError, match="labels must be 4 integers"):
        load_dataset(str(tmp_path / "n.npz"))
    np.savez(tmp_path / "hwc.npz", images=np.zeros((4, 8, 8, 3), np.uint8), labels=np.zeros(4, int))
    with pytest.raises(DataError, match="channels-last"):
        load_dataset(str(tmp_path / "hwc.npz"))


def test_paths_resolve_to_the_user_data_rows(tmp_path: Path) -> None:
    assert dataset_spec("./x.npz").name == "tensors"
    assert dataset_spec("data/x.safetensors").name == "tensors"
    assert dataset_spec(str(tmp_path)).name == "folder"
    assert dataset_spec("folder:anything").name == "folder"
    with pytest.raises(DataError, match="unknown dataset"):
        dataset_spec(str(tmp_path / "not-a-dir"))
