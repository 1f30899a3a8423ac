"""The search space: the registry's searched parameters, their ranges and the
define-by-run sampler.

Which parameters are searched, their default ranges or choices, log scales, aliases and
conditions all come from the registry (``trainer.params``); this module holds no list of
its own. Stage lengths are sampled so that stage1 + stage2 never exceeds the epoch
budget: stage 2's upper bound is computed from the sampled stage 1 (no invalid
configuration is ever sampled). λ is only sampled when the penalty is on, and nothing is
sampled where it cannot act (the registry's ``Acts``: the penalty where stage 2 is empty
and it does not run in stage 3, the suppression where gate and kl_weight coincide). A user
narrows or fixes any parameter from the command line (``--set lambda=10 --range
stage1_epochs=5:20``) or a YAML/JSON file, without editing code.
"""

from __future__ import annotations

import difflib
import json
import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trainer import params as registry
from trainer.params import Choices, Param, Range


class SpaceError(ValueError):
    """A search space that cannot be sampled; the message says why."""


def baseline_params(epochs: int) -> dict[str, Any]:
    """The method's own setting (thirds, lambda = 10, penalty on), from the registry.

    Enqueued first in a new study.
    """
    return registry.baseline(epochs)


#: Named departures from the method's default that comparisons put beside it (trainer
#: fields on top of ``baseline_params``): zay never suppressed (no staging, no penalty),
#: the published ``kl_weight`` suppression, and DIVA itself (no zay, so no penalty).
REFERENCE_SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "unsuppressed": {"staged_training": False, "use_independence_penalty": False},
    "kl_weight": {"zay_suppression": "kl_weight"},
    "diva": {"variant": "diva"},
}


def reference_settings(*names: str) -> dict[str, dict[str, Any]]:
    """Those of ``REFERENCE_SETTINGS`` named, in that order (all when none is)."""
    return {n: REFERENCE_SETTINGS[n] for n in (names or REFERENCE_SETTINGS)}


def default_bounds(p: Param, epochs: int) -> tuple[Any, ...]:
    """A searched parameter's default range ``(lo, hi)`` or choices for ``epochs`` (an
    ``opt_in`` one's is its default alone: pinned until a range is given)."""
    if p.opt_in:
        return (p.default, p.default) if isinstance(p.search, Range) else (p.default,)
    if isinstance(p.search, Range):
        return p.search.bounds(epochs)
    assert isinstance(p.search, Choices), p.name
    return tuple(p.search.values)


