"""A disk cache of counts, so the same model and context are counted once per machine.

Counting is exact and deterministic given the model's config, the context length, the versions
of torch and transformers, and the counting code itself, so those make the key: the code is
fingerprinted by the bytes of its source files (``fingerprint()``), so an entry written before a
formula changed is never found after it. A hit skips building the model, and so importing torch
and transformers' model code (about 3 s of a cold 405B preflight on a 2-core machine). Only
configs given as data (Hugging Face configs) are cached: a factory's code can change without its
import path changing.

Nothing cached is trusted blindly. Each entry carries an HMAC-SHA256 of its key and its counts
under a secret that lives outside the cache folder, so a cache restored from elsewhere (a CI
cache a pull request could write, a shared folder, a tarball) or edited by hand (counts divided
by 10^4) does not verify and is recounted. The secret: $AUDITOR_CACHE_SECRET where set (a CI
secret shares the cache between jobs), else a random one made once in
$AUDITOR_CONFIG_DIR, $XDG_CONFIG_HOME/auditor or ~/.config/auditor (file ``cache-secret``, 0600).

Location: $AUDITOR_CACHE_DIR, else $XDG_CACHE_HOME/auditor, else ~/.cache/auditor.
AUDITOR_CACHE_DIR=off disables it. An unreadable, corrupt or unverified entry is ignored and
rewritten.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from auditor.files import read_regular, write_atomic
from auditor.resources import installed_version

SCHEMA = 2  # bump when what a count means changes without the code changing (a convention)
MAX_ENTRY_BYTES = 50_000_000
# The code a count depends on: the counting package and the method that drives it.
_HERE = Path(__file__).resolve().parent
_SOURCES = (_HERE, _HERE.parent / "methods" / "counted.py")


def cache_dir() -> Path | None:
    chosen = os.environ.get("AUDITOR_CACHE_DIR")
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "off", "0", "no") else Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "auditor"


def config_dir() -> Path:
    chosen = os.environ.get("AUDITOR_CONFIG_DIR")
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "auditor"


@functools.lru_cache(maxsize=1)
def fingerprint() -> str:
    """SHA-256 over the counting code's source files (names and bytes), read once a process."""
    digest = hashlib.sha256()
    files = sorted(p for source in _SOURCES for p in ([source] if source.is_file() else source.rglob("*.py")))
    for path in files:
        digest.update(path.relative_to(_HERE.parent).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def cache_key(payload: dict[str, Any]) -> str:
    from auditor import __version__

    versions = {"schema": SCHEMA, "auditor": __version__, "code": fingerprint(),
                "torch": installed_version("torch"), "transformers": installed_version("transformers")}
    text = json.dumps({"payload": payload, "versions": versions}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _secret(create: bool) -> bytes | None:
    """The MAC key; None where there is none (and ``create`` is false, or it cannot be made)."""
    given = os.environ.get("AUDITOR_CACHE_SECRET")
    if given:
        return given.encode()
    path = config_dir() / "cache-secret"
    try:
        return read_regular(path, 4096) or None
    except OSError:
        if not create:
            return None
    except ValueError:                      # not a regular file: no cache rather than a guess
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_hex(32).encode())
        return read_regular(path, 4096)
    except FileExistsError:                 # another process made it first
        return _secret(create=False)
    except OSError:
        return None


def _mac(secret: bytes, key: str, value: dict[str, Any]) -> str:
    body = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(secret, key.encode() + b"\0" + body, hashlib.sha256).hexdigest()


def load(key: str) -> dict[str, Any] | None:
    """The counts stored under ``key``, or None: missing, unreadable, or not verified."""
    folder, secret = cache_dir(), _secret(create=False)
    if folder is None or secret is None:
        return None
    try:
        data = json.loads(read_regular(folder / f"{key}.json", MAX_ENTRY_BYTES))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("key") != key or not isinstance(data.get("value"), dict):
        return None
    if not hmac.compare_digest(str(data.get("mac", "")), _mac(secret, key, data["value"])):
        return None                         # edited, or written under another secret
    return data["value"]


def store(key: str, value: dict[str, Any]) -> None:
    """Write atomically (temp file, then rename); a cache that cannot be written is skipped."""
    folder = cache_dir()
    secret = _secret(create=True) if folder is not None else None
    if folder is None or secret is None:
        return
    entry = {"key": key, "value": value, "mac": _mac(secret, key, value)}
    try:
        # not fsynced: a cache entry lost to a power cut is counted again
        write_atomic(folder / f"{key}.json", json.dumps(entry, sort_keys=True).encode(), durable=False)
    except OSError:
        pass
