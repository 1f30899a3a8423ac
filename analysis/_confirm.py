"""The confirmation of a study's front (``stagetune confirm``) in the report.

``stagetune confirm`` re-trains the front's best settings and the method's default on
fresh seeds, paired by seed, and stores the runs beside the study (``search.db.storage``).
``search.checks.confirm_summary.summarize`` turns them into paired comparisons (mean difference, 95%
interval, paired t test, Holm's correction across the settings); this module only reads
that summary and says it: a sentence for the report's header and a section with each
confirmed setting's sentences and a compact table.
"""

from __future__ import annotations

import html
import math
import shlex
import time
from typing import Any

import pandas as pd

from analysis._format import params_text
from analysis._load import StudyData
from search.checks.confirm_summary import (
    caveat_phrase,
    caveat_text,
    holm_family_text,
    latest_summary,
    reported_sentence,
    untested_note,
)
from search.checks.paired import (
    BEATS,
    CONSTANT,
    IDENTICAL,
    NOT_SHOWN,
    ONE_SEED,
    WORSE,
    Paired,
    comparison_verdict,
    format_p,
    untested_text,
)
from search.db.storage import redact


def latest_confirmation(data: StudyData) -> dict[str, Any] | None:
    """The study's confirmation that ran last, as ``search.checks.confirm_summary.summarize``
    gives it; ``None`` when it has none."""
    return latest_summary(data.engine, data.name)


def confirm_command(data: StudyData, summary: dict[str, Any] | None = None) -> str:
    """The ``stagetune confirm`` command for this study (password redacted); for an
    existing confirmation, with its ``--top`` and ``--seeds`` so that it resumes that one
    rather than starting another."""
    url = redact(data.url or str(data.engine.url))
    words = ["stagetune", "confirm", "--storage", url, "--study", data.name]
    if summary is not None:
        words += ["--top", str(summary["top"]), "--seeds", str(len(summary["seeds"]))]
    return " ".join(shlex.quote(w) for w in words)


def verdict(comparison: dict[str, Any] | None, direction: str, alpha: float) -> str | None:
    """``BEATS``, ``WORSE`` or ``NOT_SHOWN`` for one objective of one setting (the rule of
    ``search.checks.paired.verdict``: a difference counts when its Holm-adjusted p is below
    ``alpha``); ``ONE_SEED``, ``IDENTICAL`` or ``CONSTANT`` for one without a test;
    ``None`` when no seed paired."""
    if comparison is None:
        return None
    return comparison_verdict(Paired(**comparison["difference"]), comparison["p_holm"],
                              alpha=alpha, higher_is_better=direction == "maximize")


def _state(summary: dict[str, Any]) -> str:
    done = f"{summary['runs_done']} of {summary['runs_total']} runs done"
    failed = f", {summary['runs_failed']} failed" if summary["runs_failed"] else ""
    return ("complete" if summary["complete"] else "incomplete: " + done) + failed


def _setting_phrase(setting: dict[str, Any], summary: dict[str, Any]) -> str:
    """``#2 beats it on task_accuracy and is worse on zay_independence_score``."""
    if caveat_text(setting):  # failed or collapsed on a seed: no comparison is a win
        return f"#{setting['number']} {caveat_phrase(setting)}"
    found: dict[str | None, list[str]] = {}
    for name, direction in zip(summary["objectives"], summary["directions"], strict=True):
        v = verdict(setting["objectives"].get(name), direction, summary["alpha"])
        found.setdefault(v, []).append(name)
    parts = []
    if found.get(BEATS):
        parts.append("beats it on " + " and ".join(found[BEATS]))
    if found.get(WORSE):
        parts.append("is worse on " + " and ".join(found[WORSE]))
    for kind, phrase in ((CONSTANT, "differs from it by the same amount on every seed on "),
                         (IDENTICAL, "is identical to it on every seed on "),
                         (ONE_SEED, "has one paired seed on ")):
        if found.get(kind):
            parts.append(phrase + " and ".join(found[kind]))
    if not parts:
        parts.append("is not shown to differ on any objective" if found.get(NOT_SHOWN)
                     else "has no paired seed"
                     + ("" if summary["complete"] else " yet"))
    return f"#{setting['number']} " + " and ".join(parts)


