"""The README's two set-up commands are what CI runs (so a missing install step fails CI)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set-up: two commands", 1)[1].split("\n## ", 1)[0]
    return [line for block in re.findall(r"```bash\n(.*?)```", setup, re.S)
            for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_has_two_setup_commands():
    commands = readme_commands()
    assert len(commands) == 2
    assert commands[0].endswith("snakemake --cores all")
    assert commands[1].endswith("pytest")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci
    install = readme_commands()[0].rsplit(" && snakemake", 1)[0]
    assert readme_commands()[1].startswith(install)  # both install the same way


def test_requirements_pin_the_cpu_torch():
    reqs = (ROOT / "requirements.txt").read_text().splitlines()
    assert "torch==2.13.0" in reqs  # a looser pin pulls a multi-GB CUDA build on CPU machines
