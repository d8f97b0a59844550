"""Shared test fixtures: the generated demo dataset and the optional ../shared folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MFHPO_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """Path under ../shared, or skip the test cleanly when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs {p} (../shared is not available here)")
    return p


def load_benchmark(name: str):
    """The module ``benchmarks/<name>.py`` (a script, not a package), registered in sys.modules."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses in the module look themselves up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def demo_images():
    from mfhpo.demo import generate_demo

    return generate_demo(n_structures=60, seed=0)


@pytest.fixture(scope="session")
def demo_file(tmp_path_factory, demo_images) -> Path:
    import ase.io

    path = tmp_path_factory.mktemp("demo") / "demo.extxyz"
    ase.io.write(str(path), demo_images)
    return path
