"""Checksums of the reference cache: a cache entry lists every file's sha256 in its manifest, and the
manifest is signed (HMAC) with a key kept outside the cache, so that a file changed on disk, or a
manifest rewritten to match, is found when it is read and never trusted.

Files are hashed as they are read (``read_verified``) or copied (``copy_verified``). A file whose
status (inode, size, modification and change times) is the same as when it was last hashed in
this process is not hashed again: its content cannot have changed without changing its change
time, which no unprivileged process can set back.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import threading
from pathlib import Path


class Tampered(Exception):
    """A cache file whose content is not what its signed manifest says."""


_lock = threading.Lock()
_hashed: dict[str, tuple] = {}  # path -> (status, sha256) when its content was last hashed
_key: bytes | None = None


def _status(path: Path) -> tuple:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(2**20):
            h.update(chunk)
    return h.hexdigest()


def _known(path: Path, status: tuple, sha: str) -> bool:
    with _lock:
        return _hashed.get(str(path)) == (status, sha)


def _remember(path: Path, status: tuple, sha: str) -> None:
    with _lock:
        _hashed[str(path)] = (status, sha)


def read_verified(path: Path, sha: str) -> bytes:
    """The bytes of ``path``, which must hash to ``sha``; raises Tampered."""
    before = _status(path)
    data = Path(path).read_bytes()
    if _known(path, before, sha) and _status(path) == before:
        return data
    if hashlib.sha256(data).hexdigest() != sha:
        raise Tampered(f"{path} does not match its checksum")
    _remember(path, before, sha)
    return data


def copy_verified(src: Path, dest: Path, sha: str) -> None:
    """Copy ``src``, which must hash to ``sha``, to ``dest``; raises Tampered."""
    before = _status(src)
    if not _known(src, before, sha):
        if file_sha256(src) != sha:
            raise Tampered(f"{src} does not match its checksum")
        _remember(src, before, sha)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    if _status(src) != before:
        raise Tampered(f"{src} changed while it was copied")


def key_path() -> Path:
    """Outside the cache (which a job's sandbox never shows, and whose location a candidate may guess)."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "pike" / "reference.key"


def _signing_key() -> bytes:
    """This user's key, made at first use (written whole under a temporary name, then linked into
    place, so that a concurrent first use reads all of it or makes none); a process that cannot keep
    one uses its own."""
    global _key
    with _lock:
        if _key is None:
            path = key_path()
            try:
                _key = path.read_bytes()
            except FileNotFoundError:
                _key = os.urandom(32)
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_name(f".{path.name}.{os.getpid()}")
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    with os.fdopen(fd, "wb") as f:
                        f.write(_key)
                    try:
                        os.link(tmp, path)
                    except FileExistsError:  # another process made it first
                        _key = path.read_bytes()
                    finally:
                        tmp.unlink()
                except OSError:
                    pass
            except OSError:
                _key = os.urandom(32)
        return _key


def key_id() -> str:
    """Names the key without revealing it: entries signed with different keys (another user's,
    a process's own) live apart and never count as changed for each other."""
    return hashlib.sha256(b"pike-reference-key-id" + _signing_key()).hexdigest()[:12]


def sign(files: dict[str, str]) -> str:
    return hmac.new(_signing_key(), json.dumps(files, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def signed(files: dict[str, str], mac: str) -> bool:
    return isinstance(mac, str) and hmac.compare_digest(sign(files), mac)


def manifest(root: Path) -> dict:
    """Every file under ``root`` with its sha256, signed."""
    files = {p.relative_to(root).as_posix(): file_sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}
    return {"files": files, "mac": sign(files)}
