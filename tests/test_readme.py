"""README's two set-up commands are the project's front door: keep .ci/run equal to the second."""
import re

from conftest import ROOT


def bash_blocks():
    return re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_ci_runs_exactly_the_readme_test_command():
    blocks = bash_blocks()
    assert len(blocks) >= 2
    ci_lines = [l for l in (ROOT / ".ci/run").read_text().splitlines()
                if l.strip() and not l.startswith("#") and not l.startswith(("set ", "cd "))]
    assert ci_lines == [blocks[1].strip()]


def test_main_command_runs_the_voice_agent():
    first = bash_blocks()[0]
    assert "configs/workflows/voice_agent.yaml" in first and "pip install" in first
