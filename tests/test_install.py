"""The install pins (tools/constraints.txt) agree with the package's declared requirements."""
from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
requirements = pytest.importorskip("packaging.requirements")
from packaging.utils import canonicalize_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    """Canonical package name -> pinned version, from tools/constraints.txt."""
    pins = {}
    for line in (ROOT / "tools" / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = requirements.Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"not an exact pin: {line!r}"
        pins[canonicalize_name(req.name)] = specs[0].version
    return pins


def test_every_pin_satisfies_the_declared_range() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(meta["dependencies"]) + [r for group in meta["optional-dependencies"].values() for r in group]
    pins = _pins()
    assert "torch" not in pins  # install.sh installs torch first (or keeps the user's build)
    checked = 0
    for line in declared:
        req = requirements.Requirement(line)
        name = canonicalize_name(req.name)
        if name in pins:
            assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} outside {req.specifier}"
            checked += 1
    # every declared requirement but torch and the open3d variant of other platforms is pinned
    assert checked == len(declared) - 2
    assert pins["opencv-python-headless"].startswith("5.0.")  # the DIS flow the benchmarks were measured with


def test_install_script_uses_the_pins() -> None:
    script = (ROOT / "tools" / "install.sh").read_text()
    assert "-c tools/constraints.txt" in script
