"""pyproject.toml declares the dependencies as ranges; requirements.txt pins each inside them."""

from __future__ import annotations

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .conftest import REPO


def pinned_lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            requirement = Requirement(text)
            pins[canonicalize_name(requirement.name)] = requirement
    return pins


def test_every_dependency_is_pinned_in_the_lock_within_its_range() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lock = pinned_lock()
    assert project["dependencies"], "pyproject.toml declares no runtime dependency"
    for text in project["dependencies"]:
        declared = Requirement(text)
        name = canonicalize_name(declared.name)
        assert name in lock, f"{declared.name} is not pinned in requirements.txt"
        (pin,) = lock[name].specifier
        assert pin.operator == "==", f"requirements.txt must pin {declared.name} with =="
        assert declared.specifier.contains(pin.version), f"{lock[name]} is outside {declared}"


def test_the_version_has_one_source() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    dynamic = project["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "swclip_core.__version__"}
