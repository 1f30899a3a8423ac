"""What a confirmation found: its runs as paired comparisons against the default.

Apart from ``search.confirm`` (which runs confirmations through Ray Tune) so that
``status`` and the report read a confirmation without importing Ray.
"""

from __future__ import annotations

import math
from typing import Any

from search import storage as db
from search.paired import ALPHA, Paired, describe, format_p, holm, paired_difference

#: the key of the method's default among a confirmation's settings
DEFAULT = "default"
#: metrics compared beside the objectives where the runs have them, but never selected
#: on: the test domain's accuracy (``--test-domain``) is reported only
REPORTED_ONLY = ("acc_y_test_domain",)


def summarize(confirmation: dict[str, Any], *, alpha: float = ALPHA) -> dict[str, Any]:
    """A confirmation's runs as paired comparisons against the default.

    For each setting and objective: the setting's and the default's mean ± SE over the
    seeds where both completed, the paired difference (``search.paired.Paired``) and its
    p-value after Holm's correction across the settings; and a sentence.
    """
    names = confirmation["objectives"]["names"]
    directions = confirmation["objectives"]["directions"]
    complete = {(r["setting"], r["seed"]): r["metrics"] for r in confirmation["runs"]
                if r["state"] == "complete"}
    failed = [r for r in confirmation["runs"] if r["state"] == "failed"]
    seeds = confirmation["seeds"]
    total = len(seeds) * len(confirmation["settings"])
    rows = []
    for setting in confirmation["settings"][1:]:
        both = [s for s in seeds if (setting["key"], s) in complete and (DEFAULT, s) in complete]
        entry = {"key": setting["key"], "number": setting["number"],
                 "params": setting["params"], "search_values": setting["values"],
                 "seeds": both, "objectives": {}}
        for name in names:
            a = [complete[(setting["key"], s)].get(name, math.nan) for s in both]
            b = [complete[(DEFAULT, s)].get(name, math.nan) for s in both]
            if len(both) < 2 or not all(math.isfinite(v) for v in a + b):
                entry["objectives"][name] = None
                continue
            diff = paired_difference(a, b)
            entry["objectives"][name] = {"setting": _mean_se(a), "default": _mean_se(b),
                                         "difference": diff.as_dict()}
        entry["reported"] = {}
        for name in REPORTED_ONLY:  # unadjusted: no selection rests on them
            a = [complete[(setting["key"], s)].get(name, math.nan) for s in both]
            b = [complete[(DEFAULT, s)].get(name, math.nan) for s in both]
            if len(both) >= 2 and all(math.isfinite(v) for v in a + b):
                entry["reported"][name] = {"setting": _mean_se(a), "default": _mean_se(b),
                                           "difference": paired_difference(a, b).as_dict()}
        collapsed = sum(complete[(setting["key"], s)].get("zay_collapsed", 0.0) >= 1.0
                        for s in seeds if (setting["key"], s) in complete)
        entry["collapsed"] = int(collapsed)
        rows.append(entry)
    for name, d in zip(names, directions, strict=True):
        tested = [r for r in rows if r["objectives"].get(name)]
        adjusted = holm([r["objectives"][name]["difference"]["p"] for r in tested])
        for r, p in zip(tested, adjusted, strict=True):
            cmp = r["objectives"][name]
            cmp["p_holm"] = p
            cmp["sentence"] = describe(name, Paired(**cmp["difference"]), p, alpha=alpha,
                                       higher_is_better=d == "maximize")
    for r in rows:
        parts = [r["objectives"][n]["sentence"] for n in names if r["objectives"].get(n)]
        r["sentence"] = ("; ".join(parts) if parts else
                         "not enough paired seeds yet (needs two where both completed)")
    done = len(complete)
    return {"id": confirmation["id"], "created_at": confirmation["created_at"],
            "seeds": seeds, "top": confirmation["top"], "objectives": names,
            "directions": directions, "runs_done": done, "runs_failed": len(failed),
            "runs_total": total, "complete": done == total, "alpha": alpha,
            "failures": [{"setting": r["setting"], "seed": r["seed"], "reason": r["reason"]}
                         for r in failed],
            "settings": rows}


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
    """The newest confirmation of a study, summarised (``None`` if it has none)."""
    stored = db.read_confirmations(engine, study_name)
    return summarize(stored[-1]) if stored else None


def print_confirmation(summary: dict[str, Any], file=None) -> None:
    import sys

    file = file or sys.stdout
    state = ("complete" if summary["complete"] else
             f"{summary['runs_done']} of {summary['runs_total']} runs done")
    print(f"confirmed against the default on {len(summary['seeds'])} fresh seeds "
          f"({', '.join(map(str, summary['seeds']))}): {state}"
          + (f", {summary['runs_failed']} failed" if summary["runs_failed"] else ""),
          file=file)
    for r in summary["settings"]:
        print(f"  {r['key']} ({len(r['seeds'])} paired seeds): {r['sentence']}", file=file)
        for name, c in r.get("reported", {}).items():
            print(f"    {reported_sentence(name, c)}", file=file)
    if summary["settings"]:
        print(f"  (paired t test, Holm-adjusted across the {len(summary['settings'])} "
              f"setting{'s' if len(summary['settings']) != 1 else ''}; α = "
              f"{summary['alpha']})", file=file)
