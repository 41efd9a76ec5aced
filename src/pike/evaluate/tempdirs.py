"""Scratch directories that record the process that made them, so that the next run removes those of
a run that was killed (or a test that never closed its evaluator) instead of leaving them in /dev/shm
or /tmp for good."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

OWNER_FILE = ".owner"
STALE_UNOWNED_S = 24 * 3600  # directories from before owners were recorded


def owned_tempdir(prefix: str, root: str | None = None) -> str:
    """``mkdtemp`` that records the creating process, after removing the directories of the same
    prefix whose creator is gone."""
    root = root or tempfile.gettempdir()
    sweep_stale(root, prefix)
    d = tempfile.mkdtemp(prefix=prefix, dir=root)
    Path(d, OWNER_FILE).write_text(str(os.getpid()))
    return d


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one of another user counts: we may not signal it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(root: str, prefix: str) -> list[str]:
    removed = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for e in entries:
        if not e.name.startswith(prefix) or not e.is_dir(follow_symlinks=False):
            continue
        try:
            gone = not pid_alive(int(Path(e.path, OWNER_FILE).read_text()))
        except FileNotFoundError:
            try:
                gone = time.time() - e.stat(follow_symlinks=False).st_mtime > STALE_UNOWNED_S
            except OSError:
                continue
        except (OSError, ValueError):
            continue
        if gone:
            shutil.rmtree(e.path, ignore_errors=True)
            removed.append(e.name)
    return removed
