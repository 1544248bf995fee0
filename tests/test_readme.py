"""The README's snippets run, and its set-up commands are the ones CI runs."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_readme_python_snippet_runs(index):
    result = subprocess.run(
        [sys.executable, "-c", PYTHON_BLOCKS[index]], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    message = f"README python block {index} failed:\n{PYTHON_BLOCKS[index]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, message
    assert result.stdout.strip(), "every README snippet prints something"


def test_readme_setup_commands_are_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    bash_blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    install = bash_blocks[0].strip()
    assert install.startswith("python3 -m venv .venv") and install.endswith("ovmlc quickstart")
    for step in install.split(" && ")[:-1]:
        assert step.replace(" -q", "") in ci.replace(" -q", ""), f"CI does not run the README step: {step}"
    assert "ovmlc quickstart" in ci
    assert bash_blocks[1].strip() == ".venv/bin/python -m pytest -q tests"
    assert ".venv/bin/python -m pytest -q" in ci and " tests" in ci
