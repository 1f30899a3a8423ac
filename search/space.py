"""The search space, in one file: defaults, ranges and the define-by-run sampler.

Stage lengths are sampled so that stage1 + stage2 never exceeds the epoch budget: stage 2's
upper bound is computed from the sampled stage 1 (no invalid configuration is ever
sampled). λ is only sampled when the penalty is on. A user narrows or fixes any
parameter from the command line (``--set lambda=10 --range stage1_epochs=5:20``) or a
YAML/JSON file, without editing code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from trainer._config import PENALTY_MEASURES, ZAY_SUPPRESSION_MODES


class SpaceError(ValueError):
    """A search space that cannot be sampled; the message says why."""


# The method's own setting: thirds, lambda = 10, penalty on. Enqueued first in a new study.
def baseline_params(epochs: int) -> dict[str, Any]:
    return {
        "stage1_epochs": epochs // 3,
        "stage2_epochs": epochs // 3,
        "use_independence_penalty": True,
        "independence_penalty": 10.0,
    }


@dataclass(frozen=True)
class SearchSpace:
    """Ranges of the searched parameters; ``fixed`` pins any of them to one value."""

    epochs: int = 30
    stage1_epochs: tuple[int, int] = (0, 30)  # inclusive; clipped to the budget
    stage2_epochs: tuple[int, int] = (0, 30)
    independence_penalty: tuple[float, float] = (0.1, 100.0)  # log-uniform
    use_independence_penalty: tuple[bool, ...] = (True, False)
    zay_suppression: tuple[str, ...] = ("gate",)  # add modes to search them
    penalty_measure: tuple[str, ...] = ("corr",)
    fixed: dict[str, Any] = field(default_factory=dict)

    SEARCHED = ("stage1_epochs", "stage2_epochs", "use_independence_penalty",
                "independence_penalty", "zay_suppression", "penalty_measure")

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise SpaceError if no valid configuration can be sampled."""
        e = self.epochs
        if e < 1:
            raise SpaceError(f"epochs must be at least 1 (got {e})")
        unknown = set(self.fixed) - set(self.SEARCHED)
        if unknown:
            raise SpaceError(f"cannot fix {', '.join(sorted(unknown))}: searched parameters "
                             f"are {', '.join(self.SEARCHED)}")
        s1_lo, s1_hi = self._range("stage1_epochs")
        s2_lo, s2_hi = self._range("stage2_epochs")
        for name, (lo, hi) in (("stage1_epochs", (s1_lo, s1_hi)),
                               ("stage2_epochs", (s2_lo, s2_hi))):
            if lo < 0 or hi < lo:
                raise SpaceError(f"{name} range {lo}:{hi} is empty or negative")
        if s1_lo + s2_lo > e:
            raise SpaceError(
                f"no valid configuration: the shortest stages ({s1_lo} + {s2_lo} epochs) "
                f"exceed the budget of {e} epochs"
            )
        lam_lo, lam_hi = self._range("independence_penalty")
        if not 0 < lam_lo <= lam_hi:
            raise SpaceError(f"independence_penalty range {lam_lo}:{lam_hi} must be positive "
                             "and ordered (it is sampled log-uniformly)")
        for name, allowed in (("zay_suppression", ZAY_SUPPRESSION_MODES),
                              ("penalty_measure", PENALTY_MEASURES)):
            bad = [v for v in self._choices(name) if v not in allowed]
            if bad or not self._choices(name):
                raise SpaceError(f"{name} choices {list(self._choices(name))} must be "
                                 f"non-empty and among {', '.join(allowed)}")
        if not self._choices("use_independence_penalty"):
            raise SpaceError("use_independence_penalty needs at least one choice")

    def _range(self, name: str) -> tuple[Any, Any]:
        if name in self.fixed:
            return self.fixed[name], self.fixed[name]
        return getattr(self, name)

    def _choices(self, name: str) -> tuple[Any, ...]:
        return (self.fixed[name],) if name in self.fixed else tuple(getattr(self, name))

    def sample(self, trial: Any) -> dict[str, Any]:
        """Sample one configuration with an Optuna trial (define-by-run)."""
        e = self.epochs
        s1_lo, s1_hi = self._range("stage1_epochs")
        s2_lo, s2_hi = self._range("stage2_epochs")
        params: dict[str, Any] = {}
        # stage 1 leaves room for the shortest stage 2; stage 2 gets what stage 1 left
        s1_hi = min(s1_hi, e - s2_lo)
        params["stage1_epochs"] = _int(trial, "stage1_epochs", s1_lo, s1_hi)
        s2_hi = min(s2_hi, e - params["stage1_epochs"])
        params["stage2_epochs"] = _int(trial, "stage2_epochs", s2_lo, s2_hi)
        params["use_independence_penalty"] = _cat(
            trial, "use_independence_penalty", self._choices("use_independence_penalty"))
        if params["use_independence_penalty"]:
            lam_lo, lam_hi = self._range("independence_penalty")
            params["independence_penalty"] = (
                float(lam_lo) if lam_lo == lam_hi
                else trial.suggest_float("independence_penalty", lam_lo, lam_hi, log=True)
            )
            params["penalty_measure"] = _cat(trial, "penalty_measure",
                                             self._choices("penalty_measure"))
        params["zay_suppression"] = _cat(trial, "zay_suppression",
                                         self._choices("zay_suppression"))
        return params

    def admits(self, params: dict[str, Any]) -> bool:
        """Whether a configuration (e.g. the method's default) lies inside this space."""
        def within(name: str) -> bool:
            lo, hi = self._range(name)
            return lo <= params[name] <= hi

        if params["stage1_epochs"] + params["stage2_epochs"] > self.epochs:
            return False
        if not (within("stage1_epochs") and within("stage2_epochs")):
            return False
        on = params["use_independence_penalty"]
        if on not in self._choices("use_independence_penalty"):
            return False
        return not on or within("independence_penalty")

    def describe(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _int(trial: Any, name: str, lo: int, hi: int) -> int:
    return int(lo) if lo == hi else trial.suggest_int(name, int(lo), int(hi))


def _cat(trial: Any, name: str, choices: tuple[Any, ...]) -> Any:
    return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, list(choices))


