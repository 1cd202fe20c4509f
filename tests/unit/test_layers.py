"""The layer order of DESIGN.md, checked: a module imports only from its own layer or lower ones.

Every `import specialize.x` / `from specialize.x import ...` counts, at the top of a module or
inside a function (a lazy import is still a dependency). A new package must be given a layer here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "specialize"

# Lowest first. A package may import its own layer and the ones before it. `track` is a leaf:
# it sits with the foundation modules and imports nothing above them.
LAYERS: list[set[str]] = [
    {"__main__", "errors", "home", "config", "artifacts", "track", "cpu_memory"},
    {"models"},
    {"data"},
    {"evaluate", "ladder"},
    {"train"},
    {"adapters", "feedback"},
    {"simulate", "sweep"},
    {"serve", "demo"},
    # The Python API (api.py, re-exported by the package's __init__) stands beside the CLI: both
    # call every stage, and nothing below imports them.
    {"cli", "api", "__init__"},
]
LAYER_OF = {name: number for number, names in enumerate(LAYERS) for name in names}


def package_of(path: Path, root: Path = SRC) -> str:
    return path.relative_to(root).parts[0].removesuffix(".py")


def imported_packages(path: Path, root: Path = SRC) -> list[tuple[int, str]]:
    """Return (line, top-level specialize package) for every import of our own code in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    own = path.relative_to(root).with_suffix("").parts
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = list(own[: len(own) - node.level])
                module = ".".join(["specialize", *base, *(node.module or "").split(".")])
                names = [module.rstrip(".")]
            elif node.module == "specialize":
                names = [f"specialize.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "specialize" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def upward_imports(root: Path = SRC) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        source = package_of(path, root)
        for line, target in imported_packages(path, root):
            if target == source:
                continue
            if source not in LAYER_OF or target not in LAYER_OF:
                unknown = source if source not in LAYER_OF else target
                problems.append(f"{path}:{line}: package {unknown!r} has no layer in LAYERS")
            elif LAYER_OF[target] > LAYER_OF[source]:
                problems.append(
                    f"{path}:{line}: {source} (layer {LAYER_OF[source]}) imports {target} "
                    f"(layer {LAYER_OF[target]})"
                )
    return problems


def test_no_module_imports_a_higher_layer():
    problems = upward_imports()
    assert not problems, "upward imports (see DESIGN.md, Layout):\n" + "\n".join(problems)


def test_every_package_has_a_layer():
    packages = {package_of(p) for p in SRC.rglob("*.py")}
    assert not packages - set(LAYER_OF), sorted(packages - set(LAYER_OF))


@pytest.mark.parametrize(
    "code",
    [
        "from specialize.train.run import train\n",
        "def later():\n    from specialize.train import run\n",
        "def later():\n    import specialize.cli.main\n",
        "from specialize import train\n",
        "from ..train import run\n",
    ],
)
def test_an_upward_import_anywhere_in_a_module_is_caught(tmp_path, code):
    """The check itself: a planted import from track (a leaf) to a higher layer fails it."""
    fake = tmp_path / "specialize"
    (fake / "track").mkdir(parents=True)
    (fake / "track" / "bad.py").write_text(code)
    problems = upward_imports(fake)
    assert len(problems) == 1 and "track (layer 0) imports" in problems[0], problems
