"""The ``pike`` command line: sub-commands live in ``pike.commands``."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from pike.commands import evaluate, exit_codes, report, search, show, sweep
from pike.suites.cli import suite_app

app = typer.Typer(no_args_is_help=True, help="PIKE: make PyTorch models faster, verified.",
                  context_settings={"help_option_names": ["-h", "--help"]}, pretty_exceptions_enable=False)
app.registered_commands += evaluate.app.registered_commands + search.app.registered_commands + report.app.registered_commands + show.app.registered_commands + sweep.app.registered_commands
app.add_typer(suite_app, name="suite")


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as installed

    import pike

    try:
        return installed("pike-evolve")
    except PackageNotFoundError:
        return pike.__version__


def _print_version(value: bool) -> None:
    if value:
        print(f"pike {version()}")
        raise typer.Exit()


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks with errors (the task's own code's and PIKE's)."),
          _version: Optional[bool] = typer.Option(None, "--version", callback=_print_version, is_eager=True,
                                                  help="Print PIKE's version and exit.")) -> None:
    """PIKE: make PyTorch models faster, verified."""
    from pike.commands import common

    common.DEBUG = debug


def _kinds(e: BaseException) -> set[str]:
    """The class names of ``e``'s kinds: click's exceptions are matched by name, as typer may carry its
    own copy of click or use the click package."""
    return {c.__name__ for c in type(e).__mro__}


def main() -> None:
    from pike.commands import common

    try:
        # Not standalone: click's usage errors come here, to be said in one line like every other.
        rv = app(standalone_mode=False)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(exit_codes.INTERRUPTED)
    except Exception as e:  # noqa: BLE001 - one line each; an unexpected error's traceback with --debug
        kinds = _kinds(e)
        if "Abort" in kinds:  # click's form of Ctrl-C
            print("interrupted", file=sys.stderr)
            sys.exit(exit_codes.INTERRUPTED)
        if "ClickException" in kinds:
            ctx = getattr(e, "ctx", None)
            hint = f" (`{ctx.command_path if ctx is not None else 'pike'} -h` for help)" if "UsageError" in kinds else ""
            common.err_console.print(f"[bold red]error:[/] {e.format_message()}{hint}", highlight=False)
            sys.exit(e.exit_code)
        if common.DEBUG:
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        common.err_console.print(f"[bold red]error:[/] internal: {type(e).__name__}: {first} (pike --debug ... shows the traceback)",
                                 highlight=False)
        sys.exit(exit_codes.INTERNAL)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
