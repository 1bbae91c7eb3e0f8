"""The man page and the shell completion scripts, both made from the click commands.

Owns: `render_man(command)`, a troff man page (section 1) of the pktbench
command group: every command and subcommand with its usage, help text and
options, so the page says what `--help` says; `completion_source(shell)`,
click's completion script for bash, zsh or fish.

The page ships in the package as share/man/man1/pktbench.1 (setup.py's
data_files); `pktbench man > man/pktbench.1` (or `make man`) writes it
again, and a test fails when the file and the commands differ.

Must not: import anything heavier than click (`pktbench man` runs as lightly
as `--help`).
"""
from __future__ import annotations

from collections.abc import Iterator

import click

from pktbench._version import __version__

SHELLS = ("bash", "zsh", "fish")
PROG = "pktbench"
COMPLETE_VAR = "_PKTBENCH_COMPLETE"


def _escape(text: str) -> str:
    """Text safe in a troff line: backslashes and leading dots or quotes escaped."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    lines = []
    for line in text.splitlines():
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def _paragraphs(text: str | None) -> list[str]:
    """A help text as troff paragraphs: dedented, each paragraph one filled line."""
    import inspect

    paragraphs = [" ".join(p.replace("\b", "").split())
                  for p in inspect.cleandoc(text or "").split("\n\n")]
    out: list[str] = []
    for paragraph in (p for p in paragraphs if p):
        out += [".PP", _escape(paragraph)] if out else [_escape(paragraph)]
    return out


def _walk(command: click.Command, path: tuple[str, ...]
          ) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name in sorted(command.list_commands(click.Context(command))):
            sub = command.get_command(click.Context(command), name)
            if sub is not None and not sub.hidden:
                yield from _walk(sub, (*path, name))


def _option_lines(command: click.Command, ctx: click.Context) -> list[str]:
    lines: list[str] = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, text = record
        lines += [".TP", f"\\fB{_escape(names)}\\fR", _escape(text) or "\\&"]
    return lines


def render_man(command: click.Command, prog: str = PROG) -> str:
    """The troff source of `prog`(1) from a click command (group) and its subcommands."""
    root_ctx = click.Context(command, info_name=prog)
    summary = (command.help or "").split("\n\n")[0].strip().rstrip(".")
    lines = [
        f'.TH {prog.upper()} 1 "" "{prog} {__version__}" "User Commands"',
        ".SH NAME",
        f"{prog} \\- {_escape(summary[:1].lower() + summary[1:])}",
        ".SH SYNOPSIS",
        f"\\fB{prog}\\fR [\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".SH DESCRIPTION",
        *_paragraphs(command.help),
        ".PP",
        f"Every command takes \\fB\\-\\-help\\fR. Shell completion: "
        f"\\fB{prog} completion bash|zsh|fish\\fR. The user guide is docs/user\\-guide.md "
        "in the source tree.",
        ".SH OPTIONS",
        *_option_lines(command, root_ctx),
        ".SH COMMANDS",
    ]
    for path, sub in _walk(command, ()):
        if not path:
            continue
        ctx = click.Context(sub, info_name=" ".join((prog, *path)))
        usage = " ".join(sub.collect_usage_pieces(ctx))
        lines += [f".SS {' '.join(path)}",
                  f"\\fB{prog} {' '.join(path)}\\fR {_escape(usage)}",
                  ".PP", *_paragraphs(sub.help or sub.short_help)]
        options = _option_lines(sub, ctx)
        if options:
            lines += [".PP", "Options:", ".RS", *options, ".RE"]
    lines += [
        ".SH EXIT STATUS",
        "0 on success; 1 on an error (one line on standard error) or a failed "
        "\\fB\\-\\-fail\\-on\\fR check; 2 on bad usage; 130 after SIGINT and 143 after "
        "SIGTERM, with the finished steps reported.",
        ".SH SEE ALSO",
        "iperf3(1), flent(1), sockperf(1)",
        "",
    ]
    return "\n".join(lines)


def completion_source(command: click.Command, shell: str, prog: str = PROG) -> str:
    """click's completion script for `shell` (bash, zsh or fish)."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None:
        raise click.BadParameter(f"no completion for {shell!r} (choose from "
                                 f"{', '.join(SHELLS)})")
    return cls(command, {}, prog, COMPLETE_VAR).source()

