"""The project as a newcomer meets it: the README's commands, CI, and the gridpay command's help."""
import re
import subprocess
import sys
from pathlib import Path

import click

from gridpay.cli import gridpay

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    return re.findall(r"```sh\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_readme_opens_with_the_two_commands():
    start, test = readme_commands()[:2]
    assert start.endswith("gridpay demo") and "pip install" in start
    assert test.endswith("python -m pytest -n 2 --dist loadfile") and "'.[test]'" in test
    assert (ROOT / "README.md").read_text().index(start) < 800  # at the very top


def test_ci_runs_the_readme_test_command_verbatim():
    test = readme_commands()[1]
    assert test in (ROOT / ".ci" / "run").read_text().splitlines()


def walk(command: click.Command, path=()):
    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            yield from walk(command.get_command(ctx, name), path + (name,))


def test_every_subcommand_has_help():
    """In this process (the entry point itself: test_top_level_help_lists_the_areas); a process per
    command took half a minute."""
    from click.testing import CliRunner

    commands = list(walk(gridpay))
    assert len(commands) > 20
    runner = CliRunner()
    for path, command in commands:
        out = runner.invoke(gridpay, [*path, "--help"], prog_name="gridpay")
        assert out.exit_code == 0, (path, out.output, out.exception)
        assert "Usage: gridpay " in out.output and (command.help or command.short_help), path


def test_top_level_help_lists_the_areas():
    out = subprocess.run([sys.executable, "-m", "gridpay", "--help"], capture_output=True, text=True).stdout
    for name in ("serve", "demo", "db", "ledger", "report", "iso", "sim"):
        assert re.search(rf"^\s+{name}\s", out, re.M), name


RUNTIME_PACKAGES = ("config", "engines", "gateway", "iso8583_specs", "ledger")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    import ast

    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def test_runtime_code_needs_neither_scripts_nor_tests_nor_the_oracle_driver():
    """The wheel installs only the runtime packages (tests/test_wheel.py): they may not import
    scripts/ or tests/, and only SQLAlchemy's Oracle dialect imports the driver (the `oracle` extra)."""
    for package in RUNTIME_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for line, module in imported_modules(path):
                top = module.split(".")[0]
                assert top not in ("scripts", "tests", "oracledb", "cx_Oracle", "psutil"), \
                    f"{path.relative_to(ROOT)}:{line} imports {module}"

