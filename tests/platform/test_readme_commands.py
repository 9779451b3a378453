"""Every shell command in the README's code blocks names a script, preset or sweep that exists, and its
arguments parse: each job and the CLI run with ``--dry-run``, which checks the arguments and the config
and runs nothing."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                commands += [part.strip() for part in line.split("&&")]
    return commands


COMMANDS = readme_commands()


def python_args(command: str) -> list[str] | None:
    """The arguments after the interpreter of a command that runs Python (``ray job submit ... -- python``
    included), with placeholders like ``<trial id>`` filled in; None for other commands."""
    if " -- python " in command:
        command = "python " + command.split(" -- python ", 1)[1]
    command = re.sub(r"<[^>]+>", "placeholder", command)
    words = shlex.split(command)
    if words and (words[0].endswith("/python") or words[0] == "python"):
        return words[1:]
    return None


def test_the_readme_has_the_two_commands():
    assert "bash scripts/setup.sh" in COMMANDS and ".venv/bin/python jobs/train_text.py" in COMMANDS
    assert "bash scripts/test.sh" in COMMANDS
    assert len(COMMANDS) >= 10


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_names_what_exists_and_its_arguments_parse(command):
    words = shlex.split(re.sub(r"<[^>]+>", "placeholder", command))
    if words[0] == "bash":
        assert (ROOT / words[1]).is_file(), words[1]
        return
    if words[0] == "curl":
        return  # a request to a running service (the Serve tests send the same)
    args = python_args(command)
    assert args is not None, f"the README runs something this test does not know how to check: {command}"
    if args[0] != "-m":
        assert (ROOT / args[0]).is_file(), args[0]
    out = subprocess.run([sys.executable, *args, "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{command}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    assert out.stdout.strip().splitlines()[-1].startswith("ok"), out.stdout
