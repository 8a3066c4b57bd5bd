"""Engines and migrations for the admin DB: SQLite by default, PostgreSQL (or MySQL) by URL."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
_engines: dict[str, Engine] = {}
# When each URL was last found at the head migration (`ensure_current`).
_found_current: dict[str, float] = {}
# How long that finding stands: a web worker asked the DB's revision on every admin access
# (0.8 ms of CPU each, a SUSHI report's several); a downgrade by another process is noticed
# this much later (this process's own `upgrade`/`downgrade` forget the finding at once).
CURRENT_FOR_SECONDS = 5.0


class AdminDbError(RuntimeError):
    """The admin DB is unreachable, or not migrated to the version this code needs."""


def engine_for(url: str) -> Engine:
    """One engine per URL; a SQLite file's folder is created on first use."""
    if url not in _engines:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, pool_pre_ping=True)
        if parsed.get_backend_name() == "sqlite":

            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.close()

        _engines[url] = engine
    return _engines[url]


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    engine_for(url)  # creates the SQLite folder
    _found_current.pop(url, None)
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    _found_current.pop(url, None)
    command.downgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    with engine_for(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@functools.cache
def head_revision() -> str:
    """The newest migration of this code: read once per process (the migration scripts do
    not change while it runs; reading them cost every admin DB access of a web request
    5-100 ms, the SUSHI reports' largest cost after the store; issue 16)."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() or ""


def ensure_current(url: str) -> None:
    """Fail with a clear message (instead of a missing-table error) on an unmigrated DB.
    A DB found current is not asked again for `CURRENT_FOR_SECONDS`."""
    now = time.monotonic()
    if now - _found_current.get(url, -CURRENT_FOR_SECONDS) < CURRENT_FOR_SECONDS:
        return
    try:
        current = current_revision(url)
    except Exception as exc:
        raise AdminDbError(f"admin DB {_safe(url)} is unreachable: {exc}") from exc
    head = head_revision()
    if current != head:
        raise AdminDbError(
            f"admin DB {_safe(url)} is at migration {current or 'none'}, this code needs {head}: "
            "run `usage-stats db upgrade`"
        )
    _found_current[url] = now


def _safe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    session = sessionmaker(engine_for(url), expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
