"""The house rules the code must keep: dependencies point one way, and the tray is only a client.

Imports are read from the source (every ``import`` / ``from`` statement, including those inside
functions), so a lazy import cannot sneak past the rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAEMON = ROOT / "daemon" / "shutterlock"
TRAY = ROOT / "tray" / "shutterlock_tray"

# Top to bottom; a module may import only from its own layer or below.
INTERFACES = {"shutterlock.cli", "shutterlock.__main__"}
PROCESS = {"shutterlock.daemon"}
FACADE = {"shutterlock.facade"}
# What the tray may use of the daemon's package: the socket client, the status types, the config paths.
TRAY_MAY_IMPORT = {"shutterlock.control", "shutterlock.status", "shutterlock.config", "shutterlock.errors"}


def module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def imports_of(path: Path, name: str) -> set[str]:
    """Absolute names of the project modules a file imports (relative imports resolved)."""
    found: set[str] = set()
    package = name.rsplit(".", 1)[0] if path.name != "__init__.py" else name
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in ("shutterlock", "shutterlock_tray")}


def layer(module: str) -> int:
    if module in INTERFACES or module.startswith("shutterlock_tray"):
        return 3
    if module in PROCESS:
        return 2
    if module in FACADE:
        return 1
    return 0


def project_modules() -> dict[str, Path]:
    modules = {module_name(p, DAEMON, "shutterlock"): p for p in DAEMON.rglob("*.py")}
    modules.update({module_name(p, TRAY, "shutterlock_tray"): p for p in TRAY.rglob("*.py")})
    return modules


def test_nothing_below_the_facade_imports_anything_above_it() -> None:
    modules = project_modules()
    wrong = []
    for name, path in modules.items():
        for imported in imports_of(path, name):
            target = next((m for m in (imported, imported.rsplit(".", 1)[0]) if m in modules), None)
            if target is not None and layer(target) > layer(name):
                wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))
    assert "shutterlock.engine" in modules and "shutterlock.facade" in modules  # the walk saw the house


def test_the_tray_is_only_a_client_of_the_socket() -> None:
    modules = project_modules()
    used = set()
    for name, path in modules.items():
        if name.startswith("shutterlock_tray"):
            for imported in imports_of(path, name):
                if imported.startswith("shutterlock."):
                    target = next((m for m in (imported, imported.rsplit(".", 1)[0]) if m in modules), imported)
                    used.add(target)
    assert used, "the walk found no import of the daemon's package at all"
    assert used <= TRAY_MAY_IMPORT, f"the tray reaches into the daemon: {sorted(used - TRAY_MAY_IMPORT)}"
