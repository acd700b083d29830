"""Opening the registry: an engine whose writers are safe together, and the schema migrated on open.

SQLite: WAL journal, ``synchronous=FULL`` (a committed write survives a power cut), a 60 s busy
timeout, foreign keys on, and every transaction ``BEGIN IMMEDIATE``: the write lock is taken at
the start, so two writers never both read and then fail to upgrade (SQLite's busy handler cannot
retry that case). PostgreSQL: every writing transaction takes one advisory lock first, so that
"is this run recorded? if not, insert it" is one step for all writers; readers do not wait.
Migrations run under the same lock, so many processes opening a new registry at once migrate it once.
"""
from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

from auditor.registry.location import SCHEMES, shown

LOCK_KEY = 0x61756469746F72   # 'auditor': the advisory lock all writers take on PostgreSQL
SCHEMA_HEAD = "0002"          # the newest migration (a test checks it is the scripts' head)


class RegistryError(Exception):
    """A registry that cannot be used, or input it refuses; str() is one line. ``code``: the exit
    code a command gives (2 bad input or unreachable, 1 a run refused because it does not verify)."""

    def __init__(self, message: str, *, code: int = 2):
        super().__init__(message)
        self.code = code


def make_engine(url: str) -> sa.Engine:
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise RegistryError(f"--registry: got {shown(url)!r}; expected a database URL (sqlite:///FILE or "
                            f"postgresql+psycopg://USER@HOST/DB) or a file path") from None
    backend = parsed.get_backend_name()
    if backend not in SCHEMES:
        raise RegistryError(f"--registry: got {shown(url)!r}; expected sqlite or postgresql (psycopg 3)")
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise RegistryError("--registry: an in-memory SQLite database keeps nothing; give a file")
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"timeout": 60}, poolclass=sa.pool.NullPool)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    if parsed.get_driver_name() != "psycopg":
        raise RegistryError(f"--registry: got {shown(url)!r}; expected the psycopg 3 driver "
                            f"(postgresql+psycopg://...)")
    return sa.create_engine(parsed, poolclass=sa.pool.NullPool,
                            connect_args={"connect_timeout": 20, "application_name": "auditor-registry"})


def _sqlite_connect(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None          # transactions are ours: BEGIN IMMEDIATE
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=60000"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def write_lock(conn: sa.Connection) -> None:
    """At the start of a writing transaction: one writer at a time (SQLite's BEGIN IMMEDIATE does it)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({LOCK_KEY})")


def current_revision(conn: sa.Connection) -> str | None:
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def migrate(engine: sa.Engine) -> None:
    """Bring the schema to SCHEMA_HEAD (Alembic, the scripts inside the package), under the write lock."""
    with engine.connect() as conn:
        if current_revision(conn) == SCHEMA_HEAD:
            return
    from alembic import command
    from alembic.config import Config

    with engine.begin() as conn:
        write_lock(conn)
        found = current_revision(conn)
        if found == SCHEMA_HEAD:
            return
        config = Config()
        config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        config.attributes["connection"] = conn
        try:
            command.upgrade(config, "head")
        except Exception as exc:
            if "Can't locate revision" in str(exc):
                raise RegistryError(f"the registry's schema is at revision {found!r}, newer than this auditor "
                                    f"knows ({SCHEMA_HEAD}): upgrade auditor") from None
            raise


def open_engine(url: str) -> sa.Engine:
    """An engine on a migrated registry; RegistryError (one line) when it cannot be reached."""
    engine = make_engine(url)
    try:
        migrate(engine)
    except RegistryError:
        raise
    except sa.exc.SQLAlchemyError as exc:
        detail = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
        raise RegistryError(f"--registry {shown(url)}: cannot open the registry: {detail}") from None
    return engine
