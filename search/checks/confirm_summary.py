"""What a confirmation found: its runs as paired comparisons against the default.

Apart from ``search.checks.confirm`` (which runs confirmations through Ray Tune) so that
``status`` and the report read a confirmation without importing Ray.
"""

from __future__ import annotations

import math
from typing import Any

from search.checks.paired import (
    ALPHA,
    Paired,
    describe,
    format_p,
    holm,
    paired_difference,
    untested_text,
)
from search.db import storage as db
from search.objective import Objective
from trainer.objectives import COLLAPSE_FLAG

#: the key of the method's default among a confirmation's settings
DEFAULT = "default"
#: metrics compared beside the objectives where the runs have them, but never selected
#: on: the test domain's accuracy (``--test-domain``) is reported only
REPORTED_ONLY = ("acc_y_test_domain",)


def summarize(confirmation: dict[str, Any], *, alpha: float = ALPHA) -> dict[str, Any]:
    """A confirmation's runs as paired comparisons against the default.

    For each setting and objective: the setting's and the default's mean ± SE over the
    seeds where both completed with a finite value, the paired difference
    (``search.checks.paired.Paired``) and its p-value after Holm's correction across the
    settings compared on that objective; and a sentence. An objective's value in a run
    is what the sweep would have told the study (``Objective.values``: the weighted
    ``scalar_score`` of a scalar study is computed from the run's metrics).
    """
    spec = confirmation["objectives"]
    names, directions = spec["names"], spec["directions"]
    # a plan written before the whole objective was stored names metrics directly
    objective = Objective.from_spec(spec) if "mode" in spec else None
    complete = {}
    for r in confirmation["runs"]:
        if r["state"] == "complete":
            metrics = dict(r["metrics"])
            if objective is not None:  # what the run stored stands; computed ones fill in
                for name, value in objective.named_values(metrics).items():
                    metrics.setdefault(name, value)
            complete[(r["setting"], r["seed"])] = metrics
    failed = [r for r in confirmation["runs"] if r["state"] == "failed"]
    seeds = confirmation["seeds"]
    total = len(seeds) * len(confirmation["settings"])
    done = len(complete)
    # complete: every run has an outcome; a failed one (diverged on that seed, or lost
    # after the driver's retries) is an outcome, and the same command retries it
    every_outcome = done + len(failed) == total
    rows = []
    for setting in confirmation["settings"][1:]:
        both = [s for s in seeds if (setting["key"], s) in complete and (DEFAULT, s) in complete]
        entry = {"key": setting["key"], "number": setting["number"],
                 "params": setting["params"], "search_values": setting["values"],
                 "seeds": both, "objectives": {}, "reported": {}}
        for name in (*names, *REPORTED_ONLY):
            comparison = _compare([complete[(setting["key"], s)] for s in both],
                                  [complete[(DEFAULT, s)] for s in both], name)
            if name in names:
                entry["objectives"][name] = comparison
            elif comparison is not None:  # reported only: unadjusted, nothing rests on it
                entry["reported"][name] = comparison
        mine = [complete[(setting["key"], s)] for s in seeds if (setting["key"], s) in complete]
        entry["collapsed"] = int(sum(m.get(COLLAPSE_FLAG, 0.0) >= 1.0 for m in mine))
        entry["failed"] = sum(r["setting"] == setting["key"] for r in failed)
        entry["runs"] = len(mine) + entry["failed"]
        rows.append(entry)
    family, untested = {}, {}
    for name, d in zip(names, directions, strict=True):
        compared = [r for r in rows if r["objectives"].get(name)]
        family[name] = len(compared)
        # a comparison without a test keeps its place in the family as p = 1: it claims
        # nothing, and the others are corrected as the settings chosen beforehand require
        diffs = [Paired(**r["objectives"][name]["difference"]) for r in compared]
        untested[name] = sum(diff.degenerate is not None for diff in diffs)
        adjusted = holm([1.0 if diff.degenerate else diff.p for diff in diffs])
        for r, diff, p in zip(compared, diffs, adjusted, strict=True):
            cmp = r["objectives"][name]
            cmp["p_holm"] = math.nan if diff.degenerate else p
            cmp["sentence"] = describe(name, diff, p, alpha=alpha,
                                       higher_is_better=d == "maximize",
                                       family=len(compared))
    for r in rows:
        parts = [r["objectives"][n]["sentence"] for n in names if r["objectives"].get(n)]
        r["sentence"] = ("; ".join(parts) if parts else
                         "no seed where it and the default both completed"
                         + ("" if every_outcome else " yet"))
        # the sweep's rule: a setting that fails or collapses on any seed wins nothing
        if caveat := caveat_text(r):
            r["sentence"] = f"{caveat}; " + r["sentence"]
    return {"id": confirmation["id"], "created_at": confirmation["created_at"],
            "seeds": seeds, "top": confirmation["top"], "objectives": names,
            "directions": directions, "runs_done": done, "runs_failed": len(failed),
            "runs_total": total, "complete": every_outcome, "alpha": alpha,
            "family": family, "untested": untested,
            "failures": [{"setting": r["setting"], "seed": r["seed"], "reason": r["reason"]}
                         for r in failed],
            "settings": rows}


