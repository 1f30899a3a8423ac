"""What the driver asks a worker and what the worker answers: the one contract.

Ray Tune carries both as flat dicts: the request is a Ray trial's ``config``, the answer
is what the worker passes to ``tune.report`` (one row per epoch, then one final result).
This module is the only place that writes or reads those dicts; the driver's side
(searchers, schedulers) and the worker's side build and read the types below.

**The request** (``Request``): the base configuration, one or more settings (an Optuna
trial's parameters and its number), the objective, the thread count and ``--import``
modules, and optionally a ``Replication`` (replicate seeds on a pinned split, and
leave-one-domain-out folds). Several settings are a population: the worker trains them
as one vectorised model and answers for each.

**The answer.** Every epoch a row of metrics (``epoch_message``), carrying its setting's
index (``MEMBER``) in a population; a refilling population's asks for more settings
(``refill_message``). At the end one ``final`` result: for one setting its ``Outcome``
(final metrics, the run's configuration and correlations, the epoch row it ended on, the
replicates' seeds and per-seed values, the LODO folds), its ``Failure`` (why and where)
or ``Pruned`` (stopped at a rung, with its row there); for a population one per setting,
in order. ``CoordinatorClient`` is the worker's end of the driver's coordinator actor,
through which the asked settings and the rung decisions come back. Where a result carries a
structure, its key ends in ``_json`` and the value is JSON text (Ray's result dicts hold
scalars and strings); nothing outside this module builds or parses such a key.

``read_final`` turns any result Tune hands a searcher (a solo final, a population's
final, a failure, or the epoch row a scheduler stopped) into the answers it holds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "LOST",
    "MEMBER",
    "Failure",
    "Outcome",
    "Pruned",
    "Replication",
    "Request",
    "Setting",
    "answer_message",
    "decode_answer",
    "epoch_message",
    "own_metrics",
    "population_final",
    "read_answer",
    "read_epoch",
    "read_final",
    "read_refill",
    "refill_message",
]

#: key of a setting's index in a population's epoch rows
MEMBER = "member"
#: the reason of a trial whose worker died on every retry
LOST = "worker lost: its process or node died on every retry"
#: key of a population's ask for more settings (its value: how many)
REFILL = "refill_settings"
REFILL_FROM = "refill_from"  # and the index of the first setting it asks for
ANSWER_OF = "answer_of"  # a refilling population's setting that has ended (its index)
#: the request's key of its replication (what ``Replication`` encodes to)
REPLICATES = "replicates"
#: an outcome's structured user attributes (beside its metrics)
OUTCOME_ATTRS = ("replicate_seeds", "replicate_values", "lodo_domains")
#: keys of a result that Ray adds itself
RAY_KEYS = frozenset({
    "done", "training_iteration", "trial_id", "date", "timestamp", "time_this_iter_s",
    "time_total_s", "pid", "hostname", "node_ip", "config", "time_since_restore",
    "iterations_since_restore", "checkpoint_dir_name", "experiment_tag"})


def own_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a result that are ours (Ray's bookkeeping and text left out)."""
    return {k: float(v) for k, v in result.items()
            if k not in RAY_KEYS and not k.startswith("config/")
            and isinstance(v, int | float) and not isinstance(v, bool)}


# -- the request --------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One setting to train: sampled parameters over the base configuration."""

    params: dict[str, Any]
    optuna_number: int | None = None  # the Optuna trial it answers (none for planned runs)

    def encode(self) -> dict[str, Any]:
        out: dict[str, Any] = {"params": self.params}
        if self.optuna_number is not None:
            out["optuna_number"] = self.optuna_number
        return out

    @classmethod
    def decode(cls, d: Mapping[str, Any]) -> Setting:
        number = d.get("optuna_number")
        return cls(dict(d["params"]), None if number is None else int(number))


@dataclass(frozen=True)
class Replication:
    """A setting's runs: each seed on the pinned split, each once per held-out fold."""

    seeds: tuple[int, ...]
    split_seed: int
    folds: tuple[int, ...] | None = None

    def runs(self) -> list[tuple[int, int | None]]:
        """``(seed, fold)`` of every run, fold by fold."""
        return [(seed, fold) for fold in (self.folds or (None,)) for seed in self.seeds]


