"""requirements.lock must pin every dependency pyproject.toml declares, at a version it allows:
setup.sh installs the lock, so a dependency added to pyproject alone would never be installed."""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _pins() -> dict[str, str]:
    pins = {}
    for number, line in enumerate((ROOT / "requirements.lock").read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version, f"requirements.lock:{number}: {line!r} is not name==version"
        pins[canonicalize_name(name)] = version
    return pins


def test_every_declared_dependency_is_pinned_at_an_allowed_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["dev"]
    pins = _pins()
    problems = []
    for text in declared:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name == "torch":
            continue  # installed first by setup.sh, by build (CPU or CUDA)
        if name not in pins:
            problems.append(f"{requirement.name} is not pinned")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{requirement.name}=={pins[name]} is outside {requirement.specifier}")
    assert not problems, "; ".join(problems) + ": run scripts/lock.sh"


def test_torch_and_the_data_wheels_stay_out_of_the_lock():
    # setup.sh installs torch by build and the data wheels without their dependencies; pinned
    # here, uv would pull the wheels' declared dependencies or swap the torch build.
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    data_wheels = setup.split('DATA_WHEELS="', 1)[1].split('"', 1)[0].split()
    pinned = _pins()
    assert "torch" not in pinned
    assert not [w for w in data_wheels if canonicalize_name(w.split("==")[0]) in pinned]
