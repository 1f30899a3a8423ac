from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess

import pytest
import sqlalchemy as sa

from analysis.cli import main
from tests.analysis.conftest import assert_report_imports_no_torch_or_ray, checksum, make_study


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
    assert lines[0].startswith("Study known: objectives task_accuracy (maximize), "
                               "zay_independence_score (maximize); task objective: "
                               "task_accuracy")
    assert lines[1].split()[:4] == ["position", "number", "pareto_rank", "crowding"]
    import json

    rows = json.loads((tmp_path / "ranked.json").read_text())
    assert {r["number"] for r in rows if r["pareto_rank"] == 0} == {0, 1, 2}
    assert (tmp_path / "ranked.csv").read_text().startswith("position,number,pareto_rank")


def test_report_holds_every_figure_and_the_table_with_plotly_once(study_db, tmp_path, capsys):
    code, _, _ = _run(capsys, "report", "--storage", f"sqlite:///{study_db}", "--study",
                      "known", "--out", str(tmp_path), "--no-png")
    assert code == 0
    page = (tmp_path / "report.html").read_text()
    for name in ("pareto", "hypervolume", "curves", "effects", "parallel", "importance",
                 "heatmap"):
        assert f"id='figure-{name}'" in page and f'id="fig-{name}"' in page
    assert "<table class='sortable'>" in page and "Ranked trials (all 5)" in page
    # a readable header: counts by state in words, and the best trade-offs in a sentence
    assert ("7 trials: 6 complete (1 of them infeasible: zay collapsed), 1 pruned, "
            "0 failed.") in page
    assert "Best trade-offs: the Pareto front holds 3 of 5 ranked trials; #0 is best on " \
        "task_accuracy (0.950, with zay_independence_score 0.800)" in page
    assert "the method default #1 is on the front" in page
    assert '{"COMPLETE"' not in page and "Figures not drawn" not in page
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
    assert_report_imports_no_torch_or_ray(study_db, "known", tmp_path)


def test_report_header_names_failure_reasons_and_a_scalar_best(tmp_path, capsys):
    import optuna
    from optuna.trial import TrialState, create_trial

    from tests.analysis.conftest import make_scalar_study

    url = f"sqlite:///{tmp_path / 'scalar.db'}"
    make_scalar_study(url, n=12, epochs=False)
    study = optuna.load_study(study_name="scalar", storage=url)
    study.add_trial(create_trial(state=TrialState.FAIL,
                                 user_attrs={"fail_reason": "CUDA out of memory"}))
    code, _, err = _run(capsys, "report", "--storage", url, "--study", "scalar", "--out",
                        str(tmp_path / "r"), "--no-png")
    assert code == 0, err
    page = (tmp_path / "r" / "report.html").read_text()
    assert "13 trials: 12 complete, 0 pruned, 1 failed." in page
    assert "Failures: CUDA out of memory (×1)." in page
    summary = page.split("<div class='summary'>")[1].split("</div>")[0]
    assert "Best: trial #" in summary and "Pareto" not in summary
    assert "Figures not drawn:" in page and "a scalar study has no Pareto front" in page


def test_close_values_stay_apart_in_the_table(tmp_path, capsys):
    points = [(0.99996, 0.5), (0.99991, 0.6), (0.9, 0.9)]
    url = f"sqlite:///{tmp_path / 'close.db'}"
    make_study(url, name="close", points=points)
    code, out, _ = _run(capsys, "rank", "--storage", url, "--study", "close", "--out",
                        str(tmp_path))
    assert code == 0
    assert "0.99996" in out and "0.99991" in out
    code, _, _ = _run(capsys, "report", "--storage", url, "--study", "close", "--out",
                      str(tmp_path), "--no-png")
    page = (tmp_path / "report.html").read_text()
    assert "<td>0.99996</td>" in page and "<td>0.99991</td>" in page


def test_plot_all_shares_one_plotly_script(study_db, tmp_path, capsys):
    code, _out, err = _run(capsys, "plot", "--storage", f"sqlite:///{study_db}", "--study",
                          "known", "--out", str(tmp_path), "--no-png")
    assert code == 0, err
    pages = sorted(tmp_path.glob("*.html"))
    assert len(pages) == 7 and (tmp_path / "plotly.min.js").is_file()
    for page in pages:
        text = page.read_text()
        assert re.search(r'<script[^>]*src="plotly.min.js"', text), page.name
        assert not re.search(r"\* plotly\.js v\d", text), page.name  # not embedded again


def test_importance_command_prints_and_writes(tmp_path, capsys):
    from tests.analysis.conftest import make_dominant_study

    url = f"sqlite:///{tmp_path / 'd.db'}"
    make_dominant_study(url, n=30)
    code, out, err = _run(capsys, "importance", "--storage", url, "--study", "dominant",
                          "--out", str(tmp_path), "--evaluator", "ped-anova")
    assert code == 0, err
    block = out.split("ped-anova importance for task_accuracy:")[1].splitlines()
    assert block[1].split()[0] == "stage1_epochs"
    assert (tmp_path / "importance.csv").is_file() and (tmp_path / "importance.html").is_file()


@pytest.mark.parametrize(("trial", "message"), [
    ("6", "trial 6 is pruned"),
    ("5", "trial 5 is infeasible (zay collapsed)"),
    ("42", "no trial 42 in study 'known'"),
])
def test_heatmap_of_a_trial_without_one_is_one_line(study_db, tmp_path, capsys, trial,
                                                    message):
    before = checksum(study_db)
    out = tmp_path / "figs"
    code, _, err = _run(capsys, "plot", "--storage", f"sqlite:///{study_db}", "--study",
                        "known", "--figure", "heatmap", "--trial", trial, "--out", str(out))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert checksum(study_db) == before and not out.exists()


@pytest.mark.parametrize("command", ["rank", "report"])
def test_a_file_that_is_not_a_database_is_one_line(tmp_path, capsys, command):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n")
    before = checksum(notes)
    code, _, err = _run(capsys, command, "--storage", f"sqlite:///{notes}", "--out",
                        str(tmp_path / "o"))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "is not a study database" in lines[0]
    assert checksum(notes) == before


def _children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    try:
        with open(path) as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


@pytest.mark.skipif(shutil.which("optuna-dashboard") is None, reason="needs optuna-dashboard")
def test_dashboard_stops_its_server_on_sigterm(study_db, tmp_path):
    import os
    import signal
    import socket
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "analysis", "dashboard", "--storage",
                             f"sqlite:///{study_db}", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        children: list[int] = []
        while time.monotonic() < deadline and not children:
            children = _children(proc.pid)
            time.sleep(0.2)
        assert children, "the dashboard never started its server"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        for child in children:
            gone = False
            for _ in range(100):
                try:
                    os.kill(child, 0)
                except ProcessLookupError:
                    gone = True
                    break
                time.sleep(0.1)
            assert gone, f"optuna-dashboard (pid {child}) still runs"
    finally:
        if proc.poll() is None:
            proc.kill()
