"""The README's two set-up commands are the ones CI and the demo really run."""

import re

from tests.conftest import REPO


def _commands():
  return re.findall(r"^```bash\n(.*?)\n```", (REPO / "README.md").read_text(), re.M | re.S)


def test_ci_runs_the_readme_test_command():
  ci = (REPO / ".ci" / "run").read_text()
  test_command = [c for c in _commands() if "pytest" in c]
  assert len(test_command) == 1
  assert test_command[0] in ci.splitlines()


def test_readme_demo_command_uses_an_existing_config():
  demo = [c for c in _commands() if "vssjax.main" in c and "pytest" not in c][0]
  config = re.search(r"--config=(\S+?\.py)", demo).group(1)
  assert (REPO / config).exists()
