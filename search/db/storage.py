"""The study database: an ordinary Optuna RDB database, plus our own tables.

This is the database layer, below :mod:`search.db.study`: URLs, SQLAlchemy engines,
reachability, the study lock, drivers' heartbeats and the project's own tables. It calls
nothing above it (``search.db.study`` imports from here, never the reverse; a test checks).

Optuna's schema cannot hold per-epoch curves of a multi-objective trial or a run's
artifacts, so those live in ``stagetune_epoch_metrics`` and ``stagetune_artifacts`` in the
same database, created idempotently; so do the runs of ``stagetune confirm``
(``stagetune_confirmations``, ``stagetune_confirmation_runs``) and of ``stagetune
fidelity`` (``stagetune_fidelity_checks``, ``stagetune_fidelity_runs``), kept out of Optuna's
trials so that the sampler's history holds only what the search chose. Passwords in URLs
never reach output or logs.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

# scheme://user:PASSWORD@host...; the password may itself hold '@' or '/', so it ends at
# the last '@' that is followed by a host part.
_PASSWORD = re.compile(
    r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<pw>\S*)@(?=[^@\s/]*(?:[/?\s'\"]|$))"
)
# ...?password=PASSWORD&... (libpq and SQLAlchemy accept the password as a query parameter)
_QUERY_PASSWORD = re.compile(
    r"(?P<head>[?&](?:ssl)?pass(?:word|wd)?=)(?P<pw>[^&\s'\"]*)", re.IGNORECASE
)

DEFAULT_STORAGE = "sqlite:///stagetune.db"
DRIVER_BEAT_S = 20.0  # how often a driver records that it is alive
DRIVER_STALE_S = 120.0  # after this long without a beat, its RUNNING trials are orphans

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

#: ``stagetune confirm``: one row per confirmation of a study (its settings and seeds,
#: frozen when it starts, so that an interrupted one resumes the same runs)
confirmations = sa.Table(
    "stagetune_confirmations", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study_name", sa.String(512), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),  # unix time
    sa.Column("top", sa.Integer, nullable=False),
    sa.Column("seeds", sa.Text, nullable=False),  # JSON list of ints
    sa.Column("objectives", sa.Text, nullable=False),  # JSON: Objective.describe()
    sa.Column("settings", sa.Text, nullable=False),  # JSON list of settings (search.checks.confirm)
)
#: one row per (confirmation, setting, seed) run that finished, complete or failed
confirmation_runs = sa.Table(
    "stagetune_confirmation_runs", metadata,
    sa.Column("confirmation_id", sa.Integer, primary_key=True),
    sa.Column("setting", sa.String(64), primary_key=True),  # "default" or "trial_<n>"
    sa.Column("seed", sa.Integer, primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),  # "complete" or "failed"
    sa.Column("metrics", sa.Text, nullable=False),  # JSON: the run's final metrics
    sa.Column("reason", sa.Text, nullable=True),  # why it failed
    sa.Column("finished_at", sa.Float, nullable=False),
)

#: ``stagetune fidelity``: one row per fidelity check of a study (its settings, seeds and
#: budgets, frozen when it starts; ``summary`` is its scored result once every run has an
#: outcome, rescored when a resumed check adds runs)
fidelity_checks = sa.Table(
    "stagetune_fidelity_checks", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study_name", sa.String(512), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),  # unix time
    sa.Column("plan", sa.Text, nullable=False),  # JSON: search.checks.fidelity_run's plan
    sa.Column("summary", sa.Text, nullable=True),  # JSON: search.checks.fidelity.score_check
)
#: one row per (check, setting, seed, schedule) run that finished, complete or failed;
#: ``history`` holds the epoch rows' proxies, which the check's rungs read
fidelity_runs = sa.Table(
    "stagetune_fidelity_runs", metadata,
    sa.Column("check_id", sa.Integer, primary_key=True),
    sa.Column("setting", sa.String(64), primary_key=True),
    sa.Column("seed", sa.Integer, primary_key=True),
    sa.Column("budget", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),  # "complete" or "failed"
    sa.Column("metrics", sa.Text, nullable=False),  # JSON: the run's final metrics
    sa.Column("history", sa.Text, nullable=False),  # JSON list of epoch rows
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=False),
)

drivers = sa.Table(
    "stagetune_drivers", metadata,
    sa.Column("experiment", sa.String(256), primary_key=True),  # the Tune experiment name
    # seconds since 1970 by the database server's clock (never a driver host's)
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    sa.Column("host", sa.String(256), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
)


class StorageError(RuntimeError):
    """The database cannot be used; the message never holds a password."""


def redact(text: str) -> str:
    """Replace every password in ``text`` with ``***``: the userinfo of a URL
    (``scheme://user:PASSWORD@host``) and ``password=`` query parameters."""
    text = _PASSWORD.sub(lambda m: m.group("head") + "***@", str(text))
    return _QUERY_PASSWORD.sub(lambda m: m.group("head") + "***", text)


def _redact_unparsed(url: str) -> str:
    """``url``, which SQLAlchemy could not parse, with whatever may be a password hidden.

    Such text need not follow the URL grammar that :func:`redact` relies on (``user:pw@host``
    without a scheme, ``postgres:/u:pw@host``), so everything from the first ``:`` of the
    part before the last ``@`` up to that ``@`` is masked, after any ``scheme://``.
    """
    text = redact(url)
    head, at, tail = text.rpartition("@")
    if not at:
        return text
    scheme = head.find("://")
    start = scheme + 3 if scheme >= 0 else 0
    colon = head.find(":", start)
    return f"{head[:colon + 1] if colon >= 0 else head[:start]}***@{tail}"


def check_url(url: str) -> None:
    """Refuse a malformed URL before anything is created.

    The one check of a ``--storage`` URL for every command (``sweep``, ``status`` and
    ``analyze``).

    Args:
        url: a SQLAlchemy database URL, as the user gave it.

    Raises:
        StorageError: ``url`` is not a database URL; the message shows it without its
            password.
    """
    try:
        sa.engine.make_url(url)
    except Exception:
        raise StorageError(f"malformed database URL {_redact_unparsed(url)!r}; expected a "
                           "SQLAlchemy URL such as sqlite:///stagetune.db or "
                           "postgresql://user@host/db") from None


def sqlite_file(url: str) -> str | None:
    """The file of a SQLite URL (``None`` for other databases and in-memory SQLite).

    Raises:
        StorageError: ``url`` is malformed.
    """
    check_url(url)
    u = sa.engine.make_url(url)
    if u.get_backend_name() != "sqlite" or u.database in (None, "", ":memory:"):
        return None
    return u.database.removeprefix("file:")


def check_sqlite_folder(url: str) -> None:
    """Refuse a SQLite URL whose folder does not exist, naming the folder (SQLite would
    say only "unable to open database file"); the folder is not created, so that a typo
    in it is not taken for a new place to keep studies.

    Raises:
        StorageError: the folder of the URL's file does not exist, or is not a folder.
    """
    path = sqlite_file(url)
    if path is None:
        return
    folder = Path(path).parent
    if folder.exists() and not folder.is_dir():
        raise StorageError(f"cannot open SQLite database {redact(url)}: {folder} is a file, "
                           "not a folder; choose another --storage")
    if not folder.is_dir():
        raise StorageError(f"cannot open SQLite database {redact(url)}: the folder "
                           f"{folder} does not exist; create it or choose another --storage")


def make_engine(url: str, *, read_only: bool = False) -> sa.Engine:
    check_url(url)
    check_sqlite_folder(url)
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
    """Raise :class:`StorageError` (password hidden) unless the database answers."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"cannot reach database {redact(url)}: {redact(first)}") from None


def existing_database(url: str) -> sa.Engine | None:
    """A read-only engine on the database at ``url``, once it answered; ``None`` when
    ``url`` names a SQLite file that does not exist (nothing is created).

    Raises:
        StorageError: the URL is malformed, or the database cannot be reached.
    """
    path = sqlite_file(url)
    if path is not None and not os.path.isfile(path):
        return None
    engine = make_engine(url, read_only=True)
    ping(engine, url)
    return engine


def has_study_tables(engine: sa.Engine, url: str) -> bool:
    """Whether the database holds Optuna's schema (its ``studies`` table).

    Raises:
        StorageError: the database cannot be read (e.g. a file that is not SQLite).
    """
    try:
        return sa.inspect(engine).has_table("studies")
    except sa.exc.SQLAlchemyError as exc:
        raise StorageError(f"cannot read {redact(url)}: "
                           f"{redact(str(exc).strip().splitlines()[0])}") from None


@contextmanager
def session(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One transaction: commits on success, rolls back on error."""
    with engine.begin() as conn:
        yield conn


# What a process sees when another one created the same schema object between its check
# and its create (SQLite, PostgreSQL's catalog), or held the file's write lock meanwhile.
_SCHEMA_RACE = ("UNIQUE constraint", "duplicate key", "already exists", "database is locked")
SCHEMA_ATTEMPTS = 5


def lost_schema_race(exc: BaseException) -> bool:
    """Whether ``exc`` is another process creating the same schema at the same moment."""
    return any(sign in str(exc) for sign in _SCHEMA_RACE)


def create_tables(engine: sa.Engine) -> None:
    """Create our tables if they are missing (idempotent, and safe when several processes
    open a new database at once: ``checkfirst`` then ``CREATE`` is not atomic, so a process
    that loses the race checks again, and finds the table there)."""
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            metadata.create_all(engine, checkfirst=True)
            return
        except sa.exc.DBAPIError as exc:
            if not lost_schema_race(exc) or attempt == SCHEMA_ATTEMPTS - 1:
                raise
            time.sleep(0.3 * (attempt + 1))


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


def add_confirmation(engine: sa.Engine, study_name: str, *, top: int, seeds: list[int],
                     objectives: dict[str, Any], settings: list[dict[str, Any]]) -> int:
    """Store a new confirmation of ``study_name``; returns its id."""
    import time

    with session(engine) as conn:
        result = conn.execute(confirmations.insert().values(
            study_name=study_name, created_at=time.time(), top=top, seeds=json.dumps(seeds),
            objectives=json.dumps(objectives), settings=json.dumps(settings)))
        return int(result.inserted_primary_key[0])


def _of_study(conn, table: sa.Table, study_name: str) -> list:
    """The rows of ``table`` (confirmations, fidelity checks) for a study, oldest first."""
    return conn.execute(sa.select(table).where(table.c.study_name == study_name)
                        .order_by(table.c.id)).all()


def read_confirmations(engine: sa.Engine, study_name: str) -> list[dict[str, Any]]:
    """A study's confirmations, oldest first, each with its finished runs (``runs``)."""
    if not sa.inspect(engine).has_table(confirmations.name):
        return []
    with engine.connect() as conn:
        out = []
        for row in _of_study(conn, confirmations, study_name):
            runs = conn.execute(sa.select(confirmation_runs).where(
                confirmation_runs.c.confirmation_id == row.id)).all()
            out.append({
                "id": int(row.id), "created_at": float(row.created_at), "top": int(row.top),
                "seeds": json.loads(row.seeds), "objectives": json.loads(row.objectives),
                "settings": json.loads(row.settings),
                "runs": [{"setting": r.setting, "seed": int(r.seed), "state": r.state,
                          "metrics": json.loads(r.metrics), "reason": r.reason,
                          "finished_at": float(r.finished_at)} for r in runs],
            })
    return out


def write_confirmation_run(engine: sa.Engine, confirmation_id: int, setting: str, seed: int,
                           *, state: str, metrics: dict[str, Any],
                           reason: str | None = None) -> None:
    """Insert or replace one finished run of a confirmation (a rerun of a failed one
    replaces it)."""
    import time

    key = ((confirmation_runs.c.confirmation_id == confirmation_id)
           & (confirmation_runs.c.setting == setting) & (confirmation_runs.c.seed == seed))
    with session(engine) as conn:
        conn.execute(confirmation_runs.delete().where(key))
        conn.execute(confirmation_runs.insert().values(
            confirmation_id=confirmation_id, setting=setting, seed=seed, state=state,
            metrics=json.dumps(metrics), reason=reason, finished_at=time.time()))


def add_fidelity_check(engine: sa.Engine, study_name: str, plan: dict[str, Any]) -> int:
    """Store a new fidelity check of ``study_name``; returns its id."""
    with session(engine) as conn:
        result = conn.execute(fidelity_checks.insert().values(
            study_name=study_name, created_at=time.time(), plan=json.dumps(plan)))
        return int(result.inserted_primary_key[0])


def read_fidelity_checks(engine: sa.Engine, study_name: str, *, runs: bool = True
                         ) -> list[dict[str, Any]]:
    """A study's fidelity checks, oldest first, each with its plan, its summary (None
    until scored) and, with ``runs``, its finished runs."""
    if not sa.inspect(engine).has_table(fidelity_checks.name):
        return []
    with engine.connect() as conn:
        out = []
        for row in _of_study(conn, fidelity_checks, study_name):
            check = {"id": int(row.id), "created_at": float(row.created_at),
                     "plan": json.loads(row.plan),
                     "summary": json.loads(row.summary) if row.summary else None}
            if runs:
                check["runs"] = [
                    {"setting": r.setting, "seed": int(r.seed), "budget": r.budget,
                     "state": r.state, "final": json.loads(r.metrics),
                     "history": json.loads(r.history), "reason": r.reason,
                     "finished_at": float(r.finished_at)}
                    for r in conn.execute(sa.select(fidelity_runs).where(
                        fidelity_runs.c.check_id == row.id)).all()]
            out.append(check)
    return out


def write_fidelity_run(engine: sa.Engine, check_id: int, setting: str, seed: int, budget: str,
                       *, state: str, metrics: dict[str, Any],
                       history: list[dict[str, float]], reason: str | None = None) -> None:
    """Insert or replace one finished run of a fidelity check (a rerun of a failed one
    replaces it)."""
    key = ((fidelity_runs.c.check_id == check_id) & (fidelity_runs.c.setting == setting)
           & (fidelity_runs.c.seed == seed) & (fidelity_runs.c.budget == budget))
    with session(engine) as conn:
        conn.execute(fidelity_runs.delete().where(key))
        conn.execute(fidelity_runs.insert().values(
            check_id=check_id, setting=setting, seed=seed, budget=budget, state=state,
            metrics=json.dumps(metrics), history=json.dumps(history), reason=reason,
            finished_at=time.time()))


def write_fidelity_summary(engine: sa.Engine, check_id: int, summary: Any) -> None:
    """Store (or replace) a fidelity check's scored result."""
    with session(engine) as conn:
        conn.execute(fidelity_checks.update().where(fidelity_checks.c.id == check_id)
                     .values(summary=json.dumps(summary)))


def read_epochs(engine: sa.Engine, trial_id: int) -> list[dict[str, float]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(epoch_metrics.c.metrics).where(epoch_metrics.c.trial_id == trial_id)
            .order_by(epoch_metrics.c.epoch)).all()
    return [json.loads(r[0]) for r in rows]


def server_epoch(engine: sa.Engine) -> sa.ColumnElement:
    """Now, in seconds since 1970, by the database server's clock.

    Drivers on several hosts compare heartbeats; their own clocks may disagree, the
    server's is one clock for all of them.
    """
    dialect = engine.dialect.name
    if dialect == "sqlite":
        return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)")
    if dialect == "postgresql":
        return sa.literal_column("EXTRACT(EPOCH FROM CURRENT_TIMESTAMP)")
    if dialect in ("mysql", "mariadb"):
        return sa.literal_column("UNIX_TIMESTAMP(NOW(6))")
    return sa.func.extract("epoch", sa.func.current_timestamp())