def _parse_value(name: str, text: str) -> Any:
    if name == "use_independence_penalty":
        low = text.lower()
        if low in ("true", "on", "1", "yes"):
            return True
        if low in ("false", "off", "0", "no"):
            return False
        raise SpaceError(f"{name} must be true or false (got {text!r})")
    if name in ("stage1_epochs", "stage2_epochs"):
        try:
            return int(text)
        except ValueError:
            raise SpaceError(f"{name} must be an integer (got {text!r})") from None
    if name == "independence_penalty":
        try:
            return float(text)
        except ValueError:
            raise SpaceError(f"{name} must be a number (got {text!r})") from None
    return text


_RANGES = ("stage1_epochs", "stage2_epochs", "independence_penalty")


def _read_space_file(path: Path) -> dict[str, Any]:
    """A space file's mapping; a malformed file is one SpaceError line."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpaceError(f"cannot read search-space file {path}: {exc}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text) or {}
        else:
            raw = json.loads(text)
    except Exception as exc:  # yaml.YAMLError, json.JSONDecodeError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpaceError(f"search-space file {path} is not valid "
                         f"{'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}: "
                         f"{first}") from None
    if not isinstance(raw, dict):
        raise SpaceError(f"{path} must hold a mapping of parameter names")
    return raw


def _file_entry(path: Path, key: str, name: str, value: Any) -> tuple[Any, ...]:
    """A range ``[lo, hi]`` or a list of choices from a space file, checked for shape."""
    if not isinstance(value, list | tuple):
        kind = "a range [lo, hi]" if name in _RANGES else "a list of choices"
        raise SpaceError(f"{path}: {key} must be {kind} (got {value!r}); to fix one value "
                         f"write it under 'fixed:' ({key}: {value!r})")
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    if name in _RANGES and (len(value) != 2 or not numbers):
        raise SpaceError(f"{path}: {key} must be a range of two numbers [lo, hi] "
                             f"(got {value!r})")
    return tuple(value)


ALIASES = {"lambda": "independence_penalty", "penalty": "use_independence_penalty",
           "stage1": "stage1_epochs", "stage2": "stage2_epochs",
           "suppression": "zay_suppression", "measure": "penalty_measure"}


def build_space(
    epochs: int,
    *,
    file: str | Path | None = None,
    fixes: list[str] = (),  # type: ignore[assignment]
    ranges: list[str] = (),  # type: ignore[assignment]
) -> SearchSpace:
    """A space from defaults, then a YAML/JSON file, then ``--set``/``--range`` strings."""
    space = SearchSpace(epochs=epochs, stage1_epochs=(0, epochs), stage2_epochs=(0, epochs))
    updates: dict[str, Any] = {}
    fixed: dict[str, Any] = {}
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise SpaceError(f"search-space file {path} does not exist")
        raw = _read_space_file(path)
        fixed_part = raw.pop("fixed", {}) or {}
        if not isinstance(fixed_part, dict):
            raise SpaceError(f"{path}: 'fixed' must map parameter names to values")
        fixed.update(fixed_part)
        for key, value in raw.items():
            name = ALIASES.get(key, key)
            if name not in SearchSpace.SEARCHED:
                raise SpaceError(f"{path}: unknown parameter {key!r}")
            updates[name] = _file_entry(path, key, name, value)
    for item in ranges:
        name, _, bounds = item.partition("=")
        name = ALIASES.get(name, name)
        if name not in SearchSpace.SEARCHED or not bounds:
            raise SpaceError(f"bad --range {item!r}; use NAME=LO:HI or NAME=A,B,C")
        if ":" in bounds:
            lo, _, hi = bounds.partition(":")
            updates[name] = (_parse_value(name, lo), _parse_value(name, hi))
        else:
            updates[name] = tuple(_parse_value(name, v) for v in bounds.split(","))
    for item in fixes:
        name, _, value = item.partition("=")
        name = ALIASES.get(name, name)
        if name not in SearchSpace.SEARCHED or not value:
            raise SpaceError(f"bad --set {item!r}; use NAME=VALUE with NAME one of "
                             f"{', '.join(SearchSpace.SEARCHED)}")
        fixed[name] = _parse_value(name, value)
    for name in list(fixed):
        fixed[ALIASES.get(name, name)] = fixed.pop(name)
    try:
        return replace(space, **updates, fixed=fixed)
    except TypeError as exc:  # e.g. a fixed epoch count that is not a number
        raise SpaceError(f"search space does not fit together: {exc}") from None
