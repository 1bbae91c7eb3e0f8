"""Documentation a user can find, kept in step with the code.

The man page is what `pktbench man` renders from the commands, and the
package installs it; `pktbench completion` scripts complete in a real bash;
the API reference builds from the docstrings with a page for every name
`import pktbench` offers; every command line of the user guide names options
that exist; the methodology and the table agree on what Kneedle runs on.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cli_support import PACKAGE_ROOT
from pktbench.cli import main

ROOT = Path(__file__).resolve().parent.parent
MAN = ROOT / "man" / "pktbench.1"
GUIDE = ROOT / "docs" / "user-guide.md"


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_man_page_is_rendered_from_the_commands() -> None:
    page = cli("man")
    assert MAN.read_text() == page, "man/pktbench.1 is stale: run `make man`"
    for command in ("sweep", "run", "bulk", "compare", "show", "testbed up", "completion"):
        assert f".SS {command}\n" in page, command
    assert "\\-\\-force" in page and "\\-\\-wide" in page


def test_man_page_reads_cleanly() -> None:
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed (apt-get install groff-base)")
    done = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(MAN)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_man_page_is_installed_with_the_package(tmp_path: Path) -> None:
    if not (ROOT / "setup.py").exists():
        pytest.skip("not a source checkout")
    subprocess.run([sys.executable, "setup.py", "-q", "install_data", "-d", str(tmp_path)],
                   cwd=ROOT, capture_output=True, timeout=120, check=True)
    installed = tmp_path / "share" / "man" / "man1" / "pktbench.1"
    assert installed.read_text() == MAN.read_text()
    assert "man/pktbench.1" in (ROOT / "MANIFEST.in").read_text()  # in the sdist too


def _bash_complete(tmp_path: Path, words: str) -> list[str]:
    """What bash offers after `words` (the last word being completed), in a real bash."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    wrapper = bindir / "pktbench"
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -c "
                       f"\"import sys; sys.path.insert(0, {PACKAGE_ROOT!r}); "
                       "from pktbench.cli import main; main(prog_name='pktbench')\" \"$@\"\n")
    wrapper.chmod(0o755)
    parts = words.split(" ")
    script = ('eval "$(pktbench completion bash)"; '
              f"COMP_WORDS=({words}); COMP_CWORD={len(parts) - 1}; "
              "_pktbench_completion pktbench; printf '%s\\n' \"${COMPREPLY[@]}\"")
    env = {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "--norc", "-c", script], capture_output=True, text=True,
                          env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_completion_completes_commands_and_options(tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    assert _bash_complete(tmp_path, "pktbench sw") == ["sweep"]
    assert "--profile" in _bash_complete(tmp_path, "pktbench sweep --pro")
    assert set(_bash_complete(tmp_path, "pktbench testbed u")) == {"up"}


@pytest.mark.parametrize("shell,marker", [("bash", "complete -o nosort -F"),
                                          ("zsh", "compdef"), ("fish", "complete")])
def test_completion_scripts(shell: str, marker: str) -> None:
    text = cli("completion", shell)
    assert marker in text and "_PKTBENCH_COMPLETE" in text


def test_completion_refuses_an_unknown_shell() -> None:
    result = CliRunner().invoke(main, ["completion", "tcsh"])
    assert result.exit_code == 2 and "tcsh" in result.output


def test_api_reference_builds_with_every_public_name(tmp_path: Path) -> None:
    pytest.importorskip("pdoc", reason="the API reference needs pdoc (pktbench[docs])")
    import pktbench
    from pktbench.apidoc import API_MODULES, build

    build(tmp_path)
    assert (tmp_path / "index.html").exists()
    for name, module in pktbench._LAZY.items():
        assert module in API_MODULES, module
        page = tmp_path / (module.replace(".", "/") + ".html")
        assert f'id="{name}"' in page.read_text(), (name, module)
    # Google-style Args/Returns/Raises come out as sections, not as raw text
    api = (tmp_path / "pktbench" / "api.html").read_text()
    assert 'id="returns"' in api and 'id="raises"' in api


def _guide_commands() -> list[list[str]]:
    text = GUIDE.read_text()
    blocks = re.findall(r"```(?:sh)?\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            line = re.sub(r"^\S+\$ ", "", line.strip())
            line = re.sub(r"^sudo ", "", line).split(" #")[0].rstrip(" &")
            if line.startswith("pktbench "):
                commands.append(shlex.split(line)[1:])
    return commands


def test_user_guide_command_lines_name_real_options() -> None:
    commands = _guide_commands()
    assert len(commands) >= 15
    for argv in commands:
        command: click.Command = main
        words = list(argv)
        while isinstance(command, click.Group) and words and not words[0].startswith("-"):
            sub = command.get_command(click.Context(command), words[0])
            assert sub is not None, f"no command {words[0]!r} in: pktbench {' '.join(argv)}"
            command, words = sub, words[1:]
            if command.name == "exec":
                break  # what follows `--` is the command run inside
        if command.name == "exec":
            continue
        known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
        for word in words:
            if word.startswith("-") and word != "-":
                assert word.split("=")[0] in known, f"{word} in: pktbench {' '.join(argv)}"


def test_user_guide_covers_the_jobs_and_its_links_resolve() -> None:
    text = GUIDE.read_text()
    for heading in ("## Two hosts", "## Reading a knee table", "## Redis",
                    "## The throughput ceiling", "## A testbed on one machine",
                    "## Library use"):
        assert heading in text
    for target in re.findall(r"\]\(([^)#]+\.md)\)", text):
        assert (GUIDE.parent / target).exists(), target
    readme = (ROOT / "README.md").read_text()
    assert "docs/user-guide.md" in readme


def test_user_guide_knee_table_is_what_show_prints() -> None:
    shown = cli("show", str(ROOT / "tests" / "data" / "sweep-old-path.json"))
    block = GUIDE.read_text().split("## Reading a knee table")[1].split("```")[1]
    for line in block.strip("\n").splitlines():
        if line.strip() != "...":
            assert line in shown.splitlines(), line


def test_kneedle_runs_on_the_p99_curve_as_the_docs_say() -> None:
    from pktbench import knee
    from pktbench.results import load_result

    result = load_result(ROOT / "tests" / "data" / "sweep-old-path.json")
    assert knee.latency_kneedle_pps(list(result.steps), log_rate=True) is not None
    assert "curvature of p99 latency" in (ROOT / "docs" / "methodology.md").read_text()
    assert "(where the p99 latency curve bends most" in cli(
        "show", str(ROOT / "tests" / "data" / "sweep-old-path.json"))
