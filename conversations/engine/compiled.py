"""The hot modules compiled to C by mypyc, when a build of them is present and fresh.

The built-in endpoint's work per call is mostly small Python steps around the tokenizer
(design.md 2.9); compiled, they take about a fifth less time (bench/calls.py). `bin/compile`
(run by `make run`, `make test` and `make bench`) builds MODULES into var/compiled/ and
writes a manifest of the sources it compiled. A package that holds one of them
(conversations.engine, calls) calls `extend` from its __init__: the build's directory goes
first on the package's path, so its modules are imported instead of the sources.

Only a fresh build is used: one whose manifest names this Python (and machine), mypy's
settings, and the hash of each of its inputs as it is now: the modules compiled, the modules they
import (the engine's: compiled code relies on the types they declare) and bin/compile. An
input edited since the build leaves all the modules interpreted (they call each other
directly in C, so all or none) until `bin/compile` runs again. COSTLAB_COMPILED=off uses the sources whatever is built (tests that patch a module's
internals run that way: tests/conftest.py). Everything works without a build, a little
slower: a machine without a C compiler runs the sources.

Standard library only, no Django: imported first by the engine's package.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "var" / "compiled"
MANIFEST = "manifest.json"
ENGINE = "conversations/engine"
BUILD_SCRIPT = "bin/compile"
OFF_VALUES = frozenset({"off", "0", "false", "no"})

# The modules the endpoint's per-call path spends its Python time in (py-spy over
# bench/calls.py's endpoint part), as paths from the project's root. Each is strictly typed
# already (mypy --strict), which is what mypyc compiles from.
MODULES = (
    "conversations/engine/sequences.py",
    "conversations/engine/messages.py",
    "conversations/engine/cache.py",
    "conversations/engine/render.py",
    "calls/request_body.py",
    "calls/simulated.py",
    "calls/protocol.py",
)


def _inputs(root: Path) -> list[str]:
    """What a build depends on: the modules compiled, the engine's others (compiled code
    assumes the types of what it imports: the calls modules import only the engine and each
    other), and the build script."""
    engine = sorted(p.relative_to(root).as_posix() for p in (root / ENGINE).glob("*.py"))
    return sorted({*MODULES, *engine, BUILD_SCRIPT})


def _mypy_settings(root: Path) -> str:
    """The settings mypyc compiles with: mypy's sections of pyproject.toml."""
    import tomllib  # (here, not at the top: most processes never get this far)

    try:
        tool = tomllib.loads((root / "pyproject.toml").read_text()).get("tool", {})
    except (OSError, tomllib.TOMLDecodeError):
        return ""
    return json.dumps({k: tool.get(k) for k in ("mypy", "django-stubs")}, sort_keys=True)


def mypy_version() -> str:
    """The installed mypy's (mypyc's) version; "" without it (a deployment that runs a build
    made elsewhere: a build carries its runtime and needs no mypy)."""
    from importlib import metadata  # (a scan of the installed packages: only when asked)

    try:
        return metadata.version("mypy")
    except metadata.PackageNotFoundError:
        return ""


def source_hashes(root: Path = ROOT) -> dict[str, str]:
    """Each input as it is now: its path -> sha256 of its bytes."""
    hashes = {
        path: hashlib.sha256((root / path).read_bytes()).hexdigest() for path in _inputs(root)
    }
    hashes["pyproject.toml [tool.mypy]"] = hashlib.sha256(_mypy_settings(root).encode()).hexdigest()
    return hashes


def python_tag() -> str:
    """The interpreter a build is for: its extensions load in no other."""
    version = sys.version.split()[0]
    return f"{sys.implementation.cache_tag}-{sys.platform}-{platform.machine()}-{version}"


def manifest(hashes: dict[str, str]) -> dict[str, object]:
    return {"python": python_tag(), "mypy": mypy_version(), "inputs": hashes}


def _kept_manifest(build: Path) -> dict[str, object] | None:
    try:
        kept = json.loads((build / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return kept if isinstance(kept, dict) else None


def build_state(build: Path = BUILD, root: Path = ROOT) -> str:
    """ "fresh", "stale" (built from other sources or settings, or for another Python) or
    "absent". Which mypy built it does not matter here: `bin/compile` builds again when
    another is installed."""
    kept = _kept_manifest(build)
    if kept is None:
        return "absent"
    fresh = kept.get("python") == python_tag() and kept.get("inputs") == source_hashes(root)
    return "fresh" if fresh else "stale"


def built_by(build: Path = BUILD) -> str | None:
    """The mypy version of the build, if any."""
    kept = _kept_manifest(build)
    version = kept.get("mypy") if kept is not None else None
    return version if isinstance(version, str) else None


def wanted() -> bool:
    return os.environ.get("COSTLAB_COMPILED", "").strip().lower() not in OFF_VALUES


@cache
def active() -> bool:
    """Whether this process imports the compiled modules (decided once, at first import)."""
    return wanted() and build_state() == "fresh"


def status() -> str:
    """In words, for the test run's header, the benchmarks and `bin/compile`."""
    if active():
        return f"compiled modules in use ({len(MODULES)}, mypyc, {BUILD.relative_to(ROOT)})"
    if not wanted():
        return "compiled modules off (COSTLAB_COMPILED): the sources run"
    kept = _kept_manifest(BUILD)
    if kept is None:
        return "compiled modules not built (`bin/compile`): the sources run"
    if kept.get("python") != python_tag():
        why = "built for another Python"
    else:
        why = "a source or mypy's settings changed since"
    return f"compiled modules stale ({why}; `bin/compile` builds them): the sources run"


def extend(package_path: list[str], package: str) -> None:
    """Puts the build's directory for `package` first on its path, when the build is used.
    mypyc's shared runtime for the build is a top-level module in the build's root."""
    if not active():
        return
    directory = str(BUILD.joinpath(*package.split(".")))
    if directory not in package_path:
        package_path.insert(0, directory)
    if str(BUILD) not in sys.path:
        sys.path.append(str(BUILD))
