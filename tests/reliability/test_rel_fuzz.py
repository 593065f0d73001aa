"""Fuzz/property suite: random and mutated inputs to every reader of untrusted files.

Each target feeds random bytes, or a valid file with bytes flipped, cut or inserted, to a
reader; the reader must either succeed or raise a :class:`~neuralign.errors.NeuralignError`
subclass (never an ``IndexError``, ``UnicodeDecodeError``, ``RuntimeError``...). Targets: the
IDX, CIFAR pickle and CIFAR binary readers (through :func:`load_dataset`, so the assembly of
a dataset is covered too), Tiny ImageNet annotations and its decoded-image cache, the
checkpoint reader (safetensors and ``.pt``), the config parser and the permutation-spec
reader.

Budget: ``NEURALIGN_FUZZ_EXAMPLES`` examples per target (default 40: ~600 calls, ~15 s);
``NEURALIGN_FUZZ_EXAMPLES=2000 pytest tests/reliability/test_rel_fuzz.py`` for a long run.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rel_testlib import FIXTURES, FUZZ_EXAMPLES, tiny_mlp

from neuralign.data import load_dataset, readers
from neuralign.errors import NeuralignError

FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

#: Counts of examples run per target (reported by the last test of the module).
EXECUTED: dict[str, int] = {}
#: How many of them loaded (every loaded result passed its target's consistency check).
LOADED: dict[str, int] = {}


def _typed_or_ok(target: str, fn: Callable[[], Any], valid: Callable[[Any], None]) -> None:
    """Run ``fn``: it must raise a NeuralignError, or return a result that ``valid`` accepts.

    A corrupted file that loads is not passed silently: ``valid`` asserts the invariants any
    result of the reader must satisfy (shapes, label ranges, a round trip), so a reader that
    returns garbage instead of raising fails the test; the loads are counted and reported.
    """
    EXECUTED[target] = EXECUTED.get(target, 0) + 1
    try:
        result = fn()
    except NeuralignError:
        return
    valid(result)
    LOADED[target] = LOADED.get(target, 0) + 1


def _valid_array(a: Any) -> None:
    assert isinstance(a, np.ndarray) and a.ndim >= 1, type(a)


def _valid_arrays(out: Any) -> None:
    images, labels = out[0], out[1]
    assert isinstance(images, np.ndarray) and isinstance(labels, np.ndarray)
    assert images.dtype == np.uint8 and images.ndim == 4, (images.dtype, images.shape)
    assert labels.ndim == 1 and len(labels) == len(images), (labels.shape, images.shape)
    assert labels.size == 0 or labels.min() >= 0


def _valid_dataset(ds: Any) -> None:
    from neuralign.data import Dataset

    assert isinstance(ds, Dataset)
    assert ds.images.dtype == torch.uint8 and ds.images.dim() == 4
    assert ds.labels.dtype == torch.int64 and len(ds.labels) == len(ds.images) > 0
    assert int(ds.labels.min()) >= 0 and int(ds.labels.max()) < ds.num_classes


def _valid_checkpoint(out: Any) -> None:
    state, meta = out
    assert isinstance(meta, dict) and state
    assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())


def _valid_metadata(meta: Any) -> None:
    assert isinstance(meta, dict)


def _valid_model(path: Path) -> Callable[[Any], None]:
    """A loaded model is a module whose weights are the file's tensors (no silent init)."""

    def check(model: Any) -> None:
        from neuralign.io import load_checkpoint

        assert isinstance(model, torch.nn.Module)
        state, _ = load_checkpoint(path)
        own = model.state_dict()
        assert own and set(own) <= set(state), sorted(set(own) - set(state))
        for k, v in own.items():
            assert torch.equal(v.cpu(), state[k].to(v.dtype)), k

    return check


@contextlib.contextmanager
def _tmpdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="neuralign-fuzz-") as d:
        yield Path(d)