def _compare(setting: list[dict[str, float]], default: list[dict[str, float]],
             name: str) -> dict[str, Any] | None:
    """``name`` compared over the paired runs where both have a finite value (a seed on
    which either is NaN leaves the comparison, on both sides); ``None`` without one (one
    pair is a comparison without a test)."""
    pairs = [(a.get(name, math.nan), b.get(name, math.nan))
             for a, b in zip(setting, default, strict=True)]
    pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
    if not pairs:
        return None
    a, b = [x for x, _ in pairs], [y for _, y in pairs]
    return {"setting": _mean_se(a), "default": _mean_se(b),
            "difference": paired_difference(a, b).as_dict()}


def caveat_text(setting: dict[str, Any]) -> str:
    """Why a confirmed setting wins nothing whatever its comparisons say, as the sweep
    would rule on the same runs: "failed on 1 of its 5 runs" (diverged, or lost after
    the driver's retries: its other seeds alone would be a survivor's record) and/or
    "infeasible (zay collapsed on 1 of its 5 runs)" (a collapsed zay is trivially
    independent); "" when neither."""
    return "; ".join(text for text, _ in _caveats(setting))


def caveat_phrase(setting: dict[str, Any]) -> str:
    """``caveat_text`` as a predicate: "failed on 1 of its 5 runs and is infeasible
    (zay collapsed on ...)"."""
    return " and ".join(predicate for _, predicate in _caveats(setting))


def _caveats(setting: dict[str, Any]) -> list[tuple[str, str]]:
    """Each caveat as (text, predicate)."""
    out = []
    if setting.get("failed"):
        failed = f"failed on {setting['failed']} of its {setting['runs']} runs"
        out.append((failed, failed))
    if setting.get("collapsed"):
        collapsed = (f"infeasible (zay collapsed on {setting['collapsed']} of its "
                     f"{setting['runs']} runs)")
        out.append((collapsed, "is " + collapsed))
    return out


def holm_family_text(summary: dict[str, Any]) -> str:
    """How many settings each objective's Holm correction ran over: "the 3 settings", or
    per objective where a setting lacked paired seeds on one of them."""
    family = summary.get("family") or {n: len(summary["settings"])
                                       for n in summary["objectives"]}
    sizes = set(family.values())
    if len(sizes) == 1:
        m = sizes.pop()
        return f"the {m} setting{'s' if m != 1 else ''}"
    return ("the settings compared on each objective ("
            + ", ".join(f"{n}: {m}" for n, m in family.items()) + ")")


def reported_sentence(name: str, c: dict[str, Any]) -> str:
    """One reported-only comparison in words: ``acc_y_test_domain (reported only, never
    selected on): 0.259 against the default's 0.233, +0.026 (95% CI ...), p = 0.002``."""
    d = c["difference"]
    head = (f"{name} (reported only, never selected on): {c['setting']['mean']:.3f} against "
            f"the default's {c['default']['mean']:.3f}, ")
    if (found := untested_text(Paired(**d))) is not None:
        return head + found + " (no test)"
    return head + (f"{d['mean']:+.3f} (95% CI {d['low']:+.3f} to {d['high']:+.3f}), "
                   f"p = {format_p(d['p'])}, unadjusted")


def _mean_se(values: list[float]) -> dict[str, float]:
    import numpy as np

    n = len(values)
    sd = float(np.std(values, ddof=1)) if n > 1 else math.nan
    return {"mean": float(np.mean(values)), "se": sd / math.sqrt(n), "n": n}


def latest_summary(engine, study_name: str) -> dict[str, Any] | None:
    """The study's confirmation that ran last (its newest run, or its creation when it
    has none), summarised; ``None`` if it has none. An older confirmation resumed after a
    newer one was made is then the one shown."""
    stored = db.read_confirmations(engine, study_name)
    if not stored:
        return None
    return summarize(max(stored, key=lambda c: (
        max([c["created_at"], *(r["finished_at"] for r in c["runs"])]), c["id"])))


def print_confirmation(summary: dict[str, Any], file=None) -> None:
    import sys

    file = file or sys.stdout
    state = ("complete" if summary["complete"] else
             f"{summary['runs_done']} of {summary['runs_total']} runs done")
    failed = summary["runs_failed"]
    print(f"confirmation against the default on {len(summary['seeds'])} fresh seeds "
          f"({', '.join(map(str, summary['seeds']))}): {state}"
          + (f", {failed} run{'s' if failed != 1 else ''} failed (the same command "
             "retries them)" if failed else ""), file=file)
    for r in summary["settings"]:
        seeds = len(r["seeds"])
        print(f"  {r['key']} ({seeds} paired seed{'s' if seeds != 1 else ''}): "
              f"{r['sentence']}", file=file)
        for name, c in r.get("reported", {}).items():
            print(f"    {reported_sentence(name, c)}", file=file)
    if tested_any(summary):
        print(f"  (paired t test, Holm-adjusted across {holm_family_text(summary)}"
              f"{untested_note(summary)}; α = {summary['alpha']})", file=file)


def tested_any(summary: dict[str, Any]) -> bool:
    """Whether any comparison of the confirmation had a t test (Holm's correction ran)."""
    family, untested = summary.get("family", {}), summary.get("untested", {})
    return any(m > untested.get(name, 0) for name, m in family.items())


def untested_note(summary: dict[str, Any]) -> str:
    """How the comparisons without a test count in Holm's family: "; a comparison without
    a test (one seed, or the same difference on every seed) has no p and counts in the
    family as p = 1"; "" when there is none."""
    if not any(summary.get("untested", {}).values()):
        return ""
    return ("; a comparison without a test (one seed, or the same difference on every "
            "seed) has no p and counts in the family as p = 1")