def header_sentence(data: StudyData, summary: dict[str, Any] | None) -> str:
    """Whether the front was confirmed, in one sentence, for the report's header."""
    if summary is None:
        return ("Not confirmed: the front has not been re-run against the method default "
                "on fresh seeds (see Confirmed against the default, below).")
    phrases = "; ".join(_setting_phrase(s, summary) for s in summary["settings"])
    what = "Front confirmation" if len(summary["objectives"]) > 1 else "Confirmation"
    return (f"{what} against the method default on {len(summary['seeds'])} "
            f"fresh paired seeds ({_state(summary)}): {phrases}.")


# ------------------------------------------------------------------------------ section


def decimals_for(errors: list[float], *, least: int = 3, most: int = 6) -> int:
    """Decimals that show the smallest nonzero standard error in ``errors`` to one
    significant digit: ``least`` (the sentences' three) unless the errors are smaller."""
    nonzero = [abs(e) for e in errors if e and math.isfinite(e)]
    if not nonzero:
        return least
    return max(least, min(most, -math.floor(math.log10(min(nonzero)))))


def _mean_se(stats: dict[str, float], d: int) -> str:
    if not math.isfinite(stats["se"]):  # one seed: no standard error
        return f"{stats['mean']:.{d}f}"
    return f"{stats['mean']:.{d}f} ± {stats['se']:.{d}f}"


def _difference(diff: dict[str, float], d: int) -> str:
    if (found := untested_text(Paired(**diff), fmt=f".{d}f")) is not None:
        return found
    return f"{diff['mean']:+.{d}f} ({diff['low']:+.{d}f} to {diff['high']:+.{d}f})"


def comparison_rows(summary: dict[str, Any]) -> list[list[str]]:
    """The compact table, one row per setting and objective: setting, objective, the
    setting's mean ± SE, the default's, the difference with its 95% interval, and p after
    Holm's correction. An objective's means share their decimals, as do its differences
    (``decimals_for`` their standard errors)."""
    errors: dict[str, list[float]] = {}
    spreads: dict[str, list[float]] = {}
    for s in summary["settings"]:
        for name, c in s["objectives"].items():
            if c is not None:
                errors.setdefault(name, []).extend([c["setting"]["se"], c["default"]["se"]])
                spreads.setdefault(name, []).append(c["difference"]["se"])
    rows = []
    for s in summary["settings"]:
        for name in summary["objectives"]:
            c = s["objectives"].get(name)
            if c is None:
                rows.append([f"#{s['number']}", name, "", "", "no paired seed", ""])
                continue
            d, e = decimals_for(errors[name]), decimals_for(spreads[name])
            rows.append([f"#{s['number']}", name, _mean_se(c["setting"], d),
                         _mean_se(c["default"], d), _difference(c["difference"], e),
                         format_p(c["p_holm"])])
        for name, c in s.get("reported", {}).items():  # e.g. the test domain: never selects
            d = decimals_for([c["setting"]["se"], c["default"]["se"]])
            e = decimals_for([c["difference"]["se"]])
            p = c["difference"]["p"]
            rows.append([f"#{s['number']}", f"{name} (reported only)",
                         _mean_se(c["setting"], d), _mean_se(c["default"], d),
                         _difference(c["difference"], e),
                         format_p(p) + (" (unadjusted)" if math.isfinite(p) else "")])
    return rows


def _table(summary: dict[str, Any]) -> str:
    head = ["setting", "objective", "setting mean ± SE", "default mean ± SE",
            "difference (95% CI)", "p (Holm)"]
    ths = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
                  for row in comparison_rows(summary))
    return (f"<table class='confirm'><thead><tr>{ths}</tr></thead><tbody>{trs}</tbody>"
            "</table>")