def beat(engine: sa.Engine, experiment: str, *, pid: int | None = None) -> None:
    """Record that the driver of ``experiment`` (this process) is alive now."""
    with session(engine) as conn:
        conn.execute(drivers.delete().where(drivers.c.experiment == experiment))
        conn.execute(drivers.insert().values(
            experiment=experiment, heartbeat_at=server_epoch(engine),
            host=socket.gethostname(), pid=os.getpid() if pid is None else pid))


def end_driver(engine: sa.Engine, experiment: str) -> None:
    """Remove a finished driver's row."""
    with session(engine) as conn:
        conn.execute(drivers.delete().where(drivers.c.experiment == experiment))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def live_experiments(engine: sa.Engine, *, within_s: float) -> set[str]:
    """Experiments whose driver is alive: it beat in the last ``within_s`` seconds of the
    server's clock and, when it ran on this host, its process still exists (a crash is
    seen at once)."""
    here = socket.gethostname()
    with engine.connect() as conn:
        rows = conn.execute(sa.select(drivers.c.experiment, drivers.c.host, drivers.c.pid)
                            .where(drivers.c.heartbeat_at >= server_epoch(engine) - within_s)
                            ).all()
    return {exp for exp, host, pid in rows if host != here or _pid_alive(pid)}


def remove_dead_drivers(engine: sa.Engine, live: set[str]) -> int:
    """Delete the rows of drivers not in ``live`` (stopped or crashed); returns how many."""
    with session(engine) as conn:
        query = drivers.delete()
        if live:
            query = query.where(drivers.c.experiment.not_in(sorted(live)))
        return conn.execute(query).rowcount or 0


