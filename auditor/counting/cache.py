"""A disk cache of counts, so the same model and context are counted once per machine.

Counting is exact and deterministic given the model's config, the context length and the
versions of auditor, torch and transformers, so those make the key. A hit skips building the
model, and so importing torch and transformers' model code (about 3 s of a cold 405B
preflight on a 2-core machine). Only configs given as data (Hugging Face configs) are cached:
a factory's code can change without its import path changing.

Location: $AUDITOR_CACHE_DIR, else $XDG_CACHE_HOME/auditor, else ~/.cache/auditor.
AUDITOR_CACHE_DIR=off disables it. An unreadable or corrupt entry is ignored and rewritten.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from ..resources import installed_version

SCHEMA = 1  # bump when what a count means changes (a formula, a convention)


def cache_dir() -> Path | None:
    chosen = os.environ.get("AUDITOR_CACHE_DIR")
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "off", "0", "no") else Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "auditor"


def cache_key(payload: dict[str, Any]) -> str:
    from .. import __version__

    versions = {"schema": SCHEMA, "auditor": __version__, "torch": installed_version("torch"),
                "transformers": installed_version("transformers")}
    text = json.dumps({"payload": payload, "versions": versions}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def load(key: str) -> dict[str, Any] | None:
    folder = cache_dir()
    if folder is None:
        return None
    try:
        data = json.loads((folder / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("key") == key else None


def store(key: str, value: dict[str, Any]) -> None:
    """Write atomically (temp file, then rename); a cache that cannot be written is skipped."""
    folder = cache_dir()
    if folder is None:
        return
    try:
        # not fsynced: a cache entry lost to a power cut is counted again
        write_atomic(folder / f"{key}.json", json.dumps({**value, "key": key}, sort_keys=True).encode(),
                     durable=False)
    except OSError:
        pass
