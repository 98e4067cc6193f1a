"""The command group every command module registers on: the Typer app, its consoles, the options several
commands share, and how errors end a command. Imports nothing heavy (numpy, the server, frameworks):
commands import what they need inside themselves, so `modelpod --help` stays fast."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from modelpod import __version__
from modelpod.errors import ModelpodError, SpecError

# The commands that need an optional extra beyond `cli`, and which (the README's table lists the same).
# A command whose extra is missing stops with one line naming the extra instead of an ImportError.
# The frameworks of `init`, `predict` and `serve` are named by their runtimes (MissingDependencyError).
COMMAND_EXTRAS: dict[str, str] = {
    **dict.fromkeys(("build", "run", "push", "doctor"), "build"),
    **dict.fromkeys(("bench", "plan"), "bench"),
    "optimize": "optimize",
    **dict.fromkeys(
        ("deploy", "status", "logs", "history", "rollback", "scale", "delete", "train"), "cluster"
    ),
}


class _Commands(TyperGroup):
    """The command group. Errors modelpod raises on purpose end the command here, so that tests that
    invoke the app (Typer's CliRunner) see the same exit codes and messages as a user: 2 for a malformed
    spec, 1 for the others, and no traceback."""

    def invoke(self, ctx: Any) -> Any:  # a click Context of Typer's own (vendored) click
        try:
            return super().invoke(ctx)
        except SpecError as exc:
            print_error(exc)
            raise typer.Exit(2) from None
        except ModelpodError as exc:
            print_error(exc)
            raise typer.Exit(1) from None
        except ModuleNotFoundError as exc:
            extra = COMMAND_EXTRAS.get(ctx.invoked_subcommand or "")
            if extra is None or not exc.name:
                raise
            print_error(
                ModelpodError(
                    f"`modelpod {ctx.invoked_subcommand}` needs the Python package {exc.name!r}, "
                    "which is not installed",
                    hint=f"pip install 'modelpod[{extra}]' (from a clone: pip install '.[{extra}]')",
                )
            )
            raise typer.Exit(1) from None

    # Typer's rich help shows the type of every option, and `<bool>` beside a flag, which takes no
    # value. An empty metavar hides it.
    def get_params(self, ctx: Any) -> list[Any]:
        return _without_flag_types(super().get_params(ctx))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _without_flag_types(command.get_params(ctx))
        return command


def _without_flag_types(params: list[Any]) -> list[Any]:
    for param in params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    return params


app = typer.Typer(
    cls=_Commands,
    name="modelpod",
    help="From a model file on disk to a fast inference server, a hardened image and Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
# soft_wrap: long messages and paths stay on one line when the output is not a terminal
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

# the formats `init --format` takes: specfile/model.py's Format, which `modelpod --help` must not import
# (it imports numpy); tests/test_cli.py checks that the two agree
ModelFormat = Literal["onnx", "sklearn", "torch", "keras", "tensorflow", "transformers", "gguf", "custom"]
PortOption = Annotated[
    int | None,
    typer.Option(min=0, max=65535, help="Port; default from the spec (8080); 0 picks a free one."),
]

SpecPath = Annotated[Path, typer.Argument(help="modelpod.yaml, or the directory holding it.")]
ProfileOption = Annotated[
    str | None,
    typer.Option("--profile", "-p", help="Profile to apply (dev, staging, prod, or one the spec defines)."),
]


def run(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, prog_name="modelpod")
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def print_error(exc: BaseException) -> None:
    """An error as plain text: its message quotes user input (names, paths, patterns such as
    `[a-z0-9]`), which Rich markup would rewrite or drop."""
    err.print(Text.assemble(("error:", "bold red"), " ", str(exc)), highlight=False)


# Every line below that shows user text (a path, a name, a message) passes it through `escape`, or
# prints it with markup=False: Rich would read "[link=...]" or "[a-z]" in it as markup.


def _version(value: bool) -> None:
    if value:
        out.print(f"modelpod {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """modelpod: init, validate, serve, predict."""