_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


@contextmanager
def study_lock(engine: sa.Engine, study_name: str) -> Iterator[None]:
    """Serialise, across every driver of a study, what must not interleave: counting the
    study's trials and asking for the next one, tagging it with its driver, and taking
    a stopped driver's trials for orphans.

    PostgreSQL: a session advisory lock (released by the server if the driver dies).
    SQLite: an exclusive ``flock`` on ``<database>.lock`` beside the file (released by
    the kernel if the driver dies); never on the database file itself, whose POSIX locks
    closing another descriptor would drop. In-memory databases: a thread lock.
    """
    key = f"{engine.url.render_as_string(hide_password=True)}#{study_name}"
    with _THREAD_LOCKS_GUARD:
        local = _THREAD_LOCKS.setdefault(key, threading.Lock())
    with local:
        dialect = engine.dialect.name
        if dialect == "postgresql":
            lock_id = zlib.crc32(f"stagetune:{study_name}".encode()) - 2**31
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": lock_id})
                try:
                    yield
                finally:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": lock_id})
            return
        database = engine.url.database
        if dialect != "sqlite" or database in (None, "", ":memory:") \
                or database.startswith("file:"):
            yield
            return
        import fcntl

        with open(Path(database).with_name(Path(database).name + ".lock"), "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def latest_fidelity_summary(engine, study_name: str) -> dict[str, Any] | None:
    """The scored result of the study's latest fidelity check that has one (``status``,
    the report, MO-ASHA's default rungs)."""
    for check in reversed(read_fidelity_checks(engine, study_name, runs=False)):
        if check["summary"] is not None:
            return check["summary"]
    return None
