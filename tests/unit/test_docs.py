"""The README stays true: every module is in its file map, and every listed module exists."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "specialize"


def test_file_map_lists_every_module_and_nothing_else():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## File map", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\s{6}([\w/]+\.py)\s", section, flags=re.M))
    modules = {
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if p.name != "__init__.py" or p.parent == SRC
    }
    assert modules - listed == set(), "add these modules to the README's file map"
    assert listed - modules == set(), "the README's file map names modules that do not exist"
