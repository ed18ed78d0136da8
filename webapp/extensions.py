"""Flask extensions, created unbound and initialised in `create_app`."""

from __future__ import annotations

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
migrate = Migrate(render_as_batch=True)  # SQLite needs batch mode to alter tables
csrf = CSRFProtect()


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """SQLite: enforce foreign keys, and WAL so readers do not block the writer."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()


@event.listens_for(Engine, "connect")
def _postgresql_utc(dbapi_connection, _record) -> None:
    """PostgreSQL: hand back times in UTC, as pages, CSV and API say, whatever the server's zone."""
    if type(dbapi_connection).__module__.startswith("psycopg"):
        cursor = dbapi_connection.cursor()
        cursor.execute("SET TIME ZONE 'UTC'")
        cursor.close()
        dbapi_connection.commit()  # a setting made in a transaction that is rolled back is undone


def sqlite_wait(config: dict) -> None:
    """SQLite: wait up to DATABASE_BUSY_TIMEOUT_S for a lock instead of failing at once.

    Two gunicorn workers writing at the same moment then take turns; only a lock held longer
    than that becomes an error (503, see webapp.errors).
    """
    if not str(config["SQLALCHEMY_DATABASE_URI"]).startswith("sqlite"):
        return
    options = dict(config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    connect_args = {"timeout": config["DATABASE_BUSY_TIMEOUT_S"], **options.get("connect_args", {})}
    config["SQLALCHEMY_ENGINE_OPTIONS"] = {**options, "connect_args": connect_args}
