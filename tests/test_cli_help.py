"""Both CLIs explain themselves: every command and option has help, each main command shows
examples, NO_COLOR means no ANSI styles at all, and shell completion works as the README
says."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ajour_build.cli import main as build_main
from delivery.cli import main as delivery_main
from tests.conftest import EXAMPLES, REPO

CLIS = {"ajour-build": build_main, "ajour-delivery": delivery_main}
SGR = re.compile(r"\x1b\[[0-9;]*m")  # a style (colour, bold, dim…)


def walk(command: click.Command, path: tuple[str, ...]) -> Iterator[tuple[str, click.Command]]:
    yield " ".join(path), command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from walk(sub, (*path, name))


COMMANDS = [pair for prog, cli in CLIS.items() for pair in walk(cli, (prog,))]


def test_every_command_and_option_has_help() -> None:
    missing = []
    for path, command in COMMANDS:
        if not (command.help or "").strip():
            missing.append(path)
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                if not (param.help or "").strip():
                    missing.append(f"{path} {'/'.join(param.opts)}")
    assert missing == []


MAIN = [
    *(f"ajour-build {c}" for c in ("validate", "render", "build", "builders", "step")),
    *(f"ajour-build {c}" for c in ("publish", "inspect", "serve", "prune", "gc")),
    *(
        f"ajour-delivery {c}"
        for c in ("serve", "simulate", "status", "targets", "rollout", "gateway")
    ),
    *(f"ajour-delivery {c}" for c in ("broker-config", "hash-password")),
]


def test_the_main_commands_are_all_the_top_level_ones() -> None:
    assert sorted(MAIN) == sorted(p for p, _ in COMMANDS if len(p.split()) == 2)


@pytest.mark.parametrize("path", MAIN)
def test_each_main_command_shows_examples(path: str) -> None:
    prog, *words = path.split()
    result = CliRunner().invoke(CLIS[prog], [*words, "--help"], prog_name=prog)
    assert result.exit_code == 0, result.output
    _, marker, examples = result.output.partition("Example")
    assert marker, f"{path} --help has no examples"
    shown = [line for line in examples.splitlines() if f"{prog} " in line]
    assert 1 <= len(shown) <= 3, result.output
    assert all(path in line for line in shown), shown


FORCED = {"FORCE_COLOR": "1", "TERM": "xterm-256color", "COLUMNS": "120"}


def test_no_color_means_no_ansi_styles(tmp_path: Path) -> None:
    fleet = str(EXAMPLES / "fleet")
    styled = CliRunner(env=FORCED).invoke(build_main, ["validate", fleet])
    assert styled.exit_code == 0, styled.output
    assert "\x1b[" in styled.stdout  # the terminal is forced: styles without NO_COLOR
    for command in (
        ["validate", fleet],
        ["builders", "list"],
        ["render", fleet, "-o", str(tmp_path / "out")],
    ):
        result = CliRunner(env={**FORCED, "NO_COLOR": "1"}).invoke(build_main, command)
        assert result.exit_code == 0, result.output
        assert "\x1b[" not in result.stdout, command
        assert not SGR.search(result.stderr), command
    empty = CliRunner(env={**FORCED, "NO_COLOR": ""}).invoke(build_main, ["validate", fleet])
    assert "\x1b[" in empty.stdout  # set but empty does not count (no-color.org)


@pytest.mark.parametrize(
    ("prog", "var"), [(p, f"_{p.upper().replace('-', '_')}_COMPLETE") for p in CLIS]
)
def test_shell_completion_as_the_readme_documents_it(prog: str, var: str) -> None:
    readme = (REPO / "README.md").read_text()
    for shell in ("bash", "zsh", "fish"):
        assert f"{var}={shell}_source {prog}" in readme
        script = CliRunner(env={var: f"{shell}_source"}).invoke(CLIS[prog], [], prog_name=prog)
        assert script.exit_code == 0 and var in script.output, script.output
    words = {"COMP_WORDS": f"{prog} se", "COMP_CWORD": "1", var: "bash_complete"}
    done = CliRunner(env=words).invoke(CLIS[prog], [], prog_name=prog)
    assert "plain,serve" in done.output.splitlines()
