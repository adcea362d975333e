"""docs/cli.md documents every console command of pyproject.toml, and its option lists are the commands' own --help.

`python tests/docs/test_cli_reference.py` rewrites the --help blocks of docs/cli.md from the commands.
"""

import contextlib
import importlib
import io
import os
import re
import sys

from markdown_code import REPOSITORY

CLI_PAGE = os.path.join(REPOSITORY, "docs", "cli.md")
HELP_BLOCK = re.compile(r'(```text title="(?P<command>[\w-]+) --help"\n)(?P<body>.*?)(```)', re.S)
COLUMNS = "100"  # the width the blocks are written at


def console_commands():
    """{command: "module:function"} of pyproject.toml's [project.scripts]."""
    import tomllib

    with open(os.path.join(REPOSITORY, "pyproject.toml"), "rb") as handle:
        return dict(tomllib.load(handle)["project"]["scripts"])


def help_text(command):
    """What `command --help` prints, at COLUMNS columns."""
    module, function = console_commands()[command].split(":")
    saved_argv0, saved_columns = sys.argv[0], os.environ.get("COLUMNS")
    sys.argv[0], os.environ["COLUMNS"] = command, COLUMNS
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output):
            try:
                getattr(importlib.import_module(module), function)(["--help"])
            except SystemExit:
                pass
    finally:
        sys.argv[0] = saved_argv0
        if saved_columns is None:
            os.environ.pop("COLUMNS")
        else:
            os.environ["COLUMNS"] = saved_columns
    return output.getvalue()


def documented():
    """{command: help block} of docs/cli.md."""
    with open(CLI_PAGE, encoding="utf-8") as handle:
        return {m["command"]: m["body"] for m in HELP_BLOCK.finditer(handle.read())}


def test_every_console_command_has_a_section_and_its_help():
    commands = console_commands()
    assert len(commands) == 9
    page = open(CLI_PAGE, encoding="utf-8").read()
    for command in commands:
        assert f"\n## {command}\n" in page
    assert sorted(documented()) == sorted(commands)


def test_the_help_blocks_are_the_commands_own_help():
    for command, body in documented().items():
        expected = help_text(command)
        assert expected.startswith(f"usage: {command} ")
        assert body == expected, (
            f"docs/cli.md is out of date for {command}: run python tests/docs/test_cli_reference.py"
        )


if __name__ == "__main__":
    text = open(CLI_PAGE, encoding="utf-8").read()
    text = HELP_BLOCK.sub(lambda m: m.group(1) + help_text(m["command"]) + m.group(4), text)
    with open(CLI_PAGE, "w", encoding="utf-8") as handle:
        handle.write(text)
    print(f"rewrote the --help blocks of {CLI_PAGE}")
