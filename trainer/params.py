"""The tunable parameters of the method, each declared once (after DomainBed's
``hparams_registry``).

One :class:`Param` per parameter holds its name (a ``RunConfig`` field), the method's
default, aliases, the range or choices a sweep searches (and whether on a log scale),
when it applies (e.g. λ only while the penalty is on), help text and report labels.
Everything else reads it: the ``RunConfig`` defaults of these fields, the trainer's
flags and their help, the search space with its ``--set``/``--range``/space-file names
and its baseline trial (the method's default setting), the sweep's help, and the
report's "method default" legend, labels and parameter columns. Adding a parameter to
the search is one entry in :data:`PARAMS` (its ``RunConfig`` field, which the trainer
implements, reads its default from here with :func:`default`).

Plain Python on purpose: importing this module pulls in neither torch nor ray, so
``analysis`` may read it. Consumers look entries up through the functions below at call
time, never by copying :data:`PARAMS` at import, so a test may swap the registry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ZAY_SUPPRESSION_MODES: tuple[str, ...] = ("gate", "kl_weight", "kl_target")
PENALTY_MEASURES: tuple[str, ...] = ("corr", "hsic", "hsic_labels")
#: which pairs of latent groups the independence penalty measures: zay with zy and with za,
#: or also zay with zx
PENALTY_PAIRS: tuple[str, ...] = ("zy_za", "zy_za_zx")

#: the word for "each stage gets 1/n of the epochs", as the report's legend says it
_SHARE_WORDS = {1: "all epochs", 2: "halves", 3: "thirds", 4: "quarters", 5: "fifths"}


@dataclass(frozen=True)
class Range:
    """Numbers from ``low`` to ``high``, both inclusive.

    Attributes:
        low: The smallest value searched.
        high: The largest value searched; ``None`` stands for the sweep's epoch budget.
        log: Sample on a log scale (``low`` must then be positive).
    """

    low: float
    high: float | None = None
    log: bool = False

    def bounds(self, epochs: int) -> tuple[Any, Any]:
        """``(low, high)`` with the epoch budget filled in."""
        return self.low, epochs if self.high is None else self.high


@dataclass(frozen=True)
class Choices:
    """A categorical parameter: the values a sweep tries by default (more can be added
    with ``--range NAME=A,B`` among the parameter's allowed values)."""

    values: tuple[Any, ...]


#: a run's three stages, as :func:`stage_lengths` counts their epochs
STAGES: tuple[int, ...] = (1, 2, 3)
#: the model variant without zay (``ModelConfig.variant``): what acts on zay is inert in it
NO_ZAY_VARIANT = "diva"


@dataclass(frozen=True)
class Acts:
    """Where in a run a parameter acts; one that acts in no epoch of a run is inert there:
    a sweep does not draw it, and two runs that differ only in it train alike
    (:func:`effective_config`).

    Attributes:
        stages: The stages whose epochs it acts in; a run whose stages among them are all
            empty trains the same whatever its value.
        stage3_with: A ``RunConfig`` bool field that adds stage 3 (the penalty's
            ``penalty_in_stage3``); a run without the field reads it as off, its default.
        everywhere: Values with which it acts in every stage (``kl_target``'s zay term
            holds in stage 3 too).
        on_zay: It acts on zay, so not at all in a model without zay (``diva``).
    """

    stages: tuple[int, ...] = STAGES
    stage3_with: str = ""
    everywhere: tuple[Any, ...] = ()
    on_zay: bool = False

    def holds(self, run: Mapping[str, Any], values: tuple[Any, ...] = (None,), *,
              lengths: tuple[int, int, int] | None = None) -> bool:
        """Whether it acts in a run with these flat fields (``epochs``, the stage lengths,
        ``variant``, ...) for one of ``values`` (its value, or the choices a sampler may
        draw). A run whose ``epochs`` is unknown is taken to have every stage.
        ``lengths``: the run's :func:`stage_lengths`, where the caller has them."""
        if self.on_zay and run.get("variant") == NO_ZAY_VARIANT:
            return False
        lengths = stage_lengths(run) if lengths is None else lengths
        if lengths is None:
            return True
        stages = set(self.stages)
        if any(v in self.everywhere for v in values):
            stages = set(STAGES)
        if self.stage3_with and run.get(self.stage3_with):
            stages.add(3)
        return any(lengths[s - 1] > 0 for s in stages)

    def text(self) -> str:
        """Where it acts, as ``--help`` says it ("" where that is anywhere)."""
        words = []
        if tuple(self.stages) != STAGES:
            listed = " or ".join(str(s) for s in self.stages)
            words.append(f"stage {listed} is not empty"
                         + (f" (or stage 3, with {self.stage3_with})" if self.stage3_with
                            else "")
                         + (f" ({', '.join(map(str, self.everywhere))}: any stage)"
                            if self.everywhere else ""))
        if self.on_zay:
            words.append("the model has zay")
        return " and ".join(words)


@dataclass(frozen=True)
class Param:
    """One tunable parameter of the method.

    Attributes:
        name: The ``RunConfig`` field (flat name, as ``RunConfig.replace`` takes it) and
            the trainer's ``--NAME`` flag.
        kind: ``bool``, ``int``, ``float`` or ``str``: how a command-line value parses.
        default: The method's default, exactly as ``RunConfig()`` holds it.
        help: One phrase for ``--help``; a bool's says what turning it on does.
        search: What a sweep searches by default; ``None``: not searched, and a sweep
            pins it to ``default`` (parameters may still be conditioned on it).
        opt_in: Searchable but not in the default space: a sweep pins it to ``default``
            unless ``--range`` or a space file gives it a range (``--set`` fixes it);
            ``search`` then holds the suggested range shown in ``--help`` and the scale
            (log or not) that a given range is sampled on.
        aliases: Short names accepted by ``--set``, ``--range`` and space files.
        when: ``(parameter, value)`` pairs that must all hold for this one to apply (a
            tuple of values: one of them); the named parameters come earlier in
            :data:`PARAMS`. A sweep samples it only then, and the report blanks it out
            otherwise.
        acts: Where in a run it acts (:class:`Acts`); ``None``: in every stage. Where it
            acts nowhere a sweep does not draw it, like a failed ``when``.
        allowed: Every valid value of a ``str`` parameter (``RunConfig`` refuses others).
        budget: An epoch count; the budget parameters of a sampled setting sum to at
            most the sweep's ``--epochs`` (stage 1 + stage 2).
        share: A ``default`` of ``None`` means ``epochs // share`` epochs.
        baseline: Part of the baseline trial, the method's own setting that a new
            study runs first; ``False`` leaves it to the space in that trial.
        label: Axis and legend label in the report (default: the name).
        symbol: Short symbol for legends (``λ``).
        off_flag: ``(flag, help)`` of a bool's trainer flag that turns it off.
    """

    name: str
    kind: type
    default: Any
    help: str
    search: Range | Choices | None = None
    aliases: tuple[str, ...] = ()
    when: tuple[tuple[str, Any], ...] = ()
    allowed: tuple[Any, ...] = ()
    budget: bool = False
    share: int | None = None
    baseline: bool = True
    opt_in: bool = False
    label: str = ""
    symbol: str = ""
    off_flag: tuple[str, str] = ()
    acts: Acts | None = None

    @property
    def searched(self) -> bool:
        """Whether a sweep searches this parameter (``--set``/``--range`` accept it)."""
        return self.search is not None

    @property
    def title(self) -> str:
        """The report's label."""
        return self.label or self.name

    def resolve(self, value: Any, epochs: int) -> Any:
        """``value`` as a run uses it: ``None`` of a ``share`` parameter becomes
        ``epochs // share``."""
        if value is None and self.share:
            return epochs // self.share
        return value

    def method_value(self, epochs: int) -> Any:
        """The method's default as a run with ``epochs`` epochs uses it."""
        return self.resolve(self.default, epochs)

    def applies(self, values: Mapping[str, Any]) -> bool:
        """Whether this parameter's conditions (``when``) hold given the others' ``values``.

        A parameter missing from ``values`` reads its default. A sampler passes what the
        run will hold: the values drawn so far over the run's fixed fields, so a parameter
        it did not draw reads the value the run keeps.
        """
        for parent, wanted in self.when:
            actual = values[parent] if parent in values else get(parent).default
            if actual not in (wanted if isinstance(wanted, tuple) else (wanted,)):
                return False
        return True

    def inert(self, run: Mapping[str, Any], values: tuple[Any, ...] = (None,), *,
              lengths: tuple[int, int, int] | None = None) -> bool:
        """Whether it cannot change a run with these flat fields (drawn values over the
        fixed ones): its conditions fail, or it acts in none of the run's epochs, for
        every one of ``values`` (its value, or the choices a sampler may draw).
        ``lengths``: the run's :func:`stage_lengths`, where the caller has them."""
        if not self.applies(run):
            return True
        return self.acts is not None and not self.acts.holds(run, values, lengths=lengths)


#: the range ``--help`` suggests for a KL weight, sampled on a log scale
_KL_WEIGHT_RANGE = Range(0.25, 4.0, log=True)
#: the independence penalty is in the loss in stage 2 (and stage 3 with
#: ``penalty_in_stage3``) of a model with zay (``trainer._stages.penalty_active``): its
#: switch, λ, measure and pairs change nothing where those stages are empty
_PENALTY_ACTS = Acts(stages=(2,), stage3_with="penalty_in_stage3", on_zay=True)
#: zay's suppression: gate cuts zay out in stage 1 and ramps its gate in stage 2;
#: kl_weight weighs its KL by c there; with c = 1 in stage 3 the two train alike, while
#: kl_target's |KL - c C_max| holds in every stage (``trainer._model.staged_loss``)
_SUPPRESSION_ACTS = Acts(stages=(1, 2), everywhere=("kl_target",), on_zay=True)

PARAMS: tuple[Param, ...] = (
    Param("staged_training", bool, True,
          "train in three stages: zay kept out, ramped in, then free "
          "(off: all latents from epoch 0)",
          label="staged training"),
    Param("stage1_epochs", int, None, "length of stage 1, zay kept out",
          search=Range(0), aliases=("stage1",), when=(("staged_training", True),),
          budget=True, share=3, label="stage 1 epochs"),
    Param("stage2_epochs", int, None, "length of stage 2, zay ramped in",
          search=Range(0), aliases=("stage2",), when=(("staged_training", True),),
          budget=True, share=3, label="stage 2 epochs"),
    Param("use_independence_penalty", bool, True,
          "turn the stage-2 independence penalty on",
          search=Choices((True, False)), aliases=("penalty",), label="penalty",
          off_flag=("no_independence_penalty", "turn the stage-2 independence penalty off"),
          acts=_PENALTY_ACTS),
    Param("independence_penalty", float, 10.0,
          "weight lambda of the stage-2 independence penalty",
          search=Range(0.1, 100.0, log=True), aliases=("lambda",),
          when=(("use_independence_penalty", True),), acts=_PENALTY_ACTS,
          label="λ (independence penalty)", symbol="λ"),
    Param("penalty_measure", str, "corr", "dependence measure of the independence penalty",
          search=Choices(("corr",)), aliases=("measure",),
          when=(("use_independence_penalty", True),), allowed=PENALTY_MEASURES,
          acts=_PENALTY_ACTS, baseline=False, label="penalty measure"),
    Param("penalty_pairs", str, "zy_za",
          "which pairs of latent groups the independence penalty measures: zy_za = "
          "m(zay, zy) + m(zay, za); zy_za_zx adds m(zay, zx) (with hsic_labels, the zx "
          "pair is RBF HSIC on the latents: zx has no label)",
          search=Choices(("zy_za",)), aliases=("pairs",),
          when=(("use_independence_penalty", True),), allowed=PENALTY_PAIRS,
          acts=_PENALTY_ACTS, baseline=False, label="penalty pairs"),
    Param("zay_suppression", str, "gate", "how stage 1 keeps zay out",
          search=Choices(("gate",)), aliases=("suppression",),
          allowed=ZAY_SUPPRESSION_MODES, acts=_SUPPRESSION_ACTS,
          baseline=False, label="zay suppression"),
    Param("beta_y", float, 1.0,
          "KL weight of zy: the loss's term beta_scale * beta_y * KL(q(zy|x) || p(zy|y))",
          search=_KL_WEIGHT_RANGE, aliases=("beta_zy",), opt_in=True, label="β_zy"),
    Param("beta_a", float, 1.0,
          "KL weight of za: the loss's term beta_scale * beta_a * KL(q(za|x) || p(za|a))",
          search=_KL_WEIGHT_RANGE, aliases=("beta_za",), opt_in=True, label="β_za"),
    Param("beta_ay", float, 1.0,
          "KL weight of zay: the loss's term beta_scale * beta_ay * KL(q(zay|x) || "
          "p(zay|y,a)), times zay's capacity in kl_weight mode (no effect in kl_target "
          "mode, whose zay term is gamma * |KL - c * C_max|, nor in the diva variant)",
          search=_KL_WEIGHT_RANGE, aliases=("beta_zay",), opt_in=True, label="β_zay",
          when=(("zay_suppression", ("gate", "kl_weight")),), acts=Acts(on_zay=True)),
    Param("beta_x", float, 1.0,
          "KL weight of zx: the loss's term beta_scale * beta_x * KL(q(zx|x) || N(0, I))",
          search=_KL_WEIGHT_RANGE, aliases=("beta_zx",), opt_in=True, label="β_zx"),
)
"""The registry, in sampling order (a parameter's conditions name earlier ones)."""


class RegistryError(ValueError):
    """An inconsistent registry; the message names the entry."""


def get(name: str) -> Param:
    """The entry named ``name`` (not an alias); ``KeyError`` if there is none."""
    for p in PARAMS:
        if p.name == name:
            return p
    raise KeyError(name)


def names() -> tuple[str, ...]:
    """Every registered name, in registry order."""
    return tuple(p.name for p in PARAMS)


def searched() -> tuple[Param, ...]:
    """The entries a sweep searches, in sampling order."""
    return tuple(p for p in PARAMS if p.searched)


def searched_names() -> tuple[str, ...]:
    """Names of the searched entries, in sampling order."""
    return tuple(p.name for p in searched())


def aliases() -> dict[str, str]:
    """Each alias mapped to its parameter's name."""
    return {a: p.name for p in PARAMS for a in p.aliases}


def canonical(name: str) -> str:
    """The parameter's name for ``name`` or one of its aliases; other text unchanged."""
    return aliases().get(name, name)


def default(name: str) -> Any:
    """The method's default of ``name``; ``RunConfig`` takes its field defaults from here."""
    return get(name).default


def label(name: str) -> str:
    """The report's label of a parameter (its name if it is not registered)."""
    try:
        return get(name).title
    except KeyError:
        return name


def dependants(name: str) -> tuple[Param, ...]:
    """The entries that apply only under a condition on ``name``."""
    return tuple(p for p in PARAMS if any(parent == name for parent, _ in p.when))


def pinned() -> dict[str, Any]:
    """The entries a sweep does not search, at the method's default (a sweep trains with
    these, so the search space's conditions on them hold as it assumes)."""
    return {p.name: p.default for p in PARAMS if not p.searched}


def stage_lengths(run: Mapping[str, Any]) -> tuple[int, int, int] | None:
    """The epochs of stages 1, 2 and 3 of a run with these flat fields (``epochs`` and the
    budget entries, stage 1's then stage 2's: ``None`` for 1/share of the epochs, 0 where
    their conditions fail, as without staged training); ``None`` where ``epochs`` is
    missing."""
    epochs = run.get("epochs")
    if epochs is None:
        return None
    lengths = [p.resolve(run.get(p.name, p.default), int(epochs)) if p.applies(run) else 0
               for p in PARAMS if p.budget]
    first, second = (*lengths, 0, 0)[:2]
    return int(first), int(second), int(epochs) - int(first) - int(second)


#: ``RunConfig`` fields that change where a run goes, not what it trains
NOT_TRAINING: tuple[str, ...] = ("device", "write_plots")


def flat_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A ``RunConfig.to_dict`` (sections as nested dicts) or flat fields, as flat fields
    (``{"epochs": 6, "lr": 0.001, ...}``; flat names are unique)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):  # JSON's mappings (an ABC check is slow per field)
            flat.update(value)
        else:
            flat[key] = value
    return flat


