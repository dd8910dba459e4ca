"""The three dependency files agree: pyproject.toml (ranges), environment.yml (conda, same ranges) and
requirements.lock (exact pins inside those ranges)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch", "matplotlib-base": "matplotlib"}
"""conda-forge package names whose PyPI name differs."""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pyproject_requirements() -> dict[str, SpecifierSet]:
    project = _pyproject()["project"]
    reqs = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    return {_norm(r.name): r.specifier for r in reqs}


def _conda_dependencies() -> tuple[dict[str, str], list]:
    """(conda name -> version spec as written, the pip section)."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    specs, pip_section = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_section = dep["pip"]
            continue
        name, spec = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", dep).groups()
        specs[name] = spec.strip()
    return specs, pip_section


def _lock() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"requirements.lock: {line!r} is not an exact pin"
            pins[_norm(req.name)] = Version(spec.version)
    return pins


def test_environment_yml_lists_the_pyproject_packages_with_the_same_ranges() -> None:
    conda, _ = _conda_dependencies()
    conda_as_pip = {_norm(CONDA_TO_PIP.get(n, n)): s for n, s in conda.items() if n not in ("python", "pip")}
    pyproject = _pyproject_requirements()
    assert sorted(conda_as_pip) == sorted(pyproject)
    for name, spec in pyproject.items():
        assert SpecifierSet(conda_as_pip[name]) == spec, f"environment.yml {name}: {conda_as_pip[name]} vs {spec}"


def test_environment_yml_python_and_package_install() -> None:
    conda, pip_section = _conda_dependencies()
    python = Version(conda["python"].lstrip("="))
    assert python in SpecifierSet(_pyproject()["project"]["requires-python"])
    assert "-e ." in pip_section


def test_lock_pins_every_dependency_inside_its_range() -> None:
    pins = _lock()
    for name, spec in _pyproject_requirements().items():
        assert name in pins, f"requirements.lock has no pin for {name}"
        assert spec.contains(pins[name], prereleases=True), f"requirements.lock {name}=={pins[name]} not in {spec}"


def test_lock_is_the_environment_tests_run_in() -> None:
    """Where the tests run from the locked venv, the installed core packages are the pinned ones."""
    import importlib.metadata as md

    pins = _lock()
    for name in ("torch", "torchvision", "numpy", "pycocotools", "snakemake"):
        installed = Version(md.version(name))
        if installed != pins[name]:
            pytest.skip(f"not running from the locked environment ({name} {installed} != {pins[name]})")
    assert pins["torch"] == Version("2.14.1") and pins["torchvision"] == Version("0.29.1")
