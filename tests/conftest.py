"""Tests never touch the user's count cache: each session gets its own, empty."""
import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_count_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("AUDITOR_CACHE_DIR", str(tmp_path_factory.mktemp("count-cache")))
    yield
    mp.undo()
