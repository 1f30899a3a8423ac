from __future__ import annotations

import ast
from pathlib import Path

import pytest

from search.db.storage import (
    StorageError,
    check_url,
    create_tables,
    make_engine,
    ping,
    read_epochs,
    redact,
    sqlite_file,
    write_epoch,
)
from search.objective import Objective, ObjectiveError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://alice:s3cret@db:5432/x", "postgresql://alice:***@db:5432/x"),
        ("postgresql+psycopg2://u:p@ss/w@rd@host/db", "postgresql+psycopg2://u:***@host/db"),
        ("sqlite:///stagetune.db", "sqlite:///stagetune.db"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("text before mysql://root:hunter2@127.0.0.1/t after",
         "text before mysql://root:***@127.0.0.1/t after"),
    ],
)
def test_redact(url, expected):
    assert redact(url) == expected


def test_malformed_url_is_refused_without_the_password():
    with pytest.raises(StorageError) as err:
        make_engine("not a url with secretpw")
    assert "malformed database URL" in str(err.value)


def test_unreachable_database_error_hides_the_password():
    url = "postgresql://stagetune:TopSecret99@127.0.0.1:1/nowhere"
    with pytest.raises(StorageError) as err:
        ping(make_engine(url), url)
    assert "cannot reach database" in str(err.value)
    assert "TopSecret99" not in str(err.value)


def test_tables_are_created_idempotently_and_rows_upsert(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    create_tables(engine)
    create_tables(engine)
    write_epoch(engine, 7, 0, 1, {"epoch": 0.0, "loss": 3.0})
    write_epoch(engine, 7, 1, 1, {"epoch": 1.0, "loss": 2.0})
    write_epoch(engine, 7, 1, 1, {"epoch": 1.0, "loss": 1.5})  # a retried attempt
    assert read_epochs(engine, 7) == [{"epoch": 0.0, "loss": 3.0}, {"epoch": 1.0, "loss": 1.5}]


def test_objective_directions_and_scalar():
    pareto = Objective()
    assert pareto.names == ["task_accuracy", "zay_independence_score"]
    assert pareto.directions == ["maximize", "maximize"]
    leak = Objective(disentanglement="zay_label_leakage")
    assert leak.directions == ["maximize", "minimize"]
    scalar = Objective(mode="scalar", weight=0.25, disentanglement="zay_label_leakage")
    assert scalar.directions == ["maximize"]
    # leakage is minimised: it enters the scalar as 1 - leakage
    assert scalar.values({"task_accuracy": 0.8, "zay_label_leakage": 0.2}) == [
        pytest.approx(0.75 * 0.8 + 0.25 * 0.8)]
    assert not Objective.feasible({"zay_collapsed": 1.0})
    assert Objective.constraint({"zay_collapsed": 1.0}) > 0 >= Objective.constraint(
        {"zay_collapsed": 0.0})
    with pytest.raises(ObjectiveError):
        Objective(disentanglement="acc_y_test")


def _open(url: str) -> str:
    from search.db.study import open_storage

    open_storage(url)
    return "ok"


def test_create_tables_survives_a_table_created_between_its_check_and_its_create(tmp_path):
    """The race CI once hit, made certain: another connection (another process, in life)
    creates a table after this one checked that it is missing and before it creates it."""
    import sqlalchemy as sa

    from search.db.storage import confirmation_runs

    url = f"sqlite:///{tmp_path / 'raced.db'}"
    engine, rival = make_engine(url), make_engine(url)
    raced = []

    def rival_creates_it_first(target, connection, **kw):
        if not raced:
            raced.append(True)
            target.create(rival)

    sa.event.listen(confirmation_runs, "before_create", rival_creates_it_first)
    try:
        create_tables(engine)
    finally:
        sa.event.remove(confirmation_runs, "before_create", rival_creates_it_first)
    assert raced == [True]
    assert sa.inspect(engine).has_table(confirmation_runs.name)
    create_tables(engine)  # and again: idempotent


def test_concurrent_opens_of_a_new_database_all_succeed(tmp_path):
    import multiprocessing as mp

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    with mp.get_context("spawn").Pool(4) as pool:
        assert pool.map(_open, [url] * 4) == ["ok"] * 4


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("notaurl:/x", "'notaurl:/x'"),
        ("alice:Hunter2@db/x", "'alice:***@db/x'"),
        ("postgres:/alice:Hunter2@db/x", "'postgres:***@db/x'"),
        ("postgresql//alice:Hunter2@db/x", "'postgresql//alice:***@db/x'"),
        ("Hunter2@db/x", "'***@db/x'"),
        ("postgresql://alice:Hunter2@db:port/x", "'postgresql://alice:***@db:port/x'"),
    ],
)
def test_check_url_names_a_malformed_url_without_its_password(url, shown):
    with pytest.raises(StorageError) as err:
        check_url(url)
    assert str(err.value).startswith(f"malformed database URL {shown}; ")
    assert "Hunter2" not in str(err.value)
    with pytest.raises(StorageError) as err:  # what sweep, status and analyze go through
        sqlite_file(url)
    assert "Hunter2" not in str(err.value)


def _imported_modules(tree: ast.AST, package: str) -> set[str]:
    """Every module an import statement anywhere in ``tree`` names (inside functions,
    classes and conditionals too), absolute; ``package`` resolves relative imports."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args \
                and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) \
                and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
                    "import_module", "__import__"):
            names.add(node.args[0].value)
    return names


def _imports_study(names: set[str]) -> bool:
    return any(n == "search.db.study" or n.startswith("search.db.study.") for n in names)


def test_the_database_layer_never_imports_the_study_layer():
    import search.db.storage

    tree = ast.parse(Path(search.db.storage.__file__).read_text(), search.db.storage.__file__)
    assert not _imports_study(_imported_modules(tree, "search.db")), (
        "search/db/storage.py imports search.db.study: the database layer must only be called "
        "by the study layer, never call it")
    # the check sees imports at any depth, in every spelling
    for source in ("import search.db.study",
                   "from search.db.study import open_study",
                   "from search.db import study",
                   "def f():\n    if True:\n        from search.db.study import requeue\n",
                   "class C:\n    def m(self):\n        from .study import requeue\n",
                   "from . import study",
                   "import importlib\nimportlib.import_module('search.db.study')"):
        assert _imports_study(_imported_modules(ast.parse(source), "search.db")), source
    study_tree = ast.parse(Path(search.db.storage.__file__).with_name("study.py").read_text())
    assert "search.db.storage" in _imported_modules(study_tree, "search.db")  # and it calls down
