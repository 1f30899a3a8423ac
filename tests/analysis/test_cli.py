from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess

import pytest
import sqlalchemy as sa

from analysis.cli import main
from tests.analysis.conftest import checksum, make_study


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_command_leaves_the_database_unchanged(study_db, tmp_path, capsys):
    url = f"sqlite:///{study_db}"
    before = checksum(study_db)
    second = tmp_path / "other.db"
    make_study(f"sqlite:///{second}", name="other")
    out = tmp_path / "out"
    runs = [
        ("rank", "--storage", url, "--study", "known", "--out", str(out)),
        ("plot", "--storage", url, "--study", "known", "--out", str(out), "--no-png"),
        ("report", "--storage", url, "--study", "known", "--out", str(out), "--no-png"),
        ("compare", "--storage", url, "--study", "known", "--study", "other",
         "--storage-b", f"sqlite:///{second}", "--out", str(out)),
    ]
    for argv in runs:
        code, _stdout, err = _run(capsys, *argv)
        assert code == 0, err
        assert checksum(study_db) == before, argv[0]
    for name in ("ranked.csv", "ranked.json", "report.html", "compare.html", "pareto.html",
                 "heatmap.html"):
        assert (out / name).is_file(), name


def test_rank_prints_the_table_and_writes_csv_and_json(study_db, tmp_path, capsys):
    code, out, _ = _run(capsys, "rank", "--storage", f"sqlite:///{study_db}", "--study",
                        "known", "--out", str(tmp_path))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["position", "number", "pareto_rank", "crowding"]
    import json

    rows = json.loads((tmp_path / "ranked.json").read_text())
    assert {r["number"] for r in rows if r["pareto_rank"] == 0} == {0, 1, 2}
    assert (tmp_path / "ranked.csv").read_text().startswith("position,number,pareto_rank")


def test_report_holds_every_figure_and_the_table_with_plotly_once(study_db, tmp_path, capsys):
    code, _, _ = _run(capsys, "report", "--storage", f"sqlite:///{study_db}", "--study",
                      "known", "--out", str(tmp_path), "--no-png")
    assert code == 0
    page = (tmp_path / "report.html").read_text()
    for name in ("pareto", "hypervolume", "curves", "effects", "parallel", "heatmap"):
        assert f"id='figure-{name}'" in page and f'id="fig-{name}"' in page
    assert "<table" in page and "Ranked trials" in page
    assert len(re.findall(r"\* plotly\.js v\d", page)) == 1  # the library, once, inline
    assert not re.search(r"<script[^>]+src=", page)  # nothing fetched: works offline


@pytest.mark.parametrize(
    ("setup", "argv", "message"),
    [
        ("none", ["--study", "nope"], "no study 'nope'"),
        ("empty", ["--study", "empty"], "has no trials yet"),
        ("foreign", ["--study", "x"], "is not a study database"),
    ],
)
def test_bad_input_one_line_and_unchanged(tmp_path, capsys, setup, argv, message):
    db = tmp_path / "db.sqlite"
    if setup == "none":
        make_study(f"sqlite:///{db}")
    elif setup == "empty":
        import optuna

        optuna.create_study(storage=f"sqlite:///{db}", study_name="empty")
    else:
        con = sqlite3.connect(db)
        con.execute("CREATE TABLE orders (id INTEGER)")
        con.commit()
        con.close()
    before = checksum(db)
    code, _, err = _run(capsys, "rank", "--storage", f"sqlite:///{db}", *argv,
                        "--out", str(tmp_path / "o"))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0]
    if setup == "none":
        assert "studies there: known" in lines[0]
    assert checksum(db) == before


def test_unreachable_url_hides_the_password(capsys):
    code, out, err = _run(capsys, "rank", "--storage",
                          "postgresql://ana:PlainTextPw@127.0.0.1:1/studies")
    assert code == 2 and "cannot reach database" in err and "PlainTextPw" not in out + err


@pytest.mark.postgres
def test_analysis_on_postgresql_reads_without_writing(tmp_path, capsys, pg_url):
    make_study(pg_url)
    engine = sa.create_engine(pg_url)

    def snapshot():
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
            return {t: sorted(map(tuple, conn.execute(sa.text(f'SELECT * FROM "{t}"'))))
                    for t in tables}

    before = snapshot()
    for cmd in (["rank"], ["report", "--no-png"]):
        code, _, err = _run(capsys, *cmd, "--storage", pg_url, "--study", "known", "--out",
                            str(tmp_path))
        assert code == 0, err
    assert snapshot() == before
    engine.dispose()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package")
def test_report_opens_in_headless_chromium_without_errors(study_db, tmp_path, capsys):
    assert main(["report", "--storage", f"sqlite:///{study_db}", "--study", "known",
                 "--out", str(tmp_path), "--no-png"]) == 0
    page = f"file://{tmp_path / 'report.html'}"
    common = [CHROMIUM, *HEADLESS, f"--user-data-dir={tmp_path / 'profile'}",
              "--virtual-time-budget=10000", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run([*common, "--dump-dom", page], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0
    # every figure rendered its SVG, and the page logged no script error
    assert dom.stdout.count('class="main-svg"') >= 6
    assert "Uncaught" not in dom.stderr and "SyntaxError" not in dom.stderr
    shot = tmp_path / "report.png"
    subprocess.run([*common, "--window-size=1300,2400", f"--screenshot={shot}", page],
                   capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 10_000


def test_dashboard_refuses_a_database_that_is_not_a_study(tmp_path, capsys):
    db = tmp_path / "other.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (x INTEGER)")
    con.commit()
    con.close()
    code, _, err = _run(capsys, "dashboard", "--storage", f"sqlite:///{db}")
    assert code == 2 and "is not a study database" in err


def test_analysis_never_imports_torch_or_ray(study_db, tmp_path):
    import sys

    code = (
        "import sys\n"
        "from analysis.cli import main\n"
        f"assert main(['report', '--storage', 'sqlite:///{study_db}', '--study', 'known', "
        f"'--out', '{tmp_path}', '--no-png']) == 0\n"
        "bad = [m for m in ('torch', 'ray') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
