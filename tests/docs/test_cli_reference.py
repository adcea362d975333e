"""docs/cli.md documents every console command of pyproject.toml, and its option lists are the commands' own --help.

Every option of every console command is also named by at least one test in tests/.

`python tests/docs/test_cli_reference.py` rewrites the --help blocks of docs/cli.md from the commands.
"""

import contextlib
import glob
import importlib
import io
import os
import re
import sys

from markdown_code import REPOSITORY

CLI_PAGE = os.path.join(REPOSITORY, "docs", "cli.md")
HELP_BLOCK = re.compile(r'(```text title="(?P<command>[\w-]+) --help"\n)(?P<body>.*?)(```)', re.S)
COLUMNS = "100"  # the width the blocks are written at
OPTION_FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


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


def option_flags(command):
    """The long option flags listed after "options:" in `command --help`, without --help."""
    options = help_text(command).split("options:", 1)[1]
    return sorted(set(OPTION_FLAG.findall(options)) - {"--help"})


def test_every_option_of_every_command_is_named_by_a_test():
    # a flag counts as tested when some test file other than this one holds it as a quoted string
    # literal: "--flag", '--flag' or "--flag=value"
    this_file = os.path.abspath(__file__)
    sources = []
    for path in glob.glob(os.path.join(REPOSITORY, "tests", "**", "*.py"), recursive=True):
        if os.path.abspath(path) != this_file:
            with open(path, encoding="utf-8") as handle:
                sources.append(handle.read())
    source = "\n".join(sources)
    missing = {}
    for command in console_commands():
        flags = option_flags(command)
        assert flags, f"{command} --help lists no options"
        untested = [f for f in flags if not re.search(r"""(["'])%s(\1|=)""" % re.escape(f), source)]
        if untested:
            missing[command] = untested
    assert not missing, "options no test names as a quoted string:\n" + "\n".join(
        f"  {command}: {', '.join(flags)}" for command, flags in missing.items()
    )


if __name__ == "__main__":
    text = open(CLI_PAGE, encoding="utf-8").read()
    text = HELP_BLOCK.sub(lambda m: m.group(1) + help_text(m["command"]) + m.group(4), text)
    with open(CLI_PAGE, "w", encoding="utf-8") as handle:
        handle.write(text)
    print(f"rewrote the --help blocks of {CLI_PAGE}")