# ----------------------------------------------------------------------------- mutations


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` with a few random edits: byte flips, a cut, an insertion or a splice."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "zero"]))
        if not data:
            data += draw(st.binary(min_size=1, max_size=16))
            continue
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=32))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 64))]
        else:
            j = min(len(data), i + draw(st.integers(1, 16)))
            data[i:j] = bytes(j - i)
    return bytes(data)


def _gunzip(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


# ----------------------------------------------------------------------------- datasets

IDX_IMAGES = _gunzip(FIXTURES / "fashion-mnist" / "t10k-images-idx3-ubyte.gz")
IDX_LABELS = _gunzip(FIXTURES / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz")


@FUZZ
@given(
    raw=st.one_of(st.binary(max_size=2048), mutated(IDX_LABELS), mutated(IDX_IMAGES[:4096])),
    compress=st.booleans(),
)
def test_fuzz_idx_reader(raw: bytes, compress: bool) -> None:
    with _tmpdir() as d:
        f = d / "x-idx3-ubyte"
        f.write_bytes(gzip.compress(raw) if compress else raw)
        _typed_or_ok("idx", lambda: readers.read_idx(f), _valid_array)


@FUZZ
@given(which=st.sampled_from(["images", "labels"]), data=st.data())
def test_fuzz_idx_dataset(which: str, data: st.DataObject) -> None:
    """A mutated file inside a Fashion-MNIST folder: load_dataset answers with DataError."""
    original = IDX_IMAGES if which == "images" else IDX_LABELS
    raw = data.draw(mutated(original))
    with _tmpdir() as d:
        shutil.copytree(FIXTURES / "fashion-mnist", d, dirs_exist_ok=True)
        name = f"t10k-{which}-idx{3 if which == 'images' else 1}-ubyte.gz"
        (d / name).write_bytes(gzip.compress(raw, compresslevel=1))
        _typed_or_ok(
            "idx-dataset",
            lambda: load_dataset("fashion-mnist", "test", data_dir=d),
            _valid_dataset,
        )


CIFAR_PY = FIXTURES / "cifar-10-batches-py"
CIFAR_TEST = (CIFAR_PY / "test_batch").read_bytes()
CIFAR_META = (CIFAR_PY / "batches.meta").read_bytes()

_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.binary(max_size=40),
    st.text(max_size=10),
)
_pyobj = st.recursive(
    _leaf,
    lambda kids: st.one_of(
        st.lists(kids, max_size=5),
        st.tuples(kids, kids),
        st.dictionaries(st.one_of(st.binary(max_size=12), st.text(max_size=12)), kids, max_size=5),
    ),
    max_leaves=20,
)


@st.composite
def cifar_like(draw: st.DrawFn) -> bytes:
    """A structurally plausible batch with random field values (numpy arrays included)."""
    d: dict[Any, Any] = draw(
        st.dictionaries(st.sampled_from([b"data", b"labels", "data", "labels", b"x"]), _pyobj)
    )
    if draw(st.booleans()):
        shape = draw(st.sampled_from([(2, 3072), (3, 3072), (2, 3071), (3,), (0, 3072)]))
        dtype = draw(st.sampled_from([np.uint8, np.int64, np.float32, object]))
        d[b"data"] = np.zeros(shape, dtype=dtype)
    return pickle.dumps(d, protocol=draw(st.integers(2, 5)))


@FUZZ
@given(
    raw=st.one_of(st.binary(max_size=1024), mutated(CIFAR_TEST), mutated(CIFAR_META), cifar_like()),
    fmt=st.sampled_from(["test_batch", "batches.meta"]),
)
def test_fuzz_cifar_pickle(raw: bytes, fmt: str) -> None:
    """A mutated CIFAR-10 python batch (or its meta file) inside a valid folder."""
    with _tmpdir() as d:
        root = d / "cifar-10-batches-py"
        shutil.copytree(CIFAR_PY, root)
        (root / fmt).write_bytes(raw)
        _typed_or_ok("cifar-pickle", lambda: readers.read_cifar_pickle([root / fmt]), _valid_arrays)
        _typed_or_ok(
            "cifar-pickle", lambda: load_dataset("cifar10", "test", data_dir=d), _valid_dataset
        )


CIFAR_BIN = (FIXTURES / "cifar-100-binary" / "test.bin").read_bytes()


@FUZZ
@given(raw=st.one_of(st.binary(max_size=8000), mutated(CIFAR_BIN)))
def test_fuzz_cifar_binary(raw: bytes) -> None:
    with _tmpdir() as d:
        root = d / "cifar-100-binary"
        shutil.copytree(FIXTURES / "cifar-100-binary", root)
        (root / "test.bin").write_bytes(raw)
        _typed_or_ok(
            "cifar-binary", lambda: load_dataset("cifar100", "test", data_dir=d), _valid_dataset
        )


TINY = FIXTURES / "tiny-imagenet-200"
TINY_ANN = (TINY / "val" / "val_annotations.txt").read_bytes()
TINY_WNIDS = (TINY / "wnids.txt").read_bytes()


@FUZZ
@given(
    ann=st.one_of(st.binary(max_size=400), mutated(TINY_ANN), st.just(TINY_ANN)),
    wnids=st.one_of(st.just(TINY_WNIDS), mutated(TINY_WNIDS), st.binary(max_size=100)),
)
def test_fuzz_tinyimagenet_annotations(ann: bytes, wnids: bytes) -> None:
    with _tmpdir() as d:
        root = d / "tiny-imagenet-200"
        shutil.copytree(TINY, root)
        (root / "val" / "val_annotations.txt").write_bytes(ann)
        (root / "wnids.txt").write_bytes(wnids)
        _typed_or_ok(
            "tinyimagenet-annotations",
            lambda: readers.read_tinyimagenet(root, "test", cache_dir=d / "cache", workers=1),
            _valid_arrays,
        )


@pytest.fixture(scope="module")
def tiny_cache() -> bytes:
    """A valid decoded-image cache of the Tiny ImageNet fixture's test split."""
    with _tmpdir() as d:
        root = d / "tiny-imagenet-200"
        shutil.copytree(TINY, root)
        readers.read_tinyimagenet(root, "test", workers=1)
        return (root / "neuralign-cache-test.npz").read_bytes()


@FUZZ
@given(data=st.data())
def test_fuzz_tinyimagenet_cache(tiny_cache: bytes, data: st.DataObject) -> None:
    """A corrupt cache is ignored and rebuilt: the images equal the ones decoded afresh."""
    raw = data.draw(st.one_of(st.binary(max_size=600), mutated(tiny_cache)))
    with _tmpdir() as d:
        root = d / "tiny-imagenet-200"
        shutil.copytree(TINY, root)
        (root / "neuralign-cache-test.npz").write_bytes(raw)
        EXECUTED["tinyimagenet-cache"] = EXECUTED.get("tinyimagenet-cache", 0) + 1
        images, labels, _ = readers.read_tinyimagenet(root, "test", cache_dir=d, workers=1)
        (root / "neuralign-cache-test.npz").unlink()
        fresh, fresh_labels, _ = readers.read_tinyimagenet(root, "test", cache_dir=d, workers=1)
        assert np.array_equal(images, fresh) and np.array_equal(labels, fresh_labels)


# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def valid_checkpoints() -> dict[str, bytes]:
    """Bytes of a neuralign safetensors checkpoint and of a foreign ``.pt`` state dict."""
    from neuralign.io import save_checkpoint

    with _tmpdir() as d:
        model = tiny_mlp()
        save_checkpoint(d / "m.safetensors", model, {"dataset": "digits"})
        torch.save(model.state_dict(), d / "m.pt")
        return {
            ".safetensors": (d / "m.safetensors").read_bytes(),
            ".pt": (d / "m.pt").read_bytes(),
        }


@FUZZ
@given(data=st.data(), suffix=st.sampled_from([".safetensors", ".pt", ".pth"]))
def test_fuzz_checkpoint_reader(
    valid_checkpoints: dict[str, bytes], data: st.DataObject, suffix: str
) -> None:
    from neuralign.io import load_checkpoint, load_model, read_metadata

    base = valid_checkpoints[".safetensors" if suffix == ".safetensors" else ".pt"]
    raw = data.draw(st.one_of(st.binary(max_size=512), mutated(base)))
    with _tmpdir() as d:
        f = d / f"ckpt{suffix}"
        f.write_bytes(raw)
        _typed_or_ok("checkpoint", lambda: load_checkpoint(f), _valid_checkpoint)
        _typed_or_ok("checkpoint", lambda: read_metadata(f), _valid_metadata)
        _typed_or_ok(
            "checkpoint",
            lambda: load_model(f, arch=None if suffix == ".safetensors" else "mlp"),
            _valid_model(f),
        )


# ----------------------------------------------------------------------------- configs


def _valid_config(cfg: Any) -> None:
    """An accepted config survives its own round trip through TOML unchanged."""
    from neuralign.experiment import ExperimentConfig, parse_config
    from neuralign.experiment.config import tomllib

    assert isinstance(cfg, ExperimentConfig)
    assert parse_config(tomllib.loads(cfg.to_toml())) == cfg


_toml_leaf = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
_toml_value = st.recursive(
    _toml_leaf,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def arch_metadata(draw: st.DrawFn) -> str:
    """A neuralign metadata header: random JSON, or the real one with mutated kwargs."""
    if draw(st.booleans()):
        return draw(st.one_of(st.text(max_size=30), _toml_value.map(json.dumps)))
    kwargs: dict[str, Any] = {"in_channels": 1, "image_size": 8, "hidden": [16]}
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(["in_channels", "image_size", "hidden", "num_classes", "x"]))
        kwargs[key] = draw(_toml_value)
    name = draw(st.sampled_from(["mlp", "resnet20", "nope"]) | _toml_value)
    return json.dumps({"arch": {"name": name, "kwargs": kwargs}})


@FUZZ
@given(doc=arch_metadata())
def test_fuzz_checkpoint_metadata(doc: str) -> None:
    """Valid tensors under random neuralign metadata (the JSON header is untrusted too)."""
    from safetensors.torch import save_file

    from neuralign.io import load_model

    state = tiny_mlp().state_dict()
    with _tmpdir() as d:
        f = d / "m.safetensors"
        save_file(state, str(f), metadata={"neuralign": doc})
        _typed_or_ok("checkpoint-metadata", lambda: load_model(f), _valid_model(f))


@st.composite
def mutated_config(draw: st.DrawFn) -> dict[str, Any]:
    """The demo config with one to three fields replaced, removed or added."""
    from neuralign.experiment.config import demo_config

    d = demo_config().to_dict()
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from(sorted(d)))
        if isinstance(d[section], dict) and d[section] and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(d[section])))
            op = draw(st.sampled_from(["set", "del", "add"]))
            if op == "set":
                d[section][key] = draw(_toml_value)
            elif op == "del":
                del d[section][key]
            else:
                d[section][draw(st.text(max_size=8))] = draw(_toml_value)
        else:
            d[section] = draw(_toml_value)
    return d


@FUZZ
@given(raw=st.one_of(mutated_config(), st.dictionaries(st.text(max_size=10), _toml_value)))
def test_fuzz_config_parser(raw: dict[str, Any]) -> None:
    from neuralign.experiment import parse_config

    _typed_or_ok("config", lambda: parse_config(raw), _valid_config)


@FUZZ
@given(data=st.data())
def test_fuzz_config_file(data: st.DataObject) -> None:
    from importlib import resources

    from neuralign.experiment import load_config

    demo = resources.files("neuralign").joinpath("configs/demo.toml").read_bytes()
    raw = data.draw(st.one_of(mutated(demo), st.binary(max_size=200)))
    suffix = data.draw(st.sampled_from([".toml", ".yaml"]))
    with _tmpdir() as d:
        f = d / f"c{suffix}"
        f.write_bytes(raw)
        _typed_or_ok("config-file", lambda: load_config(f), _valid_config)


# ----------------------------------------------------------------------------- specs


def _valid_spec(spec: Any) -> None:
    """An accepted spec has groups of positive size and survives a JSON round trip."""
    from neuralign.perm import PermutationSpec

    assert isinstance(spec, PermutationSpec)
    assert all(size > 0 for size in spec.sizes.values())
    assert PermutationSpec.from_json(spec.to_json()).to_json() == spec.to_json()


@pytest.fixture(scope="module")
def spec_json() -> str:
    from neuralign.perm import discover_spec

    return discover_spec(tiny_mlp(), torch.rand(2, 1, 8, 8)).to_json()


def _mutate_json(draw: st.DrawFn, node: Any) -> Any:
    """Replace one random node of a JSON document with a random value."""
    if isinstance(node, dict) and node and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(node)))
        return {**node, key: _mutate_json(draw, node[key])}
    if isinstance(node, list) and node and draw(st.booleans()):
        i = draw(st.integers(0, len(node) - 1))
        return [*node[:i], _mutate_json(draw, node[i]), *node[i + 1 :]]
    return draw(_toml_value | st.none())


@FUZZ
@given(data=st.data())
def test_fuzz_spec_reader(spec_json: str, data: st.DataObject) -> None:
    from neuralign.perm import PermutationSpec

    mode = data.draw(st.sampled_from(["node", "bytes", "node"]))
    if mode == "node":
        doc = json.loads(spec_json)
        for _ in range(data.draw(st.integers(1, 3))):
            doc = _mutate_json(data.draw, doc)
        text = json.dumps(doc)
    else:
        raw = data.draw(mutated(spec_json.encode()))
        text = raw.decode("utf-8", errors="replace")
    with _tmpdir() as d:
        f = d / "spec.json"
        f.write_text(text)
        _typed_or_ok("spec", lambda: PermutationSpec.from_json(text), _valid_spec)
        _typed_or_ok("spec", lambda: PermutationSpec.load(f), _valid_spec)


def test_fuzz_budget_report(capsys: pytest.CaptureFixture[str]) -> None:
    """Every target ran its examples; report how many corrupted inputs loaded (and passed
    their target's consistency check) rather than raising."""
    targets = {
        "idx", "idx-dataset", "cifar-pickle", "cifar-binary", "tinyimagenet-annotations",
        "tinyimagenet-cache", "checkpoint", "checkpoint-metadata", "config", "config-file",
        "spec",
    }  # fmt: skip
    if set(EXECUTED) != targets:  # run alone (-k): nothing to check
        pytest.skip("run with the whole fuzz module")
    assert all(EXECUTED[t] >= FUZZ_EXAMPLES for t in targets), EXECUTED
    with capsys.disabled():
        total = sum(EXECUTED.values())
        print(
            f"\nfuzz cases executed: {total} {json.dumps(EXECUTED, sort_keys=True)}; "
            f"loaded (consistent): {json.dumps(LOADED, sort_keys=True)}"
        )
