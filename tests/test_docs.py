"""The documentation against the code: README.md's size and set-up section (which .ci/run
executes), its commands parsed by the real parsers, relative links in README.md and
docs/*.md, the generated metrics table in docs/metrics.md, and the tests that the fault
table in docs/faults.md names."""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_docker import command_lines, parse_all

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
MAX_README_LINES = 200
SETUP = "## Set-up: two commands"

#: test functions of the fault test files that the fault table does not name, and why
#: (every other test function in those files must be named by a row)
NOT_IN_FAULT_TABLE = {
    ("tests/search/test_faults.py", "test_trial_seeds_differ_by_trial_and_repeat_by_seed"):
        "no fault injected: it checks the per-trial sampler seeds that let several drivers "
        "share a study (docs/search.md), not a row's fault",
}
FAULT_TEST_FILES = ["tests/search/test_faults.py", "tests/search/test_fault_sweeps.py"]


def _outside_fences(text: str) -> list[str]:
    """The lines of a Markdown text that are not inside a fenced code block."""
    out, fence = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence:
            out.append(line)
    return out


def _load_generator():
    spec = importlib.util.spec_from_file_location("generate_tables",
                                                  DOCS / "generate_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- README.md
def test_readme_is_at_most_200_lines():
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; move detail into docs/"


def test_setup_is_the_first_section_of_the_readme():
    sections = [ln for ln in _outside_fences(README.read_text()) if ln.startswith("## ")]
    assert sections and sections[0] == SETUP, sections[:3]


def test_ci_reads_the_two_setup_commands_from_the_readme():
    """Run the extraction .ci/run uses on README.md: block 0 is the main job, 1 the tests."""
    ci = (ROOT / ".ci" / "run").read_text()
    snippet = re.search(r"readme_block\(\) \{.*?<<'EOF'\n(.*?)\nEOF\n", ci, re.S)
    assert snippet, ".ci/run no longer has its readme_block heredoc"
    blocks = []
    for k in (0, 1):
        out = subprocess.run([sys.executable, "-", str(README), str(k)],
                             input=snippet.group(1), capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        blocks.append(out.stdout.strip())
    main_job, tests = blocks
    assert main_job.startswith("pip install ") and "stagetune sweep" in main_job
    assert "stagetune analyze report" in main_job
    assert tests.startswith("pip install ") and "pytest" in tests


def test_readme_links_every_page_of_docs():
    text = README.read_text()
    for page in sorted(DOCS.glob("*.md")):
        assert f"](docs/{page.name})" in text, f"README.md does not link docs/{page.name}"
    assert "](benchmarks/README.md)" in text


def test_readme_commands_parse_with_the_real_parsers():
    """Every stagetune and trainer command in README.md's bash blocks is accepted by the
    parser that will run it (``python -m trainer`` is ``stagetune train``)."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    parsed = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            for argv in command_lines(line):
                if argv[:3] == ["python", "-m", "trainer"]:
                    argv = ["stagetune", "train", *argv[3:]]
                try:
                    parsed += parse_all(argv)
                except SystemExit:
                    pytest.fail(f"README.md command rejected by its parser: {' '.join(argv)}")
    trains = [p for p in parsed if hasattr(p, "staged_training")]
    assert trains and all(t.staged_training and t.beta_annealing for t in trains)
    sweeps = [p for p in parsed if getattr(p, "command", None) == "run"]
    assert len(sweeps) >= 4
    assert any(getattr(p, "command", None) == "status" for p in parsed)


# ---------------------------------------------------------------- links
_CODE_SPAN = re.compile(r"(`+).*?\1")
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def relative_links(text: str) -> list[str]:
    """Targets of the inline, image and reference links outside code, except URLs."""
    targets = []
    for line in _outside_fences(text):
        line = _CODE_SPAN.sub("", line)
        targets += _INLINE_LINK.findall(line)
        targets += _REFERENCE.findall(line)
    return [t for t in targets if not _SCHEME.match(t)]


def test_link_finder_on_known_text():
    text = ("see [model](docs/model.md) and ![grid](shapes_grid.png), `[x](no.md)`,\n"
            "[site](https://example.org/a.md) [ref]: other.md\n[ref]: ../b.md\n"
            "```\n[in](code.md)\n```\n")
    assert relative_links(text) == ["docs/model.md", "shapes_grid.png", "../b.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve_to_files(page):
    links = relative_links(page.read_text())
    anchored = [t for t in links if "#" in t]
    # anchors break silently when a heading is renamed: link the page, name the section
    assert not anchored, f"links with an anchor: {anchored}"
    missing = [t for t in links if not (page.parent / t).resolve().exists()]
    assert not missing, f"{page.name}: links to missing files: {missing}"


# ---------------------------------------------------------------- generated tables
def test_metrics_table_matches_the_code():
    diffs = _load_generator().stale()
    assert not diffs, ("a generated table in docs/ is stale; run "
                       "python docs/generate_tables.py --write\n" + "".join(diffs))


def test_metrics_table_lists_every_metric_with_its_direction():
    from trainer.objectives import METRICS

    text = (DOCS / "metrics.md").read_text()
    table = text.split("<!-- metrics:begin -->", 1)[1].split("<!-- metrics:end -->", 1)[0]
    rows = {m.group(1): m.group(2) for m in
            re.finditer(r"^\| `(\w+)` \| (maximize|minimize) \|", table, re.M)}
    assert rows == {name: spec.direction for name, spec in METRICS.items()}


def test_generator_replaces_only_between_its_markers():
    gen = _load_generator()
    text = "intro\n<!-- metrics:begin -->\nold\n<!-- metrics:end -->\noutro\n"
    assert (gen.replace_table(text, "metrics", "| new |\n")
            == "intro\n<!-- metrics:begin -->\n| new |\n<!-- metrics:end -->\noutro\n")
    with pytest.raises(ValueError):
        gen.replace_table("no markers here\n", "metrics", "| new |\n")
    assert gen._cell("a |b| *c*") == r"a \|b\| \*c\*"


def test_generator_check_fails_on_a_stale_table(monkeypatch, tmp_path):
    gen = _load_generator()
    page = tmp_path / "metrics.md"
    page.write_text("<!-- metrics:begin -->\n| stale |\n<!-- metrics:end -->\n")
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    monkeypatch.setitem(gen.TABLES, "metrics", (page, gen.metrics_table))
    assert gen.main(["--check"]) == 1
    assert gen.main(["--write"]) == 0 and gen.main(["--check"]) == 0
    assert "`task_accuracy`" in page.read_text()


# ---------------------------------------------------------------- the fault table
def _fault_rows() -> list[str]:
    lines = _outside_fences((DOCS / "faults.md").read_text())
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| fault injected |"))
    rows = []
    for ln in lines[start + 2:]:  # past the header and its |---| line
        if not ln.startswith("|"):
            break
        rows.append(ln)
    return rows


def _named_tests(row: str) -> list[tuple[str, str]]:
    """(file from the repository root, function) of each test a row names; bare file names
    are in tests/search/, as docs/faults.md says."""
    out = []
    for file, func in re.findall(r"`((?:tests/[\w/]+/)?test_\w+\.py)::(test_\w+)`", row):
        out.append((file if file.startswith("tests/") else f"tests/search/{file}", func))
    return out


def _test_functions(file: str) -> set[str]:
    tree = ast.parse((ROOT / file).read_text())
    return {node.name for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name.startswith("test_")}


def test_every_fault_row_names_a_test():
    rows = _fault_rows()
    assert len(rows) >= 20
    unnamed = [row for row in rows if not _named_tests(row)]
    assert not unnamed, f"rows without a test: {unnamed}"


def test_every_test_the_fault_table_names_exists():
    missing = []
    for row in _fault_rows():
        for file, func in _named_tests(row):
            if not (ROOT / file).is_file() or func not in _test_functions(file):
                missing.append(f"{file}::{func}")
    assert not missing, f"docs/faults.md names tests that do not exist: {missing}"


def test_every_fault_test_is_in_the_table():
    named = {t for row in _fault_rows() for t in _named_tests(row)}
    tests = {(file, func) for file in FAULT_TEST_FILES for func in _test_functions(file)}
    unlisted = sorted(f"{f}::{t}" for f, t in tests - named - set(NOT_IN_FAULT_TABLE))
    assert not unlisted, f"fault tests that no row of docs/faults.md names: {unlisted}"
    # the exceptions stay true: each still exists and is still not in the table
    assert set(NOT_IN_FAULT_TABLE) <= tests - named
