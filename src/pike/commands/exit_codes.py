"""The exit status of ``pike optimize`` (and the other commands' errors), documented in the README."""

from __future__ import annotations

OK = 0  # every task has a verified result, or was delivered as eager because nothing beat it
TASKS_FAILED = 1  # some tasks failed (their errors are under the table); the others have results
USAGE = 2  # bad input (flag, config key, file, device, directory): nothing was started
NOTHING_RAN = 3  # no task produced a result (every one failed, or none could be loaded)
INTERNAL = 4  # an unexpected error in PIKE itself (pike --debug shows its traceback)
# Stopped at a file round (--llm batch:DIR): its requests are written; `pike optimize --resume DIR`
# goes on once their replies are beside them. EX_TEMPFAIL of sysexits.h: "try again later".
BATCH_ROUND = 75
INTERRUPTED = 130  # Ctrl-C: the run directory is kept, `pike optimize --resume DIR` continues it


def for_run(doc: dict, skipped: int = 0) -> int:
    """The status of a finished run from its summary: ``skipped`` tasks could not be loaded."""
    rows = doc.get("rows", [])
    failed = skipped + sum(r["status"] == "error" for r in rows)
    if failed >= skipped + len(rows):
        return NOTHING_RAN
    return TASKS_FAILED if failed else OK
