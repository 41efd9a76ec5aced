"""``ast.parse`` that is safe across threads.

CPython 3.11 keeps the AST constructor's recursion depth in state that all threads share. A thread
switch inside a parse (the garbage collector running a finalizer is enough) lets another thread's
parse change it, and one of them fails with "SystemError: AST constructor recursion depth mismatch"
(python/cpython#106905). In PIKE the pool's static check parses a candidate in the event loop while
evaluator threads parse task sources to apply size sets: CI saw it. Every parse in PIKE goes through
here, under one lock.
"""

from __future__ import annotations

import ast
import os
import threading

_lock = threading.Lock()


def _reset_after_fork() -> None:  # a fork taken while another thread held the lock
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    with _lock:
        return ast.parse(source, filename=filename)
