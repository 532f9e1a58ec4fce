"""The project's promises about itself: README commands, CI script, package layout, CLI help."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

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


# Import direction (DESIGN.md): root <- sim, perception <- datasets <- vla <- policies <- ros_nodes, cli.
# Each package may import only the layers listed for it (besides itself), anywhere in a module, function bodies
# and TYPE_CHECKING blocks included: a lazy import is still a dependency.
_SUBPACKAGES = ("sim", "perception", "datasets", "vla", "policies", "ros_nodes", "cli")
_FORBIDDEN = {
    "root": set(_SUBPACKAGES),
    "sim": {"datasets", "vla", "policies", "ros_nodes", "cli"},
    "perception": {"datasets", "vla", "policies", "ros_nodes", "cli"},
    "datasets": {"vla", "policies", "ros_nodes", "cli"},
    "vla": {"policies", "ros_nodes", "cli"},
    "policies": {"ros_nodes", "cli"},
}
_MODULE_PATH = re.compile(r"keystone_vla(\.\w+)+")


def _package_folders() -> dict[str, Path]:
    """Subpackage name -> source folder, from pyproject's package-dir (so `sim/` is keystone_vla.sim)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: pytest's own dependency
        import tomli as tomllib

    package_dir = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return {name: REPO / folder for name, folder in package_dir.items()}


def _module_name(path: Path, folders: dict[str, Path]) -> str:
    for package, folder in sorted(folders.items(), key=lambda kv: -len(kv[0])):
        if path.is_relative_to(folder):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise AssertionError(f"{path} is in no package folder")


def _imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in the file: statements anywhere, relative ones resolved,
    and string constants naming a keystone_vla module (lazy-import tables, importlib.import_module)."""
    import ast

    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found += [(node.lineno, f"{base}.{alias.name}" if alias.name != "*" else base) for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_PATH.fullmatch(node.value):
            found.append((node.lineno, node.value))
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "keystone_vla":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in _SUBPACKAGES else "root"


def test_no_module_imports_a_higher_layer():
    folders = _package_folders()
    files = sorted({p for folder in folders.values() for p in folder.rglob("*.py")})
    assert len(files) > 50 and any(p.parent.name == "tasks" for p in files)
    violations = []
    for path in files:
        module = _module_name(path, folders)
        forbidden = _FORBIDDEN.get(_layer(module) or "", set())
        for line, imported in _imported_modules(path, module):
            if _layer(imported) in forbidden:
                violations.append(f"{path.relative_to(REPO)}:{line} {module} imports {imported}")
    assert not violations, "imports against the layer direction:\n" + "\n".join(violations)


def test_every_package_folder_is_listed_for_installation():
    """A folder of modules missing from pyproject's `packages` would be absent from a wheel install."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: pytest's own dependency
        import tomli as tomllib

    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    folders = _package_folders()
    # folders shipped as package data (launch files are Python, but data to ROS 2, not modules)
    data_dirs = {folders[pkg] / pattern.split("/")[0] for pkg, patterns in setuptools["package-data"].items()
                 for pattern in patterns if "/" in pattern}
    found = {_module_name(init, folders) for folder in folders.values() for init in folder.rglob("__init__.py")
             if "__pycache__" not in init.parts}
    modules_without_init = {p.parent for folder in folders.values() for p in folder.rglob("*.py")
                            if not (p.parent / "__init__.py").exists() and p.parent not in data_dirs}
    assert not modules_without_init, f"folders of modules without __init__.py: {sorted(modules_without_init)}"
    assert found <= listed, f"not in pyproject's packages: {sorted(found - listed)}"
