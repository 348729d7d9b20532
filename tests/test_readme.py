"""README's set-up commands are the ones CI runs."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _bash_blocks(text):
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    test_cmd = next(b for b in _bash_blocks(readme) if "pytest" in b)
    assert test_cmd in ci.splitlines(), "'.ci/run' must run README's test command verbatim"


def test_readme_main_job_is_the_demo():
    readme = (REPO / "README.md").read_text()
    main_cmd = _bash_blocks(readme)[0]
    assert main_cmd.startswith("pip install") and main_cmd.endswith("ecgscan demo")
