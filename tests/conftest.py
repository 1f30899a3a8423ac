from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

#: folders that tools keep in the working directory on their own: not a test's leftovers
TOOL_FOLDERS = frozenset({".git", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis",
                          ".import_linter_cache"})


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run checks marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database on this machine's server, dropped afterwards."""
    import uuid

    import sqlalchemy as sa

    try:
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        pytest.skip(f"PostgreSQL not reachable on 127.0.0.1:5432: {exc}")
    name = f"stagetune_test_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 f"WHERE datname = '{name}'"))
            conn.execute(sa.text(f'DROP DATABASE "{name}"'))
        admin.dispose()


def working_directory_listing(folder: Path) -> set[str]:
    """The names in ``folder``, tool folders aside.

    The top level only: a leftover shows there (``stagetune-report/`` beside the user's
    own), while files that other processes write into existing folders meanwhile (a
    benchmark writing ``benchmarks/out/``) are no test's doing.
    """
    return {name for name in os.listdir(folder) if name not in TOOL_FOLDERS}


@contextmanager
def no_files_left_in_the_working_directory() -> Iterator[None]:
    """Fail (``pytest.fail``) if the block leaves files in the working directory it
    started in."""
    cwd = Path.cwd()
    before = working_directory_listing(cwd)
    yield
    left = sorted(working_directory_listing(cwd) - before)
    if left:
        shown = ", ".join(left[:8]) + (f" and {len(left) - 8} more" if len(left) > 8 else "")
        pytest.fail(f"the test left {shown} in the working directory {cwd}; write under "
                    f"tmp_path (or monkeypatch.chdir(tmp_path)) instead", pytrace=False)


@pytest.fixture(autouse=True)
def _leaves_no_files_in_the_working_directory():
    """Every test: nothing left in the working directory (a user's own folder, where the
    README's test command runs); tests write under ``tmp_path``."""
    with no_files_left_in_the_working_directory():
        yield
