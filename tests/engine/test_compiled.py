"""The compiled build of the hot modules: used only when fresh, all modules or none."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from conversations.engine import compiled


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the compiled modules' sources, as a project root of its own."""
    for path in [*compiled.MODULES, "bin/compile", "pyproject.toml"]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(compiled.ROOT / path, tmp_path / path)
    shutil.copytree(compiled.ROOT / compiled.ENGINE, tmp_path / compiled.ENGINE, dirs_exist_ok=True)
    return tmp_path


def _built(tree: Path) -> Path:
    build = tree / "var" / "compiled"
    build.mkdir(parents=True)
    manifest = compiled.manifest(compiled.source_hashes(tree))
    (build / compiled.MANIFEST).write_text(json.dumps(manifest))
    return build


def test_a_build_of_these_very_sources_for_this_python_is_fresh(tree: Path) -> None:
    assert compiled.build_state(tree / "var" / "compiled", tree) == "absent"
    build = _built(tree)
    assert compiled.build_state(build, tree) == "fresh"


@pytest.mark.parametrize(
    "edited",
    [
        compiled.MODULES[-1],  # compiled
        "conversations/engine/cache_policy.py",  # imported by compiled ones, not compiled
        "bin/compile",
    ],
)
def test_one_edited_input_makes_the_whole_build_stale(tree: Path, edited: str) -> None:
    build = _built(tree)
    source = tree / edited
    source.write_text(source.read_text() + "\n# an edit\n")
    assert compiled.build_state(build, tree) == "stale"


def test_mypys_settings_are_an_input_but_not_the_rest_of_pyproject(tree: Path) -> None:
    build = _built(tree)
    settings = tree / "pyproject.toml"
    settings.write_text(settings.read_text() + "\n[tool.other]\nx = 1\n")
    assert compiled.build_state(build, tree) == "fresh"
    settings.write_text(settings.read_text().replace("strict = true", "strict = false"))
    assert compiled.build_state(build, tree) == "stale"


def test_a_build_for_another_python_is_stale(tree: Path) -> None:
    build = _built(tree)
    manifest = json.loads((build / compiled.MANIFEST).read_text())
    manifest["python"] = "cpython-310-linux-3.10.0"
    (build / compiled.MANIFEST).write_text(json.dumps(manifest))
    assert compiled.build_state(build, tree) == "stale"
    # Another mypy built it: still fresh to run (a build carries its own runtime; bin/compile
    # builds again where another mypy is installed).
    manifest["python"], manifest["mypy"] = compiled.python_tag(), "0.1"
    (build / compiled.MANIFEST).write_text(json.dumps(manifest))
    assert compiled.build_state(build, tree) == "fresh"
    assert compiled.built_by(build) == "0.1"
    (build / compiled.MANIFEST).write_text("{not json")
    assert compiled.build_state(build, tree) == "absent"


def test_the_build_goes_first_on_a_package_path_only_when_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    path = ["/src/calls"]
    monkeypatch.setattr(compiled, "active", lambda: False)
    compiled.extend(path, "calls")
    assert path == ["/src/calls"]
    monkeypatch.setattr(compiled, "active", lambda: True)
    compiled.extend(path, "calls")
    compiled.extend(path, "calls")  # (once)
    assert path == [str(compiled.BUILD / "calls"), "/src/calls"]


def test_off_means_off(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("off", "0", "false", "No"):
        monkeypatch.setenv("COSTLAB_COMPILED", value)
        assert not compiled.wanted()
    monkeypatch.setenv("COSTLAB_COMPILED", "")
    assert compiled.wanted()


def test_the_modules_in_use_are_the_ones_the_status_names() -> None:
    """Compiled, the modules are the build's extensions; else their sources. CI builds them
    (`make test` runs bin/compile), so there the compiled ones are what is tested."""
    for path in compiled.MODULES:
        name = path.removesuffix(".py").replace("/", ".")
        loaded = Path(importlib.import_module(name).__file__ or "")
        if compiled.active():
            assert loaded.suffix == ".so" and compiled.BUILD in loaded.parents, name
        else:  # (not an extension left beside the source by a manual mypyc run)
            assert loaded == compiled.ROOT / path, name
    if compiled.active():
        assert compiled.status().startswith("compiled modules in use")
    else:
        assert os.environ.get("CI") != "true" or not compiled.wanted(), compiled.status()
