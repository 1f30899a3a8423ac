"""The architecture holds: import-linter's contracts (pyproject.toml) and no private names
across modules.

Imports go one way (analysis -> search -> trainer); inside search the worker side never
imports the driver side, the checks or the study database, the database imports neither
side, and the driver <-> worker contract imports nothing of either; a package's private
modules (``_name``) are imported only from inside it, the modules of a package import each
other without cycles, and no module imports a ``_private`` name from another module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trainer", "search", "analysis")


def test_import_linter_contracts_are_kept():
    run = subprocess.run([sys.executable, "-c",
                          "from importlinter.cli import lint_imports_command; "
                          "lint_imports_command()"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "6 kept, 0 broken" in run.stdout


def private_imports(source: str, module: str, root: Path) -> list[str]:
    """``from P.X import _name`` imports in ``source`` (the module ``module``, relative
    imports resolved) where P is one of this project's packages and ``_name`` is not
    itself a module or package under ``root``: another module's private name. (Private
    *modules* of one's own package are import-linter's private_modules contract.)"""
    package = module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:  # relative: resolved against this module's package
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = f"{base}.{node.module}" if node.module else base
        else:
            target = node.module or ""
        if target.split(".")[0] not in PACKAGES:
            continue
        for alias in node.names:
            if not alias.name.startswith("_") or alias.name.startswith("__"):
                continue
            folder = root.joinpath(*target.split("."))
            if (folder / f"{alias.name}.py").exists() or (folder / alias.name).is_dir():
                continue  # a module: ``from trainer import _shapes`` names the module
            found.append((node.lineno, f"{module}:{node.lineno} imports {alias.name} "
                                       f"from {target}"))
    return [text for _, text in sorted(found)]


def test_no_module_imports_a_private_name_of_another():
    found = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found += private_imports(path.read_text(), module, ROOT)
    assert found == []


def test_the_private_name_check_sees_what_it_must(tmp_path):
    package = tmp_path / "trainer"  # a package of its own: the real one keeps changing
    package.mkdir()
    for name in ("__init__", "_fit", "_shapes", "_population"):
        (package / f"{name}.py").write_text("")
    bad = ("def f():\n    from trainer._fit import _atomic_save, build_model\n"
           "from ._fit import _flatten\n")
    assert private_imports(bad, "trainer._population", tmp_path) == [
        "trainer._population:2 imports _atomic_save from trainer._fit",
        "trainer._population:3 imports _flatten from trainer._fit",
    ]
    fine = "from trainer import _shapes\nimport trainer._fit\nfrom trainer._fit import fit\n"
    assert private_imports(fine, "trainer._population", tmp_path) == []


#: the longest a function may be, docstring included, unless its docstring says why
LONGEST = 80


def test_functions_read_top_to_bottom():
    """No function in the three packages runs over ``LONGEST`` lines."""
    long = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    n = node.end_lineno - node.lineno + 1
                    doc = ast.get_docstring(node) or ""
                    if n > LONGEST and "lines because" not in doc:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n})")
    assert not long, long
