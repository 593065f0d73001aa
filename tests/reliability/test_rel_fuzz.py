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
import functools
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
#: Per target: how each call ended -- "refused" (a NeuralignError), "loaded" (no reference
#: to compare with), "loaded-intact" (the result equals the unmutated file's), and
#: "loaded-corrupt" (a mutated file loaded to a different result without any error).
OUTCOMES: dict[str, dict[str, int]] = {}

_UNSET: Any = object()


def _count(target: str, outcome: str) -> None:
    OUTCOMES.setdefault(target, {})
    OUTCOMES[target][outcome] = OUTCOMES[target].get(outcome, 0) + 1


def _typed_or_ok(
    target: str,
    fn: Callable[[], Any],
    *,
    expected: Any = _UNSET,
    same: Callable[[Any, Any], bool] | None = None,
    strict: bool = False,
) -> Any:
    """Run ``fn``; anything raised must be a NeuralignError.

    With ``expected`` (what the unmutated input gives), a call that returns is compared
    with it: a different result is a corrupted file that loaded. For readers whose format
    can detect the corruption (``strict``: neuralign checkpoints carry a checksum) that
    fails the test; for formats without any redundancy (raw pixel bytes) it is counted as
    ``loaded-corrupt`` and reported, never as a pass.
    """
    EXECUTED[target] = EXECUTED.get(target, 0) + 1
    try:
        out = fn()
    except NeuralignError:
        _count(target, "refused")
        return None
    if expected is _UNSET:
        _count(target, "loaded")
        return out
    if (same or _same)(out, expected):
        _count(target, "loaded-intact")
        return out
    _count(target, "loaded-corrupt")
    if strict:
        raise AssertionError(f"{target}: a corrupted input loaded without an error")
    return out


