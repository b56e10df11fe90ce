import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from conversations.engine.types import Transcript
from conversations.formats import parse_files


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    # The parsers need no Django, so `pytest -p no:django tests/formats` must run; without
    # pytest-django the repo's DJANGO_SETTINGS_MODULE ini key is unknown, and the config
    # warning that causes is an error under filterwarnings=error.
    if not pluginmanager.has_plugin("django"):
        parser.addini("DJANGO_SETTINGS_MODULE", "read by pytest-django when it is enabled")


@pytest.fixture
def samples(fixtures: Path) -> Path:
    """The hand-written format fixtures."""
    return fixtures / "formats"


@pytest.fixture
def parse() -> Callable[..., list[Transcript]]:
    def run(*paths: Path, **kwargs: object) -> list[Transcript]:
        return list(parse_files(list(paths), **kwargs))  # type: ignore[arg-type]

    return run


@pytest.fixture
def make_zip(tmp_path: Path) -> Callable[..., Path]:
    """Build an archive from {member name: bytes or a Path to copy}."""

    def build(members: dict[str, bytes | Path], name: str = "upload.zip") -> Path:
        path = tmp_path / name
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for member, content in members.items():
                data = content.read_bytes() if isinstance(content, Path) else content
                archive.writestr(member, data)
        return path

    return build