@dataclass(frozen=True)
class Request:
    """What one Ray trial trains (``population``: the settings as one population, each
    answered on its own)."""

    base: dict[str, Any]
    settings: tuple[Setting, ...]
    objective: dict[str, Any] = field(default_factory=dict)  # {}: the default objective
    threads: int = 1
    imports: tuple[str, ...] = ()
    replication: Replication | None = None
    population: bool = False
    #: the driver's coordinator (``search.driver.coordinator``) a population asks for
    #: refills and rung decisions, by its Ray actor name; ``None``: neither
    coordinator: str | None = None
    refill: bool = False  # a freed slot takes the next trial (needs a coordinator)
    rungs: tuple[int, ...] = ()  # MO-ASHA's rungs the coordinator decides at

    def runs(self) -> list[tuple[int | None, int | None]]:
        """Each setting's runs as ``(seed, fold)``; ``[(None, None)]``: one plain run."""
        return self.replication.runs() if self.replication else [(None, None)]

    def to_config(self) -> dict[str, Any]:
        """The request as a Ray trial's config."""
        config: dict[str, Any] = {}
        if self.population:
            config["members"] = [s.encode() for s in self.settings]
        else:
            config.update(self.settings[0].encode())
        rep = self.replication
        config.update(base=self.base, objective=dict(self.objective), threads=self.threads,
                      imports=list(self.imports),
                      **{REPLICATES: None if rep is None else {
                          "seeds": list(rep.seeds), "split_seed": rep.split_seed,
                          "folds": None if rep.folds is None else list(rep.folds)}})
        if self.coordinator is not None:
            config.update(coordinator=self.coordinator, refill=self.refill,
                          rungs=list(self.rungs))
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Request:
        """A Ray trial's config as the request it encodes."""
        if "members" in config:
            settings = tuple(Setting.decode(m) for m in config["members"])
        else:
            settings = (Setting.decode(config),)
        rep = config.get(REPLICATES)
        return cls(base=config["base"], settings=settings,
                   objective=dict(config.get("objective") or {}),
                   threads=int(config.get("threads") or 1),
                   imports=tuple(config.get("imports", ())),
                   replication=None if not rep else Replication(
                       tuple(int(s) for s in rep["seeds"]), int(rep["split_seed"]),
                       tuple(int(k) for k in rep["folds"]) if rep.get("folds") else None),
                   population="members" in config, coordinator=config.get("coordinator"),
                   refill=bool(config.get("refill", False)),
                   rungs=tuple(int(r) for r in config.get("rungs", ())))


# -- the answer ---------------------------------------------------------------------------


def epoch_message(row: Mapping[str, float], member: int | None = None) -> dict[str, float]:
    """An epoch row as the worker reports it (``member``: its setting in a population)."""
    out = dict(row)
    if member is not None:
        out[MEMBER] = float(member)
    return out


def refill_message(settings: int, start: int) -> dict[str, float]:
    """A population's ask for ``settings`` more settings (slots freed), through Tune;
    ``start`` is how many settings it holds already (the index of the first one asked)."""
    return {REFILL: float(settings), REFILL_FROM: float(start)}


def read_refill(result: Mapping[str, Any]) -> tuple[int, int] | None:
    """A population's ask as ``(settings, start)`` (``None``: not an ask)."""
    if REFILL not in result:
        return None
    return int(result[REFILL]), int(result.get(REFILL_FROM, 0))


def read_epoch(result: Mapping[str, Any]) -> tuple[int | None, dict[str, Any]]:
    """An epoch report as (its setting's index in a population or ``None``, its row)."""
    member = result.get(MEMBER)
    row = {k: v for k, v in result.items() if k != MEMBER}
    return (None if member is None else int(member)), row


@dataclass(frozen=True)
class Failure:
    """A setting that raised, or whose worker was lost: ``details`` holds ``reason`` (one
    line) and where available the exception's type, message and traceback, the epoch,
    stage and phase, and the replicate seed and fold that failed."""

    details: dict[str, Any]

    @property
    def reason(self) -> str:
        return str(self.details.get("reason", "failed"))

    def at_run(self, seed: int | None, fold: int | None = None) -> Failure:
        """This failure with the replicate seed (and LODO fold) that failed named."""
        where = f"replicate seed {seed}" + (f", held-out domain {fold}"
                                             if fold is not None else "")
        details = {**self.details, "reason": f"{where}: {self.reason}", "seed": seed}
        if fold is not None:
            details["fold"] = fold
        return Failure(details)

    def encode(self) -> dict[str, Any]:
        return {"final": 1.0, "trial_failed": 1.0, "failure_json": json.dumps(self.details)}


@dataclass(frozen=True)
class Outcome:
    """A setting's finished run(s): ``metrics`` its final numbers (the means, with
    replicates), and beside them what the study stores as user attributes and
    artifacts."""

    metrics: dict[str, float]
    config: dict[str, Any] | None = None  # the run's RunConfig.to_dict()
    correlations: dict[str, Any] | None = None
    last_epoch: dict[str, float] | None = None  # the epoch row the run ended on
    replicate_seeds: list[int] | None = None
    replicate_values: dict[str, list[float]] | None = None  # per-seed values
    lodo_domains: list[int] | None = None

    def attrs(self) -> dict[str, Any]:
        """The structured user attributes this outcome carries."""
        return {k: getattr(self, k) for k in OUTCOME_ATTRS if getattr(self, k) is not None}

    def with_metrics(self, **values: float) -> Outcome:
        return replace(self, metrics={**self.metrics, **values})

    def encode(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.metrics, "final": 1.0}
        for key in ("config", "correlations", "last_epoch", *OUTCOME_ATTRS):
            value = getattr(self, key)
            if value is not None:
                out[f"{key}_json"] = json.dumps(value)
        return out


