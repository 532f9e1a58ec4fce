"""The project's promises about itself: README commands, CI script, package layout, CLI help."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

from conftest import REPO


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S)
    return [b.strip() for b in blocks[:2]]


def test_readme_opens_with_two_commands_and_ci_runs_the_test_one_verbatim():
    main_cmd, test_cmd = _readme_commands()
    assert main_cmd.startswith("bash scripts/setup.sh") and test_cmd.startswith("bash scripts/setup.sh")
    assert "pytest" in test_cmd and "pytest" not in main_cmd
    ci = (REPO / ".ci" / "run").read_text()
    assert test_cmd in ci.splitlines(), ".ci/run must run README's test command verbatim"


def test_setup_script_installs_torch_before_the_package():
    text = (REPO / "scripts" / "setup.sh").read_text()
    assert text.index("torch==2.13.0") < text.index('-e ".[dev]"')
    for pkg in ("libusb-1.0-0", "espeak-ng", "sox"):
        assert pkg in text


def test_no_top_level_datasets_or_perception_module_is_installed():
    import keystone_vla.datasets  # noqa: F401  (mapped from the datasets/ folder)

    for name in ("datasets", "perception", "sim", "vla", "policies", "ros_nodes"):
        spec = importlib.util.find_spec(name)
        assert spec is None or "keystone" not in str(spec.origin or spec.submodule_search_locations), name


def test_cli_help_lists_sim_and_explains_subcommands():
    out = subprocess.run([sys.executable, "-m", "keystone_vla.cli", "--help"], capture_output=True, text=True, check=True)
    assert "sim" in out.stdout
    out = subprocess.run([sys.executable, "-m", "keystone_vla.cli", "sim", "run", "--help"], capture_output=True,
                         text=True, check=True)
    assert "--episodes" in out.stdout and "--video" in out.stdout
