"""Tests never touch the user's count cache or its secret: each session gets its own, empty.

The shared builders (the command line in-process, a tiny GPT-2) are plain functions in helpers.py."""
import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_count_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("AUDITOR_CACHE_DIR", str(tmp_path_factory.mktemp("count-cache")))
    mp.setenv("AUDITOR_CONFIG_DIR", str(tmp_path_factory.mktemp("auditor-config")))
    mp.delenv("AUDITOR_CACHE_SECRET", raising=False)
    mp.delenv("AUDITOR_SIGNING_KEY", raising=False)
    yield
    mp.undo()


@pytest.fixture
def windows(monkeypatch):
    """How many times the tracker switched its dispatch-level counter on: repeats must not."""
    from auditor.tracking import counter as tracking

    entered = []
    original = tracking._RoutedCounting.__enter__

    def enter(self):
        entered.append(1)
        return original(self)
    monkeypatch.setattr(tracking._RoutedCounting, "__enter__", enter)
    return entered
