"""Where the registry is: ``--registry URL``, else $AUDITOR_REGISTRY, else a SQLite file in the
user's data folder ($AUDITOR_DATA_DIR, else $XDG_DATA_HOME/auditor, else ~/.local/share/auditor)."""
from __future__ import annotations

import os
from pathlib import Path

FILENAME = "registry.db"
SCHEMES = ("sqlite", "postgresql")


def data_dir() -> Path:
    if os.environ.get("AUDITOR_DATA_DIR"):
        return Path(os.environ["AUDITOR_DATA_DIR"]).expanduser()
    if os.environ.get("XDG_DATA_HOME"):
        return Path(os.environ["XDG_DATA_HOME"]).expanduser() / "auditor"
    return Path.home() / ".local" / "share" / "auditor"


def default_url() -> str:
    return f"sqlite:///{data_dir() / FILENAME}"


def resolve_url(given: str | None, *, default: bool = True) -> str | None:
    """The database URL: the one given, else $AUDITOR_REGISTRY, else (``default``) the SQLite file.

    A bare path (no ``scheme://``) is a SQLite file; ``postgresql://`` means psycopg 3."""
    value = given or os.environ.get("AUDITOR_REGISTRY") or None
    if value is None:
        return default_url() if default else None
    if "://" not in value:
        return f"sqlite:///{Path(value).expanduser().absolute()}"
    scheme, rest = value.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    return value


def shown(url: str) -> str:
    """The URL with any password hidden, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:                    # not a URL at all: say nothing of it beyond its scheme
        return url.split("://", 1)[0] + "://..."
