"""The ``pike`` command line: sub-commands live in ``pike.commands``."""

from __future__ import annotations

import typer

from pike.commands import evaluate, report, search, show, sweep
from pike.suites.cli import suite_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help="PIKE: make PyTorch models faster, verified.")
app.registered_commands += evaluate.app.registered_commands + search.app.registered_commands + report.app.registered_commands + show.app.registered_commands + sweep.app.registered_commands
app.add_typer(suite_app, name="suite")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks from the task's own code with its errors.")) -> None:
    """PIKE: make PyTorch models faster, verified."""
    from pike.commands import common

    common.DEBUG = debug


def main() -> None:
    app()


if __name__ == "__main__":
    main()