@dataclass(frozen=True, init=False)
class SearchSpace:
    """Ranges of the searched parameters; ``fixed`` pins any of them to one value.

    Built as ``SearchSpace(epochs=30, stage1_epochs=(5, 20), zay_suppression=("gate",
    "kl_weight"))``: each searched parameter of the registry is a keyword (a range
    ``(lo, hi)``, both inclusive, or a tuple of choices) and an attribute
    (``space.stage1_epochs``); those not given take the registry's default (epoch
    counts: ``(0, epochs)``, clipped to the budget when sampled).

    Attributes:
        epochs: The epoch budget of every trial.
        bounds: Each searched parameter's range or choices, in registry order.
        fixed: Parameters pinned to one value.
        base: The fixed ``RunConfig`` fields every trial shares (flat names, e.g.
            ``penalty_in_stage3``, ``variant``): where a parameter acts depends on them
            (:meth:`with_base`; empty: ``RunConfig``'s defaults).
    """

    epochs: int = 30
    bounds: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    base: Mapping[str, Any] = field(default_factory=dict)

    def __init__(self, epochs: int = 30, *, bounds: Mapping[str, Any] | None = None,
                 fixed: dict[str, Any] | None = None, base: Mapping[str, Any] | None = None,
                 **ranges: Any) -> None:
        searched = registry.searched_names()
        given = {**(bounds or {}), **ranges}
        unknown = sorted(set(given) - set(searched))
        if unknown:
            raise TypeError(f"SearchSpace got unexpected keyword argument(s) "
                            f"{', '.join(unknown)}; searched parameters are "
                            f"{', '.join(searched)}")
        merged = {p.name: tuple(given[p.name]) if p.name in given else default_bounds(p, epochs)
                  for p in registry.searched()}
        object.__setattr__(self, "epochs", epochs)
        object.__setattr__(self, "bounds", merged)
        object.__setattr__(self, "fixed", {} if fixed is None else fixed)
        object.__setattr__(self, "base", {} if base is None else dict(base))
        self.check()

    def with_base(self, base_config: Mapping[str, Any]) -> SearchSpace:
        """This space for trials that share ``base_config`` (a ``RunConfig.to_dict`` or
        its flat fields): what they keep fixed decides where a parameter acts."""
        return replace(self, base=registry.flat_config(base_config))

    def _run(self, drawn: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's flat fields as far as known: ``drawn`` over the fixed ones."""
        return {**self.base, "epochs": self.epochs, **drawn}

    def __getattr__(self, name: str) -> Any:
        bounds = self.__dict__.get("bounds")
        if bounds is not None and not name.startswith("__") and name in bounds:
            return bounds[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def check(self) -> None:
        """Raise SpaceError if no valid configuration can be sampled."""
        e = self.epochs
        if e < 1:
            raise SpaceError(f"epochs must be at least 1 (got {e})")
        searched = registry.searched()
        names = [p.name for p in searched]
        unknown = set(self.fixed) - set(names)
        if unknown:
            raise SpaceError(f"cannot fix {', '.join(sorted(unknown))}: searched parameters "
                             f"are {', '.join(names)}")
        budget = [p for p in searched if p.budget]
        for p in budget:
            lo, hi = self._range(p.name)
            if lo < 0 or hi < lo:
                raise SpaceError(f"{p.name} range {lo}:{hi} is empty or negative")
        lows = [self._range(p.name)[0] for p in budget]
        if sum(lows) > e:
            raise SpaceError(
                f"no valid configuration: the shortest stages ({' + '.join(map(str, lows))} "
                f"epochs) exceed the budget of {e} epochs"
            )
        for p in searched:
            if not isinstance(p.search, Range) or p.budget:
                continue
            lo, hi = self._range(p.name)
            if p.search.log and not 0 < lo <= hi:
                raise SpaceError(f"{p.name} range {lo}:{hi} must be positive and ordered "
                                 "(it is sampled log-uniformly)")
            if hi < lo:
                raise SpaceError(f"{p.name} range {lo}:{hi} is empty")
        for p in searched:
            if not isinstance(p.search, Choices):
                continue
            choices = self._choices(p.name)
            if p.allowed:
                bad = [v for v in choices if v not in p.allowed]
                if bad or not choices:
                    raise SpaceError(f"{p.name} choices {list(choices)} must be "
                                     f"non-empty and among {', '.join(p.allowed)}")
            elif not choices:
                raise SpaceError(f"{p.name} needs at least one choice")

    def _range(self, name: str) -> tuple[Any, Any]:
        if name in self.fixed:
            return self.fixed[name], self.fixed[name]
        return self.bounds[name]

    def _choices(self, name: str) -> tuple[Any, ...]:
        return (self.fixed[name],) if name in self.fixed else tuple(self.bounds[name])

    def sample(self, trial: Any) -> dict[str, Any]:
        """Sample one configuration with an Optuna trial (define-by-run).

        Parameters are suggested in registry order, each only where its conditions hold
        and it can act (for one of its choices) in the trial's stages; one not drawn keeps
        the trial's fixed value. An epoch count leaves room for the shortest of the epoch
        counts after it.
        """
        searched = registry.searched()
        params: dict[str, Any] = {}
        # epochs not yet taken, less the shortest lengths of the counts still to come
        left = self.epochs - sum(self._range(p.name)[0] for p in searched if p.budget)
        for p in searched:
            offered = self._choices(p.name) if isinstance(p.search, Choices) else (None,)
            if p.inert(self._run(params), offered):
                if p.budget:
                    left += self._range(p.name)[0]
                continue
            if isinstance(p.search, Choices):
                params[p.name] = _cat(trial, p.name, self._choices(p.name))
                continue
            lo, hi = self._range(p.name)
            if p.budget:
                left += lo
                hi = min(hi, left)
            if p.kind is int:
                params[p.name] = _int(trial, p.name, lo, hi)
            else:
                params[p.name] = (float(lo) if lo == hi else
                                  trial.suggest_float(p.name, lo, hi, log=p.search.log))
            if p.budget:
                left -= params[p.name]
        return params

    def admits(self, params: dict[str, Any]) -> bool:
        """Whether a configuration (e.g. the method's default) lies inside this space.

        Parameters missing from ``params`` are not checked (the baseline leaves some to
        the space); those that are inert in it (conditions that fail, stages where they
        cannot act) are ignored.
        """
        searched = registry.searched()
        if sum(params.get(p.name, 0) for p in searched if p.budget) > self.epochs:
            return False
        for p in searched:
            if p.name not in params or p.inert(self._run(params), (params[p.name],)):
                continue
            if isinstance(p.search, Range):
                lo, hi = self._range(p.name)
                if not lo <= params[p.name] <= hi:
                    return False
            elif params[p.name] not in self._choices(p.name):
                return False
        return True

    def baseline(self) -> dict[str, Any]:
        """The method's own setting in this space, whole: ``baseline_params`` plus the
        method's value of every other parameter the space leaves to the sampler (ranged
        or offered a choice: an ``opt_in`` KL weight, the penalty's pairs or measure, the
        suppression), so that no sampler draws any part of the default a study runs
        first. A parameter with one value in the space (fixed, or never ranged) keeps it.
        Where the method's value is outside the space, ``admits`` says so."""
        values = baseline_params(self.epochs)
        for p in registry.searched():
            if p.name in values or p.name in self.fixed or not p.applies(values):
                continue
            if len(set(self.bounds[p.name])) > 1:
                values[p.name] = p.method_value(self.epochs)
        return values

    def describe(self) -> dict[str, Any]:
        return {"epochs": self.epochs, **self.bounds, "fixed": self.fixed}


def _int(trial: Any, name: str, lo: int, hi: int) -> int:
    return int(lo) if lo == hi else trial.suggest_int(name, int(lo), int(hi))


def _cat(trial: Any, name: str, choices: tuple[Any, ...]) -> Any:
    return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, list(choices))


def _parse_value(name: str, text: str) -> Any:
    """A command-line value of ``name``, parsed by the registry's kind of it."""
    kind = registry.get(name).kind
    if kind is bool:
        low = text.lower()
        if low in ("true", "on", "1", "yes"):
            return True
        if low in ("false", "off", "0", "no"):
            return False
        raise SpaceError(f"{name} must be true or false (got {text!r})")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise SpaceError(f"{name} must be an integer (got {text!r})") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise SpaceError(f"{name} must be a number (got {text!r})") from None
    return text


def _is_range(name: str) -> bool:
    return isinstance(registry.get(name).search, Range)


def _trainer_settings() -> set[str]:
    """The names of a trainer configuration's fields (``epochs``, ``batch_size``, ...)."""
    from trainer import RunConfig

    names: set[str] = set()
    for key, value in RunConfig().to_dict().items():
        names |= set(value) if isinstance(value, dict) else {key}
    return names


def _unknown_name(key: str, where: str) -> SpaceError:
    """The error for ``key``, which names no search parameter (in ``where``: a flag or a
    file): a trainer setting is said to be one; otherwise the closest name or alias when
    one is close (a typo), else the list."""
    searched = registry.searched()
    if key in _trainer_settings():
        return SpaceError(f"{where}: {key} is a trainer setting that every trial shares, not "
                          "a search parameter; give it as the sweep's own option (e.g. "
                          "--epochs) or in --base-config")
    words = {p.name: p.name for p in searched} | {a: p.name for p in searched
                                                  for a in p.aliases}
    close = difflib.get_close_matches(key, list(words), n=1, cutoff=0.6)
    if close:
        hint = close[0] + (f" ({words[close[0]]})" if words[close[0]] != close[0] else "")
        return SpaceError(f"{where}: unknown search parameter {key!r}; did you mean {hint}?")
    return SpaceError(f"{where}: unknown search parameter {key!r}; search parameters are "
                      f"{', '.join(p.name for p in searched)}")


#: "5-15", "0.1-10", "1e-3-10": a range written with a dash
_NUMBER = r"[-+]?[\d.]+(?:[eE][-+]?\d+)?"
_DASHED_RANGE = re.compile(rf"\s*({_NUMBER})\s*-\s*({_NUMBER})\s*")


def _range_values(key: str, name: str, bounds: str) -> tuple[Any, ...]:
    """``--range KEY=BOUNDS`` parsed: ``(lo, hi)`` from ``LO:HI`` or the choices
    ``A,B,C``; a value that does not parse says how a range is written."""
    try:
        if ":" in bounds:
            lo, _, hi = bounds.partition(":")
            return (_parse_value(name, lo), _parse_value(name, hi))
        return tuple(_parse_value(name, v) for v in bounds.split(","))
    except SpaceError as exc:
        hint = ""
        if _is_range(name):
            dashed = _DASHED_RANGE.fullmatch(bounds) if ":" not in bounds else None
            hint = ("; a range is written LO:HI" if dashed is None else
                    f"; a range is written LO:HI: --range {key}={dashed[1]}:{dashed[2]}")
        raise SpaceError(f"--range {key}={bounds}: {exc}{hint}") from None


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
        kind = "a range [lo, hi]" if _is_range(name) else "a list of choices"
        raise SpaceError(f"{path}: {key} must be {kind} (got {value!r}); to fix one value "
                         f"write it under 'fixed:' ({key}: {value!r})")
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    if _is_range(name) and (len(value) != 2 or not numbers):
        raise SpaceError(f"{path}: {key} must be a range of two numbers [lo, hi] "
                             f"(got {value!r})")
    return tuple(value)


def parameter_help() -> str:
    """The searched parameters for ``--help``: name (aliases), what it is, its default
    range or choices (an ``opt_in`` one: searched only when given a range), when it
    applies and the method's default; one entry a line."""
    searched = registry.searched_names()
    lines = ["search parameters (NAME or an alias, for --set, --range and --space):"]
    for p in registry.searched():
        head = p.name + (f" ({', '.join(p.aliases)})" if p.aliases else "")
        if p.opt_in:
            example = (f"{p.search.low:g}:{p.search.high:g}" if isinstance(p.search, Range)
                       else ",".join(_text(v) for v in p.search.values))
            domain = (f"only when given a range (e.g. --range {p.name}={example}"
                      + (", sampled on a log scale)" if isinstance(p.search, Range)
                         and p.search.log else ")"))
        elif isinstance(p.search, Range):
            hi = "EPOCHS" if p.search.high is None else f"{p.search.high:g}"
            domain = f"{p.search.low:g}:{hi}" + (", log scale" if p.search.log else "")
            others = [q.name for q in registry.searched() if q.budget and q is not p]
            if p.budget and others:
                domain += f", with {' + '.join(others)} at most EPOCHS"
        else:
            assert isinstance(p.search, Choices)
            domain = ",".join(_text(v) for v in p.search.values)
            if p.allowed:
                domain += f" (any of {','.join(map(_text, p.allowed))})"
        conds = [f"{parent} is {' or '.join(map(_text, value))}" if isinstance(value, tuple)
                 else f"{parent} is {_text(value)}" for parent, value in p.when
                 if parent in searched]
        if p.acts is not None and p.acts.text():
            conds.append(p.acts.text())
        default = f"epochs // {p.share}" if p.share and p.default is None else _text(p.default)
        text = (f"{head}: {p.help}; searched {domain}"
                + (f", only when {' and '.join(conds)}" if conds else "")
                + f"; method default {default}")
        lines.append(textwrap.fill(text, width=78, initial_indent="  ",
                                   subsequent_indent="      "))
    return "\n".join(lines)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def build_space(
    epochs: int,
    *,
    file: str | Path | None = None,
    fixes: list[str] = (),  # type: ignore[assignment]
    ranges: list[str] = (),  # type: ignore[assignment]
) -> SearchSpace:
    """A space from defaults, then a YAML/JSON file, then ``--set``/``--range`` strings."""
    space = SearchSpace(epochs=epochs)  # the registry's ranges; epoch counts (0, epochs)
    searched = registry.searched_names()
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
            name = registry.canonical(key)
            if name not in searched:
                raise _unknown_name(key, str(path))
            updates[name] = _file_entry(path, key, name, value)
    for item in ranges:
        key, _, bounds = item.partition("=")
        if not bounds:
            raise SpaceError(f"bad --range {item!r}; use NAME=LO:HI or NAME=A,B,C")
        name = registry.canonical(key)
        if name not in searched:
            raise _unknown_name(key, f"--range {item}")
        updates[name] = _range_values(key, name, bounds)
    for item in fixes:
        key, _, value = item.partition("=")
        if not value:
            raise SpaceError(f"bad --set {item!r}; use NAME=VALUE with NAME one of "
                             f"{', '.join(searched)}")
        name = registry.canonical(key)
        if name not in searched:
            raise _unknown_name(key, f"--set {item}")
        try:
            fixed[name] = _parse_value(name, value)
        except SpaceError as exc:
            many = ":" in value or "," in value  # a range or choices given to --set
            raise SpaceError(f"--set {item}: {exc}" + ("; --set fixes one value, --range "
                                                       "NAME=LO:HI or NAME=A,B,C searches "
                                                       "several" if many else "")) from None
    for name in list(fixed):
        fixed[registry.canonical(name)] = fixed.pop(name)
    try:
        return replace(space, **updates, fixed=fixed)
    except TypeError as exc:  # e.g. a fixed epoch count that is not a number
        raise SpaceError(f"search space does not fit together: {exc}") from None