def _same(a: Any, b: Any) -> bool:
    """Deep equality over tensors, arrays, dicts, lists and tuples."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and bool(torch.equal(a, b))
        )
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and np.array_equal(a, b)
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.nn.Module) and isinstance(b, torch.nn.Module):
        return type(a) is type(b) and _same(a.state_dict(), b.state_dict())
    return bool(a == b)


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


def _source(name: str, original: bytes) -> Any:
    """Mutations of ``original``, tagged with its name (so the result can be compared)."""
    return st.tuples(st.just(name), mutated(original))


@FUZZ
@given(
    case=st.one_of(
        st.tuples(st.none(), st.binary(max_size=2048)),
        _source("labels", IDX_LABELS),
        _source("images", IDX_IMAGES[:4096]),
    ),
    compress=st.booleans(),
)
def test_fuzz_idx_reader(case: tuple[str | None, bytes], compress: bool) -> None:
    which, raw = case
    with _tmpdir() as d:
        expected: Any = _UNSET
        if which == "labels":  # (the 4 KiB image prefix is itself truncated: refused)
            ref = d / "ref-idx1-ubyte"
            ref.write_bytes(IDX_LABELS)
            expected = readers.read_idx(ref)
        f = d / "x-idx3-ubyte"
        f.write_bytes(gzip.compress(raw) if compress else raw)
        _typed_or_ok("idx", lambda: readers.read_idx(f), expected=expected)


def _dataset_value(ds: Any) -> Any:
    return (ds.images, ds.labels, ds.num_classes)


@FUZZ
@given(which=st.sampled_from(["images", "labels"]), data=st.data())
def test_fuzz_idx_dataset(which: str, data: st.DataObject) -> None:
    """A mutated file inside a Fashion-MNIST folder: load_dataset answers with DataError."""
    original = IDX_IMAGES if which == "images" else IDX_LABELS
    raw = data.draw(mutated(original))
    expected = _reference("fashion-mnist", "fashion-mnist", inside=False)
    with _tmpdir() as d:
        shutil.copytree(FIXTURES / "fashion-mnist", d, dirs_exist_ok=True)
        name = f"t10k-{which}-idx{3 if which == 'images' else 1}-ubyte.gz"
        (d / name).write_bytes(gzip.compress(raw, compresslevel=1))
        _typed_or_ok(
            "idx-dataset",
            lambda: _dataset_value(load_dataset("fashion-mnist", "test", data_dir=d)),
            expected=expected,
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


@functools.cache
def _reference(name: str, folder: str, inside: bool = True) -> Any:
    """What the unmutated fixture folder loads to (test split), alone in a folder as the
    mutated copies are (``inside``: the folder itself goes into ``data_dir``)."""
    with _tmpdir() as d:
        shutil.copytree(FIXTURES / folder, d / folder if inside else d, dirs_exist_ok=True)
        return _dataset_value(load_dataset(name, "test", data_dir=d))


@FUZZ
@given(
    case=st.one_of(
        st.tuples(st.none(), st.binary(max_size=1024)),
        _source("test_batch", CIFAR_TEST),
        _source("batches.meta", CIFAR_META),
        st.tuples(st.none(), cifar_like()),
    ),
    fmt=st.sampled_from(["test_batch", "batches.meta"]),
)
def test_fuzz_cifar_pickle(case: tuple[str | None, bytes], fmt: str) -> None:
    """A mutated CIFAR-10 python batch (or its meta file) inside a valid folder."""
    source, raw = case
    expected = _reference("cifar10", "cifar-10-batches-py") if source == fmt else _UNSET
    with _tmpdir() as d:
        root = d / "cifar-10-batches-py"
        shutil.copytree(CIFAR_PY, root)
        (root / fmt).write_bytes(raw)
        _typed_or_ok("cifar-pickle", lambda: readers.read_cifar_pickle([root / fmt]))
        _typed_or_ok(
            "cifar-pickle",
            lambda: _dataset_value(load_dataset("cifar10", "test", data_dir=d)),
            expected=expected,
        )


CIFAR_BIN = (FIXTURES / "cifar-100-binary" / "test.bin").read_bytes()


@FUZZ
@given(case=st.one_of(st.tuples(st.none(), st.binary(max_size=8000)), _source("bin", CIFAR_BIN)))
def test_fuzz_cifar_binary(case: tuple[str | None, bytes]) -> None:
    source, raw = case
    expected = _reference("cifar100", "cifar-100-binary") if source else _UNSET
    with _tmpdir() as d:
        root = d / "cifar-100-binary"
        shutil.copytree(FIXTURES / "cifar-100-binary", root)
        (root / "test.bin").write_bytes(raw)
        _typed_or_ok(
            "cifar-binary",
            lambda: _dataset_value(load_dataset("cifar100", "test", data_dir=d)),
            expected=expected,
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

    native = suffix == ".safetensors"
    base = valid_checkpoints[".safetensors" if native else ".pt"]
    raw = data.draw(st.one_of(st.binary(max_size=512), mutated(base)))
    with _tmpdir() as d:
        ref = d / f"ref{suffix}"
        ref.write_bytes(base)
        expected = load_checkpoint(ref)
        f = d / f"ckpt{suffix}"
        f.write_bytes(raw)
        # neuralign's own checkpoints carry a checksum: a changed byte that still parses
        # must be refused (strict); foreign .pt files have none (counted, reported).
        target = "checkpoint" if native else "checkpoint-foreign"
        _typed_or_ok(target, lambda: load_checkpoint(f), expected=expected, strict=native)
        _typed_or_ok(target, lambda: read_metadata(f))
        _typed_or_ok(
            target,
            lambda: load_model(f, arch=None if native else "mlp").state_dict(),
            expected=expected[0],
            strict=native,
        )


# ----------------------------------------------------------------------------- configs

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
        _typed_or_ok("checkpoint-metadata", lambda: load_model(f))


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

    _typed_or_ok("config", lambda: parse_config(raw))


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
        _typed_or_ok("config-file", lambda: load_config(f))


# ----------------------------------------------------------------------------- specs


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
        _typed_or_ok("spec", lambda: PermutationSpec.from_json(text))
        _typed_or_ok("spec", lambda: PermutationSpec.load(f))


def test_corrupt_load_is_not_a_pass() -> None:
    """The checks can fail: a result that differs from the reference is never a pass."""
    before = dict(OUTCOMES.get("self-test", {}))
    with pytest.raises(AssertionError, match="corrupted input loaded"):
        _typed_or_ok("self-test", lambda: torch.ones(3), expected=torch.zeros(3), strict=True)
    _typed_or_ok("self-test", lambda: torch.ones(3), expected=torch.zeros(3))
    _typed_or_ok("self-test", lambda: torch.ones(3), expected=torch.ones(3))
    got = OUTCOMES["self-test"]
    assert got.get("loaded-corrupt", 0) - before.get("loaded-corrupt", 0) == 2
    assert got.get("loaded-intact", 0) - before.get("loaded-intact", 0) == 1
    del OUTCOMES["self-test"], EXECUTED["self-test"]


def test_fuzz_budget_report(capsys: pytest.CaptureFixture[str]) -> None:
    """Print how many fuzz calls ran (collected by the reliability report)."""
    with capsys.disabled():
        total = sum(EXECUTED.values())
        print(f"\nfuzz cases executed: {total} {json.dumps(EXECUTED, sort_keys=True)}")
        print(f"fuzz outcomes: {json.dumps(OUTCOMES, sort_keys=True)}")
    # a corrupted neuralign checkpoint never loads (strict targets fail at once above)
    assert OUTCOMES.get("checkpoint", {}).get("loaded-corrupt", 0) == 0