def effective_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """What a run trains: its flat fields less those that cannot change it.

    Dropped: every registry entry that is inert in the run (:meth:`Param.inert`: λ with
    the penalty off, the penalty where it acts in no epoch, the suppression where gate
    and kl_weight coincide, ...), a stage-3 flag where what it extends does not act
    (``penalty_in_stage3`` with the penalty off or inert, or no stage 3), and
    :data:`NOT_TRAINING`. Epoch counts left at
    ``None`` (1/share of the epochs) are resolved, so thirds and their explicit lengths
    are one configuration. Two runs with the same effective configuration train alike:
    one setting, which a ranking or a confirmation must not count twice.

    Args:
        config: A ``RunConfig.to_dict`` or its flat fields (a trial's ``config``).
    """
    flat = flat_config(config)
    out = {k: v for k, v in flat.items() if k not in NOT_TRAINING}
    epochs = flat.get("epochs")
    lengths = stage_lengths(flat)
    for p in PARAMS:  # registry order: conditions read earlier entries, as the run holds
        if p.name not in flat:
            continue
        if p.inert(flat, (flat[p.name],), lengths=lengths):
            del out[p.name]
        elif epochs is not None:
            out[p.name] = p.resolve(flat[p.name], int(epochs))
    # a flag that extends entries to stage 3 (penalty_in_stage3) acts only where all of
    # them act (the penalty on: λ applies) and stage 3 has epochs
    flags = {p.acts.stage3_with for p in PARAMS if p.acts is not None and p.acts.stage3_with}
    for flag in flags:
        users = [p.name for p in PARAMS if p.acts is not None and p.acts.stage3_with == flag]
        known = all(name in flat for name in users) and lengths is not None
        if flag in out and known and (lengths[2] == 0 or any(n not in out for n in users)):
            del out[flag]
    return out


