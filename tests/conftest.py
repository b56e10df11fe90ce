from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Outside material lives beside the checkout (../shared/oracles), in CI too; never copied in.
ORACLES = ROOT.parent / "shared" / "oracles"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def oracles() -> Path:
    if not ORACLES.is_dir():
        pytest.fail(f"{ORACLES} is missing: tests need ../shared/oracles beside the checkout")
    return ORACLES


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES
