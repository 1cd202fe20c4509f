"""The `specialize` entry point: command groups and the one place errors become exit codes."""

from __future__ import annotations

import logging
import os
import sys
import warnings

import typer

from specialize.cli import adapters as adapters_cli
from specialize.cli import config as config_cli
from specialize.cli import data as data_cli
from specialize.cli import demo as demo_cli
from specialize.cli import eval as eval_cli
from specialize.cli import feedback as feedback_cli
from specialize.cli import generate as generate_cli
from specialize.cli import ladder as ladder_cli
from specialize.cli import models as models_cli
from specialize.cli import runs as runs_cli
from specialize.cli import simulate as simulate_cli
from specialize.cli import sweep as sweep_cli
from specialize.cli import train as train_cli
from specialize.cli import transcribe as transcribe_cli
from specialize.errors import SpecializeError

app = typer.Typer(
    name="specialize",
    help="Turn a general language model into a domain specialist, and prove the result.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(models_cli.app, name="models")
app.add_typer(config_cli.app, name="config")
app.add_typer(data_cli.app, name="data")
app.add_typer(runs_cli.app, name="runs")
app.add_typer(adapters_cli.app, name="adapters")
app.add_typer(feedback_cli.app, name="feedback")
app.add_typer(simulate_cli.app, name="simulations")
generate_cli.register(app)
train_cli.register(app)
transcribe_cli.register(app)
eval_cli.register(app)
ladder_cli.register(app)
demo_cli.register(app)
simulate_cli.register(app)
sweep_cli.register(app)
runs_cli.register_ui(app)
adapters_cli.register_serve(app)

_state = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Show info-level logs of libraries."
    ),
) -> None:
    _state["debug"] = debug
    _setup_logging(verbose)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one line and return their exit code, bugs keep tracebacks."""
    try:
        app(args=argv, prog_name="specialize", standalone_mode=False)
    except SpecializeError as exc:
        if _state["debug"] or "--debug" in (argv or sys.argv):
            raise
        typer.secho(f"error: {exc.one_line()}", fg="red", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except (typer.Exit, SystemExit) as exc:
        return int(getattr(exc, "exit_code", getattr(exc, "code", 0)) or 0)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        if isinstance(exc, _usage_errors()):
            exc.show()
            return exc.exit_code
        if isinstance(exc, typer.Abort):
            return 1
        raise
    return 0


def _usage_errors() -> tuple[type[Exception], ...]:
    """Click's usage errors, and the copies typer >= 0.26 raises from the click it vendors (an
    unknown option would otherwise end in a traceback)."""
    import click

    errors: list[type[Exception]] = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException as VendoredClickException
    except ImportError:  # an older typer uses click itself
        return tuple(errors)
    return (*errors, VendoredClickException)


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, show_time=False, console=_stderr_console())],
        force=True,
    )
    logging.getLogger("specialize").setLevel(logging.INFO)
    if not verbose:
        # Library deprecation notices are for us, the maintainers, not for users of the CLI.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def run() -> None:
    """Console-script shim: exit with `main`'s status."""
    sys.exit(main())


if __name__ == "__main__":
    run()
