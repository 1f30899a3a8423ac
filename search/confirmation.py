"""What a confirmation found: its runs as paired comparisons against the default.

Apart from ``search.confirm`` (which runs confirmations through Ray Tune) so that
``status`` and the report read a confirmation without importing Ray.
"""

from __future__ import annotations

import math
from typing import Any

from search import storage as db
from search.objective import Objective
from search.paired import ALPHA, Paired, describe, format_p, holm, paired_difference
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
    (``search.paired.Paired``) and its p-value after Holm's correction across the
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
    family = {}
    for name, d in zip(names, directions, strict=True):
        tested = [r for r in rows if r["objectives"].get(name)]
        family[name] = len(tested)
        adjusted = holm([r["objectives"][name]["difference"]["p"] for r in tested])
        for r, p in zip(tested, adjusted, strict=True):
            cmp = r["objectives"][name]
            cmp["p_holm"] = p
            cmp["sentence"] = describe(name, Paired(**cmp["difference"]), p, alpha=alpha,
                                       higher_is_better=d == "maximize",
                                       family=len(tested))
    for r in rows:
        parts = [r["objectives"][n]["sentence"] for n in names if r["objectives"].get(n)]
        r["sentence"] = ("; ".join(parts) if parts else
                         "fewer than two seeds where it and the default both completed"
                         + ("" if every_outcome else " yet"))
        # the sweep's rule: a setting that fails or collapses on any seed wins nothing
        if caveat := caveat_text(r):
            r["sentence"] = f"{caveat}; " + r["sentence"]
    return {"id": confirmation["id"], "created_at": confirmation["created_at"],
            "seeds": seeds, "top": confirmation["top"], "objectives": names,
            "directions": directions, "runs_done": done, "runs_failed": len(failed),
            "runs_total": total, "complete": every_outcome, "alpha": alpha,
            "family": family,
            "failures": [{"setting": r["setting"], "seed": r["seed"], "reason": r["reason"]}
                         for r in failed],
            "settings": rows}


def _compare(setting: list[dict[str, float]], default: list[dict[str, float]],
             name: str) -> dict[str, Any] | None:
    """``name`` compared over the paired runs where both have a finite value (a seed on
    which either is NaN leaves the comparison, on both sides); ``None`` below two."""
    pairs = [(a.get(name, math.nan), b.get(name, math.nan))
             for a, b in zip(setting, default, strict=True)]
    pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 2:
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
    return (f"{name} (reported only, never selected on): {c['setting']['mean']:.3f} against "
            f"the default's {c['default']['mean']:.3f}, {d['mean']:+.3f} (95% CI "
            f"{d['low']:+.3f} to {d['high']:+.3f}), p = {format_p(d['p'])}, unadjusted")


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
        print(f"  {r['key']} ({len(r['seeds'])} paired seeds): {r['sentence']}", file=file)
        for name, c in r.get("reported", {}).items():
            print(f"    {reported_sentence(name, c)}", file=file)
    if any(summary.get("family", {}).values()):
        print(f"  (paired t test, Holm-adjusted across {holm_family_text(summary)}; "
              f"α = {summary['alpha']})", file=file)