def confirmable(data: StudyData, ranked, summary: dict[str, Any] | None) -> set[int]:
    """The trial numbers ``stagetune confirm`` would choose from now: the front (a
    Pareto study), or the ``--top`` best trials besides the default (a scalar study, whose
    front is its best trial alone). A confirmed setting outside them has been overtaken
    since the confirmation ran."""
    if summary is None or not len(ranked):
        return set()
    if not data.scalar:
        return set(ranked.loc[ranked["pareto_rank"] == 0, "number"].astype(int))
    keep = pd.Series(True, index=ranked.index)
    for column, wanted in (("baseline", False), ("feasible", True)):  # as confirm chooses
        if column in ranked:
            keep &= ranked[column].fillna(wanted).astype(bool) == wanted
    return set(ranked[keep].head(summary["top"])["number"].astype(int))


def _setting_html(setting: dict[str, Any], summary: dict[str, Any], front: set[int]) -> str:
    seeds = setting["seeds"]
    notes = [params_text(setting["params"]),
             f"paired seeds {', '.join(map(str, seeds))}" if seeds else "no paired seed yet"]
    if caveat := caveat_text(setting):
        notes.append(caveat)
    if setting["number"] not in front:
        where = ("on the front" if len(summary["objectives"]) > 1 else
                 f"among the study's {summary['top']} best trials")
        notes.append(f"no longer {where} (the sweep went on after this confirmation)")
    lines = [c["sentence"] for name in summary["objectives"]
             if (c := setting["objectives"].get(name)) is not None] or [setting["sentence"]]
    lines = [line[0].upper() + line[1:] for line in lines]
    lines += [reported_sentence(name, c) for name, c in setting.get("reported", {}).items()]
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return (f"<h3>Trial #{setting['number']}</h3>"
            f"<p class='meta'>{html.escape(' · '.join(notes))}</p><ul>{items}</ul>")


def section_html(data: StudyData, summary: dict[str, Any] | None, front: set[int]) -> str:
    """The report's "Confirmed against the default" section; ``front`` holds the trial
    numbers a confirmation would choose from now (``confirmable``: a confirmed setting
    may have left them since)."""
    parts = ["<section id='confirmation'><h2>Confirmed against the default</h2>"]
    if summary is None:
        parts.append(
            "<p>Not confirmed: the front's settings have not been re-run against the "
            "method's default on fresh seeds. To do it: "
            f"<code>{html.escape(confirm_command(data))}</code></p></section>")
        return "".join(parts)
    k, seeds = len(summary["settings"]), summary["seeds"]
    created = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(summary["created_at"]))
    if data.scalar:
        chosen = "best trial" if k == 1 else f"{k} best trials"
    else:
        chosen = (f"{k} best setting{'s' if k != 1 else ''} of the front of the feasible "
                  "trials besides the default (by the hypervolume each adds alone)")
    parts.append(
        f"<p class='meta'>Confirmation {summary['id']} ({created}): the study's {chosen} "
        "and the method's default, re-trained "
        f"on {len(seeds)} fresh seeds ({html.escape(', '.join(map(str, seeds)))}) that no "
        "trial of the sweep used, each drawing its own data split; every setting is paired "
        f"with the default seed by seed. {summary['runs_done']} of {summary['runs_total']} "
        f"runs done, {summary['runs_failed']} failed. Each objective is compared by a paired "
        "t test on the per-seed differences (setting minus default, with a 95% confidence "
        f"interval), p-values adjusted with Holm's correction across "
        f"{holm_family_text(summary)}{untested_note(summary)}, α = {summary['alpha']:g}; "
        "the intervals are each "
        "comparison's own. \"Not shown to differ\" means the seeds did not show a "
        "difference at that level, not that there is none.</p>")
    if not summary["complete"]:
        parts.append(
            f"<p><b>Incomplete: {summary['runs_done']} of {summary['runs_total']} runs done; "
            f"run <code>{html.escape(confirm_command(data, summary))}</code> again to "
            "finish.</b></p>")
    if summary["failures"]:
        failed = "; ".join(f"{f['setting']} seed {f['seed']}: {f['reason']}"
                           for f in summary["failures"])
        parts.append(f"<p>Failed runs: {html.escape(failed)}; their seeds leave the "
                     "comparisons of their setting. <code>"
                     f"{html.escape(confirm_command(data, summary))}</code> retries "
                     "them.</p>")
    parts += [_setting_html(s, summary, front) for s in summary["settings"]]
    parts += [_table(summary), "</section>"]
    return "".join(parts)
