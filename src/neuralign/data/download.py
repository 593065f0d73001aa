"""Checksum-verified downloads and safe archive extraction.

Only used when a caller asks for ``download=True``: nothing in neuralign touches the network
otherwise. Downloads go through :mod:`urllib` (so ``file://`` URLs work, which is how the tests
exercise this code), are written to a temporary file next to the destination, verified, and only
then renamed into place, so a killed or corrupted download never leaves a file that looks
complete.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from neuralign.errors import DataError
from neuralign.io.atomic import new_file_mode

__all__ = ["download_file", "extract_archive", "file_checksum", "parse_checksum"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_HEX_LENGTHS = {32: "md5", 40: "sha1", 64: "sha256"}


def parse_checksum(checksum: str) -> tuple[str, str]:
    """Split a checksum string into ``(algorithm, lowercase hex digest)``.

    Args:
        checksum: ``"sha256:<hex>"``, ``"md5:<hex>"`` (any :mod:`hashlib` algorithm name), or a
            bare hex digest whose length identifies the algorithm (32 = MD5, 40 = SHA-1,
            64 = SHA-256).

    Returns:
        The algorithm name and the expected digest.

    Raises:
        DataError: If the string is not a recognisable checksum.
    """
    text = checksum.strip()
    if ":" in text:
        algo, digest = text.split(":", 1)
        algo = algo.strip().lower()
    else:
        digest = text
        algo = _HEX_LENGTHS.get(len(digest), "")
    digest = digest.strip().lower()
    if not algo or algo not in hashlib.algorithms_available:
        raise DataError(f"unrecognised checksum {checksum!r}; pass 'sha256:<hex>' or 'md5:<hex>'")
    if not digest or any(c not in "0123456789abcdef" for c in digest):
        raise DataError(f"checksum {checksum!r} is not a hex digest")
    return algo, digest


def file_checksum(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Return the hex digest of a file, read in chunks.

    Args:
        path: File to hash.
        algorithm: Any :mod:`hashlib` algorithm name.

    Returns:
        The lowercase hex digest.
    """
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def download_file(
    url: str, dest: str | os.PathLike[str], checksum: str, *, timeout: float = 60.0
) -> Path:
    """Download ``url`` to ``dest`` atomically and verify its checksum.

    If ``dest`` already exists with the right checksum nothing is downloaded. The data is
    streamed into a temporary file in ``dest``'s directory and hashed on the way; on a
    mismatch the temporary file is deleted and nothing is left behind.

    Args:
        url: Source URL (``https://``, ``http://`` or ``file://``).
        dest: Destination file path; parent directories are created.
        checksum: Expected digest, see :func:`parse_checksum`.
        timeout: Socket timeout in seconds.

    Returns:
        The destination path.

    Raises:
        DataError: If the download fails or the checksum does not match.
    """
    algo, expected = parse_checksum(checksum)
    dest_path = Path(dest)
    if dest_path.is_file():
        if file_checksum(dest_path, algo) == expected:
            logger.info("%s already present with the expected checksum", dest_path)
            return dest_path
        logger.warning("%s exists but its checksum differs; downloading again", dest_path)
    dest_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{dest_path.name}.", suffix=".part", dir=dest_path.parent
    )
    tmp = Path(tmp_name)
    try:
        h = hashlib.new(algo)
        logger.info("downloading %s -> %s", url, dest_path)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                for chunk in iter(lambda: resp.read(_CHUNK), b""):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise DataError(
                f"could not download {url}: {exc}; check the network connection or fetch the "
                f"file by hand into {dest_path.parent}"
            ) from exc
        actual = h.hexdigest()
        if actual != expected:
            raise DataError(
                f"checksum mismatch for {url}: expected {algo} {expected}, got {actual}; the "
                "download is corrupt or the file changed upstream; delete it and retry"
            )
        os.chmod(tmp, new_file_mode(dest_path))  # mkstemp's 0600 would hide it from the group
        os.replace(tmp, dest_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest_path


def _safe_member_path(name: str, archive: Path) -> PurePosixPath:
    """Validate an archive member name and return it as a relative posix path."""
    norm = name.replace("\\", "/")
    rel = PurePosixPath(norm)
    if rel.is_absolute() or norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        raise DataError(f"refusing to extract {archive}: member {name!r} has an absolute path")
    if ".." in rel.parts:
        raise DataError(f"refusing to extract {archive}: member {name!r} escapes the directory")
    return rel


def extract_archive(archive: str | os.PathLike[str], dest_dir: str | os.PathLike[str]) -> Path:
    """Extract a ``.tar``, ``.tar.gz``/``.tgz`` or ``.zip`` archive safely.

    Every member is checked before anything is written: absolute paths, ``..`` components,
    links and special files are refused. The archive is first extracted into a temporary
    directory inside ``dest_dir`` and its top-level entries are then renamed into place, so an
    interrupted extraction never leaves a half-populated dataset directory.

    Args:
        archive: Archive file.
        dest_dir: Directory to extract into (created if needed).

    Returns:
        ``dest_dir`` as a :class:`~pathlib.Path`.

    Raises:
        DataError: If the archive is unreadable, unsafe, or a top-level entry already exists.
    """
    archive_path = Path(archive)
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract.", dir=dest))
    try:
        name = archive_path.name.lower()
        if name.endswith(".zip"):
            _extract_zip(archive_path, staging)
        elif name.endswith((".tar", ".tar.gz", ".tgz")):
            _extract_tar(archive_path, staging)
        else:
            raise DataError(f"unknown archive type {archive_path.name}; expected .tar.gz or .zip")
        for entry in sorted(staging.iterdir()):
            target = dest / entry.name
            if target.exists():
                raise DataError(
                    f"{target} already exists (an earlier, incomplete copy?); remove it and retry"
                )
            os.replace(entry, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _extract_zip(archive: Path, staging: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                _safe_member_path(info.filename, archive)
                mode = (info.external_attr >> 16) & 0o170000
                if mode and mode not in (0o100000, 0o040000):
                    raise DataError(
                        f"refusing to extract {archive}: member {info.filename!r} is a link or "
                        "special file"
                    )
            zf.extractall(staging, members=infos)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{archive} is not a valid zip file ({exc}); delete it and retry") from exc


def _extract_tar(archive: Path, staging: Path) -> None:
    try:
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            for m in members:
                _safe_member_path(m.name, archive)
                if not (m.isfile() or m.isdir()):
                    raise DataError(
                        f"refusing to extract {archive}: member {m.name!r} is a link or special "
                        "file"
                    )
            if hasattr(tarfile, "data_filter"):
                tf.extractall(staging, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4; members were validated above
                tf.extractall(staging, members=members)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(
            f"{archive} is not a valid tar archive ({exc}); delete it and retry"
        ) from exc