def setting_key(config: Mapping[str, Any]) -> str:
    """The effective configuration as text: equal for two runs exactly when they train
    alike (a key to group trials by)."""
    return json.dumps(effective_config(config), sort_keys=True, default=str)


def baseline(epochs: int) -> dict[str, Any]:
    """The method's own setting, as searched values for a budget of ``epochs`` epochs.

    A new study runs it first. It holds the ``baseline`` entries that apply (thirds,
    λ = 10, penalty on); the others are left to the search space (an ``opt_in`` entry is
    pinned to its default unless a space ranges it: ``SearchSpace.baseline`` adds it then).
    """
    values: dict[str, Any] = {}
    for p in searched():
        if p.baseline and not p.opt_in and p.applies(values):
            values[p.name] = p.method_value(epochs)
    return values


def _shown(p: Param, value: Any) -> str:
    if p.share and p.default is None:
        return _SHARE_WORDS.get(p.share, f"1/{p.share} of the epochs each")
    if isinstance(value, bool):
        return f"{p.title} {'on' if value else 'off'}"
    text = f"{value:g}" if isinstance(value, int | float) else str(value)
    return f"{p.symbol or p.name}={text}"


def method_default_text() -> str:
    """The method's default in a few words, as the report's legend names it
    (``"thirds, λ=10"``). A switch that is on shows through what it enables."""
    base = baseline(epochs=0)
    words: list[str] = []
    for p in searched():
        if p.name not in base:
            continue
        value = base[p.name] if not p.share else p.default
        if value is True and any(d.name in base for d in dependants(p.name)):
            continue
        word = _shown(p, value)
        if word not in words:
            words.append(word)
    return ", ".join(words)


