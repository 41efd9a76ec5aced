"""pike.astparse: parsing from several threads at once (CPython 3.11's AST constructor shares its
recursion depth across threads, python/cpython#106905; CI failed on it once)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from pike import astparse

SOURCE = (Path(astparse.__file__).parent / "evaluate" / "static.py").read_text()


class _Cycle:
    """Cyclic garbage with a finalizer: the collector, run inside a parse, runs Python code there,
    which is where the interpreter switches threads."""

    def __init__(self):
        self.me = self

    def __del__(self):
        sum(range(20))


def _parse_in_threads(parse, threads: int = 4, rounds: int = 40) -> list[str]:
    errors: list[str] = []

    def work():
        for _ in range(rounds):
            for _ in range(300):
                _Cycle()
            try:
                parse(SOURCE)
            except SystemError as e:
                errors.append(str(e))

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        ts = [threading.Thread(target=work) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:
        sys.setswitchinterval(old)
    return errors


def test_parse_from_several_threads_at_once():
    assert _parse_in_threads(astparse.parse) == []
    assert astparse.parse("x = 1").body[0].targets[0].id == "x"
