"""Commands that work on saved files and on the CLI itself: show, man, completion.

`show` reads a result file written by `sweep`, `run` or `bulk` with --json
(any schema version this pktbench reads, upgraded on the way in) and writes
it again as a table, JSON, CSV or a plot, so an old file can be brought to the
current schema or re-read without running anything. `man` and `completion`
print what pktbench.manpage makes from the command tree. Also what several
commands share and the command modules outside cli.py need without importing
it: --wide and the reading of the shared secret.

Must not: import the engine, numpy, scapy or matplotlib at import time (the
plot reporter imports matplotlib when it is called).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from pktbench.errors import ConfigError

def read_secret(token: str | None, token_file: str | None) -> bytes | None:
    """The shared secret of --token or --token-file (as `pktbench run` reads it)."""
    if token and token_file:
        raise click.UsageError("give --token or --token-file, not both")
    if token_file:
        try:
            secret = Path(token_file).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read token file {token_file}: {exc.strerror}") from None
        if not secret:
            raise ConfigError(f"token file {token_file} is empty")
        return secret
    return token.encode() if token else None


_WIDE_KEY = "pktbench.wide"


def _set_wide(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[_WIDE_KEY] = True


# --wide on every command that prints a table; the table reporter is then "wide"
WIDE = click.option("--wide", is_flag=True, expose_value=False, callback=_set_wide,
                    help="Every column, reasons inline, nothing wrapped "
                         "(default: fits 100 columns).")


def table_format() -> str:
    """The reporter format of the table this command prints: "wide" under --wide."""
    ctx = click.get_current_context(silent=True)
    return "wide" if ctx is not None and ctx.meta.get(_WIDE_KEY) else "table"



@click.command()
@click.argument("result_file", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--json", "-J", "json_path", metavar="FILE",
              help="Write the result, upgraded to the current schema, as JSON (- for stdout).")
@click.option("--csv", "csv_path", metavar="FILE", help="Write one CSV row per step (sweeps).")
@click.option("--plot", "plot_path", metavar="FILE", help="Write a PNG or SVG plot (sweeps).")
@WIDE
def show(result_file: str, json_path: str | None, csv_path: str | None,
         plot_path: str | None) -> None:
    """Print a saved sweep, run or bulk result as its table.

    Files of older schema versions are upgraded on read; --json writes the
    upgraded document.
    """
    from pktbench.report import check_output_path, write_report
    from pktbench.results import load_result

    for path in (json_path, csv_path, plot_path):
        if path and path != "-":
            check_output_path(path)
    result = load_result(result_file)
    if result.kind != "sweep" and (csv_path or plot_path):
        raise click.UsageError(f"{result_file} is a {result.kind} result: --csv and --plot "
                               "take sweep results")
    if json_path != "-":
        write_report(table_format(), result, sys.stdout)
    if json_path:
        write_report("json", result, json_path)
    if csv_path:
        write_report("csv", result, csv_path)
    if plot_path:
        write_report("plot", result, plot_path)


def sweeps_to_plot(old: str, new: str) -> tuple[Any, Any]:
    """`compare --plot`'s two results, refused before anything is printed unless both are sweeps."""
    from pktbench.results import load_result

    first, second = load_result(old), load_result(new)
    if first.kind != "sweep" or second.kind != "sweep":
        raise click.UsageError("--plot overlays two sweeps; bulk results have no plot")
    return first, second


@click.command("man")
@click.pass_context
def man_command(ctx: click.Context) -> None:
    """Print pktbench's man page (troff), made from these commands' help.

    `pktbench man | man -l -` reads it; the package installs it as
    share/man/man1/pktbench.1.
    """
    from pktbench.manpage import render_man

    sys.stdout.write(render_man(ctx.find_root().command))


@click.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion_command(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for SHELL.

    bash: `eval "$(pktbench completion bash)"` in ~/.bashrc; zsh: the same
    with zsh in ~/.zshrc; fish: `pktbench completion fish >
    ~/.config/fish/completions/pktbench.fish`.
    """
    from pktbench.manpage import completion_source

    sys.stdout.write(completion_source(ctx.find_root().command, shell) + "\n")


COMMANDS = (show, man_command, completion_command)
