"""Output-path policy and resume fingerprints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from neuralign.errors import ConfigError
from neuralign.io.atomic import atomic_path, remove_stale_temporaries
from neuralign.io.outputs import (
    check_not_input,
    checkpoint_out_path,
    is_own_temporary,
    safe_component,
)
from neuralign.io.resume import FINGERPRINT_NAME, ResumeMismatchError, check_resume


def test_checkpoint_suffixes(tmp_path: Path) -> None:
    assert checkpoint_out_path(tmp_path / "b.safetensors") == tmp_path / "b.safetensors"
    assert checkpoint_out_path(tmp_path / "b") == tmp_path / "b.safetensors"
    for bad in ("b.pt", "b.pth", "b.bin", "b.ckpt"):
        with pytest.raises(ConfigError, match=r"name the file b\.safetensors"):
            checkpoint_out_path(tmp_path / bad)


def test_output_equal_to_input_refused(tmp_path: Path) -> None:
    a = tmp_path / "a.safetensors"
    a.write_bytes(b"x")
    check_not_input(tmp_path / "out.safetensors", [a, None])
    with pytest.raises(ConfigError, match="overwrite the input"):
        check_not_input(a, [tmp_path / "other", a])
    with pytest.raises(ConfigError):  # another spelling of the same path
        check_not_input(tmp_path / "." / "a.safetensors", [a])
    link = tmp_path / "link.safetensors"
    link.symlink_to(a)
    with pytest.raises(ConfigError):  # through a link
        check_not_input(link, [a])
    hard = tmp_path / "hard.safetensors"
    os.link(a, hard)
    with pytest.raises(ConfigError):
        check_not_input(hard, [a])


@pytest.mark.parametrize(
    "name",
    ["../../x", "../../../x", "/abs", "a/b", "a\\b", "..", ".", ".hidden", "", "x" * 101, "a..b"],
)
def test_unsafe_names(name: str) -> None:
    with pytest.raises(ConfigError, match="name"):
        safe_component(name)


def test_safe_names() -> None:
    for name in ("experiment", "fashion-tinyten_v2", "r20.seed+1", "A1"):
        assert safe_component(name) == name


def test_only_own_temporaries_cleaned(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    foreign = [tmp_path / ".user.tmp", tmp_path / "sub" / ".notes.swp.tmp", tmp_path / "x.tmp"]
    for f in foreign:
        f.write_text("user data")
    # a temporary left by a killed atomic write
    try:
        with atomic_path(tmp_path / "sub" / "model.safetensors") as tmp:
            tmp.write_bytes(b"half")
            own = Path(tmp)
            os.link(tmp, tmp.with_name(tmp.name + ".keep"))
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    keep = own.with_name(own.name + ".keep")
    os.rename(keep, own)  # as if the process had been killed before cleaning up
    assert is_own_temporary(own) and not any(is_own_temporary(f) for f in foreign)
    # a link to someone else's file, named like ours, is not followed
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    outside.write_text("elsewhere")
    (tmp_path / ".x.abcdefgh.neuralign.tmp").symlink_to(outside)
    assert remove_stale_temporaries(tmp_path) == 1
    assert not own.exists() and all(f.read_text() == "user data" for f in foreign)
    assert outside.read_text() == "elsewhere"


def test_resume_fingerprint(tmp_path: Path) -> None:
    fields = {"seed": 0, "lr": 0.1, "arch": "mlp"}
    assert check_resume(tmp_path / "run", fields, command="neuralign train") is False
    assert (tmp_path / "run" / FINGERPRINT_NAME).exists()
    assert check_resume(tmp_path / "run", dict(reversed(list(fields.items()))), command="t")
    with pytest.raises(ResumeMismatchError) as exc:
        check_resume(tmp_path / "run", {**fields, "seed": 1, "lr": 0.2}, command="neuralign train")
    msg = str(exc.value)
    assert "\n" not in msg and "lr 0.1 -> 0.2" in msg and "seed 0 -> 1" in msg
    assert "another --out" in msg and isinstance(exc.value, ConfigError)
    (tmp_path / "run" / FINGERPRINT_NAME).write_text("{garbage")
    with pytest.raises(ResumeMismatchError, match="unreadable"):
        check_resume(tmp_path / "run", fields, command="t")
    assert check_resume(tmp_path / "new", fields, command="t", write=False) is False
    assert not (tmp_path / "new").exists()
