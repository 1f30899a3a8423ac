"""The study database: an ordinary Optuna RDB database, plus our own tables.

Optuna's schema cannot hold per-epoch curves of a multi-objective trial or a run's
artifacts, so those live in ``stagetune_epoch_metrics`` and ``stagetune_artifacts`` in the
same database, created idempotently. Passwords in URLs never reach output or logs.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

# scheme://user:PASSWORD@host...; the password may itself hold '@' or '/', so it ends at
# the last '@' that is followed by a host part.
_PASSWORD = re.compile(
    r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<pw>\S*)@(?=[^@\s/]*(?:[/?\s'\"]|$))"
)

DEFAULT_STORAGE = "sqlite:///stagetune.db"

metadata = sa.MetaData()
epoch_metrics = sa.Table(
    "stagetune_epoch_metrics", metadata,
    sa.Column("trial_id", sa.Integer, primary_key=True),  # optuna trials.trial_id
    sa.Column("epoch", sa.Integer, primary_key=True),
    sa.Column("stage", sa.Integer, nullable=False),
    sa.Column("metrics", sa.Text, nullable=False),  # JSON object of floats
)
artifacts = sa.Table(
    "stagetune_artifacts", metadata,
    sa.Column("trial_id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("content", sa.Text, nullable=False),  # JSON
)


drivers = sa.Table(
    "stagetune_drivers", metadata,
    sa.Column("experiment", sa.String(256), primary_key=True),  # the Tune experiment name
    sa.Column("heartbeat_at", sa.Float, nullable=False),  # unix time of the last beat
    sa.Column("host", sa.String(256), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
)


class StorageError(RuntimeError):
    """The database cannot be used; the message never holds a password."""


def redact(text: str) -> str:
    """Replace the password of every URL in ``text`` with ``***``."""
    return _PASSWORD.sub(lambda m: m.group("head") + "***@", str(text))


def check_url(url: str) -> None:
    """Refuse a malformed URL before anything is created."""
    try:
        sa.engine.make_url(url)
    except Exception:
        raise StorageError(f"malformed database URL {redact(url)!r}; expected a SQLAlchemy URL "
                           "such as sqlite:///stagetune.db or "
                           "postgresql://user@host/db") from None


def make_engine(url: str, *, read_only: bool = False) -> sa.Engine:
    check_url(url)
    u = sa.engine.make_url(url)
    kwargs: dict[str, Any] = {}
    if u.get_backend_name() == "sqlite":
        if read_only and u.database not in (None, "", ":memory:"):
            u = u.set(query={**u.query, "mode": "ro", "uri": "true"})
            u = u.set(database=f"file:{u.database}")
        kwargs["connect_args"] = {"timeout": 60}
    else:
        kwargs["pool_pre_ping"] = True
        if u.get_backend_name().startswith("postgresql"):
            kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        engine = sa.create_engine(u, **kwargs)
    except ModuleNotFoundError as exc:
        raise StorageError(f"no database driver for {redact(url)} ({exc.name} is missing); "
                           "for PostgreSQL: pip install 'stagetune[postgres]'") from None
    except Exception as exc:
        raise StorageError(f"cannot use database {redact(url)}: {redact(str(exc))}") from None
    if read_only and u.get_backend_name().startswith("postgresql"):
        @sa.event.listens_for(engine, "connect")
        def _read_only(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            cur.close()
    return engine


def ping(engine: sa.Engine, url: str) -> None:
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"cannot reach database {redact(url)}: {redact(first)}") from None


@contextmanager
def session(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One transaction: commits on success, rolls back on error."""
    with engine.begin() as conn:
        yield conn


def create_tables(engine: sa.Engine) -> None:
    """Create our tables if they are missing (idempotent)."""
    metadata.create_all(engine, checkfirst=True)


def write_epoch(engine: sa.Engine, trial_id: int, epoch: int, stage: int,
                metrics: dict[str, float]) -> None:
    """Insert or replace one epoch's metrics of a trial (a retried trial overwrites)."""
    payload = json.dumps(metrics, sort_keys=True)
    with session(engine) as conn:
        conn.execute(epoch_metrics.delete().where(
            (epoch_metrics.c.trial_id == trial_id) & (epoch_metrics.c.epoch == epoch)))
        conn.execute(epoch_metrics.insert().values(
            trial_id=trial_id, epoch=epoch, stage=stage, metrics=payload))


def write_artifact(engine: sa.Engine, trial_id: int, name: str, content: Any) -> None:
    with session(engine) as conn:
        conn.execute(artifacts.delete().where(
            (artifacts.c.trial_id == trial_id) & (artifacts.c.name == name)))
        conn.execute(artifacts.insert().values(trial_id=trial_id, name=name,
                                               content=json.dumps(content)))


def read_epochs(engine: sa.Engine, trial_id: int) -> list[dict[str, float]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(epoch_metrics.c.metrics).where(epoch_metrics.c.trial_id == trial_id)
            .order_by(epoch_metrics.c.epoch)).all()
    return [json.loads(r[0]) for r in rows]


def beat(engine: sa.Engine, experiment: str, *, pid: int | None = None) -> None:
    """Record that the driver of ``experiment`` (this process) is alive now."""
    with session(engine) as conn:
        conn.execute(drivers.delete().where(drivers.c.experiment == experiment))
        conn.execute(drivers.insert().values(
            experiment=experiment, heartbeat_at=time.time(), host=socket.gethostname(),
            pid=os.getpid() if pid is None else pid))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def live_experiments(engine: sa.Engine, *, within_s: float) -> set[str]:
    """Experiments whose driver is alive: it beat in the last ``within_s`` seconds and,
    when it ran on this host, its process still exists (a crash is seen at once)."""
    here = socket.gethostname()
    with engine.connect() as conn:
        rows = conn.execute(sa.select(drivers.c.experiment, drivers.c.host, drivers.c.pid)
                            .where(drivers.c.heartbeat_at >= time.time() - within_s)).all()
    return {exp for exp, host, pid in rows if host != here or _pid_alive(pid)}