@dataclass(frozen=True)
class Pruned:
    """A population member stopped at a rung: ``row`` is its (replicate-averaged) epoch
    row there, the last it trained."""

    row: dict[str, float]

    def encode(self) -> dict[str, Any]:
        return {"final": 1.0, "trial_pruned": 1.0, "last_epoch_json": json.dumps(self.row)}


Answer = Outcome | Failure | Pruned


def decode_answer(result: Mapping[str, Any]) -> Answer:
    """One setting's final result (``Outcome.encode``, ``Failure.encode`` or
    ``Pruned.encode``)."""
    if result.get("trial_failed"):
        raw = result.get("failure_json")
        return Failure(json.loads(raw) if raw else {})
    if result.get("trial_pruned"):
        return Pruned(json.loads(result["last_epoch_json"]))
    metrics = own_metrics(result)
    metrics.pop("final", None)
    kept = {key: json.loads(result[f"{key}_json"])
            for key in ("config", "correlations", "last_epoch", *OUTCOME_ATTRS)
            if f"{key}_json" in result}
    return Outcome(metrics, **kept)


def answer_message(setting: int, answer: Answer) -> dict[str, Any]:
    """Setting ``setting``'s answer, sent by a refilling population as soon as the
    setting ends, so that the driver tells its trial then, not when the population ends
    (the population's final result holds it again; the driver tells a trial once)."""
    return {ANSWER_OF: float(setting), "answer_json": json.dumps(answer.encode())}


def read_answer(result: Mapping[str, Any]) -> tuple[int, Answer] | None:
    """An early answer as ``(setting, answer)`` (``None``: not one)."""
    if ANSWER_OF not in result:
        return None
    return int(result[ANSWER_OF]), decode_answer(json.loads(result["answer_json"]))


def population_final(answers: Sequence[Answer], members: int) -> dict[str, Any]:
    """A population's final result: every setting's answer, in order; ``members`` counts
    the runs trained (settings x replicate runs)."""
    return {"final": 1.0, "members_json": json.dumps([a.encode() for a in answers]),
            "population": float(members)}


def read_final(result: Mapping[str, Any] | None, size: int | None = None
               ) -> list[Answer] | None:
    """The answers a final result holds: one per setting (``size`` of a population, or
    one), in order; ``None`` where the result is not final (the row a scheduler or a
    stop cut the trial on). A population result without its members' answers (the
    whole population raised) is that answer for each of its ``size`` settings."""
    result = result or {}
    if not result.get("final"):
        return None
    if "members_json" in result:
        return [decode_answer(r) for r in json.loads(result["members_json"])]
    return [decode_answer(result)] * (size or 1)


class CoordinatorClient:
    """A worker's line to the driver's coordinator (``search.driver.coordinator``), the
    Ray actor named in its request: ask for the settings that fill freed slots, and for
    the rung decisions of its settings.

    An ask for settings goes through Tune (``refill_message``: the driver's searcher asks
    Optuna for the trials, so they are counted, seeded and tagged as any other) and the
    answer comes back through the actor, which holds it until the worker takes it.
    """

    POLL_S = 0.02
    #: how long a worker waits for its settings before it gives up refilling (the driver
    #: answers within one Tune loop; it is gone if it takes this long)
    WAIT_S = 600.0

    def __init__(self, name: str, trial_id: str, report) -> None:
        import ray

        if not trial_id:
            raise ValueError("a population with a coordinator needs its Ray trial id")
        self.actor = ray.get_actor(name)
        self.trial_id, self.report = trial_id, report

    def refill(self, settings: int, start: int) -> list[Setting]:
        """Up to ``settings`` new settings, the ``start``-th on (none once the study's
        total is reached or the driver is stopping)."""
        import time

        import ray

        self.report(refill_message(settings, start))
        deadline = time.monotonic() + self.WAIT_S
        while time.monotonic() < deadline:
            got = ray.get(self.actor.take.remote(self.trial_id))
            if got is not None:
                return [Setting.decode(s) for s in got]
            time.sleep(self.POLL_S)
        return []

    def stops(self, number: int, row: Mapping[str, float]) -> bool:
        """Whether the setting of Optuna trial ``number`` stops at the rung of ``row``."""
        import ray

        return ray.get(self.actor.decide.remote(number, dict(row))) == "stop"