def check(params: tuple[Param, ...] | None = None) -> None:
    """Raise :class:`RegistryError` naming the first inconsistent entry.

    Checks: names and aliases are unique, conditions name earlier entries, kinds are
    known, defaults and default choices lie among the allowed values, ranges are
    ordered (and positive on a log scale), ``share``/``budget`` only on integers.
    """
    params = PARAMS if params is None else params
    seen: set[str] = set()
    for p in params:
        where = f"parameter {p.name!r}"
        if p.kind not in (bool, int, float, str):
            raise RegistryError(f"{where}: kind must be bool, int, float or str")
        taken = seen & {p.name, *p.aliases}
        if taken:
            raise RegistryError(f"{where}: name or alias {sorted(taken)[0]!r} is taken")
        for parent, _ in p.when:
            if parent not in {q.name for q in params[:params.index(p)]}:
                raise RegistryError(f"{where}: condition on {parent!r}, which is not an "
                                    "earlier entry")
        if p.acts is not None and not set(p.acts.stages) <= set(STAGES):
            raise RegistryError(f"{where}: acts in stages {p.acts.stages}; a run has "
                                f"stages {', '.join(map(str, STAGES))}")
        if p.allowed and p.default not in p.allowed:
            raise RegistryError(f"{where}: default {p.default!r} is not allowed")
        if isinstance(p.search, Choices):
            if not p.search.values:
                raise RegistryError(f"{where}: no choices")
            bad = [v for v in p.search.values if p.allowed and v not in p.allowed]
            if bad:
                raise RegistryError(f"{where}: choices {bad} are not allowed")
        if isinstance(p.search, Range):
            if p.kind not in (int, float):
                raise RegistryError(f"{where}: a range needs an int or float kind")
            if p.search.high is not None and p.search.high < p.search.low:
                raise RegistryError(f"{where}: range {p.search.low}:{p.search.high} is empty")
            if p.search.log and p.search.low <= 0:
                raise RegistryError(f"{where}: a log range must be positive")
            if p.search.high is None and not p.budget:
                raise RegistryError(f"{where}: only an epoch count may reach the budget")
        if (p.budget or p.share) and p.kind is not int:
            raise RegistryError(f"{where}: budget and share are for epoch counts (int)")
        if p.off_flag and p.kind is not bool:
            raise RegistryError(f"{where}: off_flag is for bool parameters")
        if p.opt_in and p.search is None:
            raise RegistryError(f"{where}: an opt_in parameter needs a search range or choices")
        seen |= {p.name, *p.aliases}
