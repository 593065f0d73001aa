"""Output-path policy shared by the CLI and the run pipeline (docs/reliability.md, "Output paths").

* :func:`checkpoint_out_path`: neuralign writes safetensors checkpoints; a name without a
  suffix gets ``.safetensors``, any other suffix (``.pt``: a reader would expect a pickle)
  is refused before any work starts.
* :func:`check_not_input`: an output that is (or resolves to) one of the command's inputs
  is refused; writing it would destroy the input.
* :func:`safe_component`: a name that becomes a folder (a config's ``name`` under
  ``runs/``) must be one plain path component: no separators, no ``..``, not absolute.
* :func:`is_own_temporary`: the names :func:`neuralign.io.atomic.atomic_path` gives its
  temporary files, so cleaning removes only files neuralign itself created.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from neuralign.errors import ConfigError

__all__ = [
    "TMP_SUFFIX",
    "check_not_input",
    "checkpoint_out_path",
    "is_own_temporary",
    "safe_component",
]

#: Suffix of every temporary file neuralign's atomic writes create.
TMP_SUFFIX = ".neuralign.tmp"

# ".NAME." + mkstemp's 8 random characters + TMP_SUFFIX
_TMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}" + re.escape(TMP_SUFFIX) + r"$")

_CHECKPOINT_SUFFIX = ".safetensors"


def checkpoint_out_path(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """The checkpoint path to write for a requested ``path``.

    ``x`` becomes ``x.safetensors``; ``x.safetensors`` stays. Anything else (``x.pt``,
    ``x.pth``, ``x.bin``) is refused: the file would hold safetensors bytes under a name that
    promises another format, and readers (neuralign's included) would reject it as corrupt.

    Raises:
        ConfigError: For another suffix, naming the fix.
    """
    p = Path(path)
    if p.suffix == _CHECKPOINT_SUFFIX:
        return p
    if p.suffix == "" and p.name not in ("", ".", ".."):
        return p.with_name(p.name + _CHECKPOINT_SUFFIX)
    stem = p.with_suffix("").name if p.suffix else p.name
    raise ConfigError(
        f"{option} {str(path)!r}: neuralign writes safetensors checkpoints; name the file "
        f"{stem}{_CHECKPOINT_SUFFIX} (a {p.suffix or 'bare'} name would hold bytes other tools "
        "and neuralign itself read as a corrupt file)"
    )


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_not_input(
    out: str | os.PathLike[str],
    inputs: Iterable[str | os.PathLike[str] | None],
    option: str = "--out",
) -> None:
    """Refuse an output that is one of the inputs (the same file, through any path or link).

    Raises:
        ConfigError: Naming the input.
    """
    o = Path(out)
    for inp in inputs:
        if inp is None:
            continue
        if _same_file(o, Path(inp)):
            raise ConfigError(
                f"{option} {str(out)!r} is also an input of this command ({inp}); writing it "
                "would overwrite the input: choose another output path"
            )


_COMPONENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def safe_component(name: str, field: str = "name", max_length: int = 100) -> str:
    """Return ``name`` if it is one safe path component, else raise :class:`ConfigError`.

    Safe: letters, digits and ``._+-``, starting with a letter or digit, at most
    ``max_length`` characters: no ``/`` or ``\\``, no ``..``, not absolute, not hidden.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{field}: must be a non-empty string, got {name!r}")
    if len(name) > max_length or not _COMPONENT_RE.match(name) or ".." in name:
        raise ConfigError(
            f"{field}: {name!r} is not a plain folder name (use letters, digits and ._+-, "
            f"starting with a letter or digit, at most {max_length} characters; no '/', "
            "'..' or absolute paths: the run folder must stay under runs/, or pass --out)"
        )
    return name


def is_own_temporary(path: str | os.PathLike[str]) -> bool:
    """Whether ``path``'s name is one neuralign's atomic writes give their temporaries."""
    return bool(_TMP_RE.match(Path(path).name))
