"""Frozen run configuration: one object is the whole truth of a run.

Each part has its defaults beside it; those of the tunable parameters are read from the
registry (``trainer.params``), which declares each of them once. ``RunConfig.to_dict`` /
``RunConfig.from_dict`` round-trip through plain JSON, which is what checkpoints and the
study database store.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from trainer import params
from trainer.params import PENALTY_MEASURES as PENALTY_MEASURES  # re-exported
from trainer.params import PENALTY_PAIRS as PENALTY_PAIRS  # re-exported
from trainer.params import ZAY_SUPPRESSION_MODES as ZAY_SUPPRESSION_MODES  # re-exported
from trainer.params import default

ZaySuppression = Literal["gate", "kl_weight", "kl_target"]
PenaltyMeasure = Literal["corr", "hsic", "hsic_labels"]
MODEL_VARIANTS: tuple[str, ...] = ("staged", "diva")
MODEL_ARCHS: tuple[str, ...] = ("auto", "mlp", "conv")  # auto: the data set's default
#: what stage-3 early stopping (and the best weights) can follow, and which way is better:
#: the validation loss (the default), or the task accuracy on the validation domain
#: (``DataConfig.val_domain``), a training-domain-free, DomainBed-style honest selection
EARLY_STOPPING_METRICS: dict[str, str] = {
    "val_loss": "minimize",
    "val_acc_y_val_domain": "maximize",
}


class ConfigError(ValueError):
    """A configuration that cannot be run; the message says what to change."""


#: the ``field`` metadata key of a member-variable field (``per_member``)
PER_MEMBER = "per_member"


def per_member(default_value: Any) -> Any:
    """A field that the members of one population may each set their own way.

    ``fit_population`` trains its members as one vectorised model whose batch step reads
    the first member's config: a field reaches each member only where the population
    trainer hands it over per member (the schedule, the KL weights, the optimiser, early
    stopping, the seeds, the evaluation). Every field not declared with ``per_member`` is
    shared, and members that differ in it are refused, so a new field can never silently
    take the first member's value. Declare one only once the population trainer reads it
    per member (``tests/trainer/test_population.py`` compares members with ``fit``).
    """
    return field(default=default_value, metadata={PER_MEMBER: True})


@dataclass(frozen=True)
class ModelConfig:
    """Sizes and loss weights of the four-latent VAE."""

    variant: str = "staged"  # "staged" (zy, za, zay, zx) or "diva" (no zay): the baseline
    zy_dim: int = 16
    za_dim: int = 16
    zay_dim: int = 16
    zx_dim: int = 16
    hidden_dim: int = 256  # width of the MLP's hidden layers
    arch: str = "auto"  # "mlp", "conv" or "auto" (the data set's declared default)
    conv_channels: int = 32  # channels of the first conv block (doubling, up to 8x)
    # KL weights of each group (the registry's; staged_loss: beta_scale * beta_g * KL_g)
    beta_y: float = per_member(default("beta_y"))
    beta_a: float = per_member(default("beta_a"))
    beta_ay: float = per_member(default("beta_ay"))
    beta_x: float = per_member(default("beta_x"))
    alpha_y: float = 100.0
    alpha_a: float = 100.0
    recon_weight: float = 1.0
    heads_read_zay: bool = False  # some published code feeds zay to q(y|.) and q(a|.)


@dataclass(frozen=True)
class StageConfig:
    """The three-stage schedule, the zay suppression mode and the independence penalty."""

    staged_training: bool = per_member(default("staged_training"))
    stage1_epochs: int | None = per_member(default("stage1_epochs"))  # None: epochs // 3
    stage2_epochs: int | None = per_member(default("stage2_epochs"))  # None: epochs // 3
    zay_suppression: str = default("zay_suppression")
    #: c in stage 1 for kl_weight/kl_target (gate uses exactly 0)
    stage1_capacity: float = per_member(0.01)
    kl_target_gamma: float = 10.0  # gamma of the Burgess-style target gamma*|KL - c*C_max|
    kl_target_max: float = 10.0  # C_max, nats per sample
    use_independence_penalty: bool = per_member(default("use_independence_penalty"))
    independence_penalty: float = per_member(default("independence_penalty"))  # lambda
    penalty_measure: str = default("penalty_measure")
    penalty_pairs: str = default("penalty_pairs")  # zy_za, or zy_za_zx (adds zay with zx)
    penalty_in_stage3: bool = per_member(False)


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation: Adam, warm-up, beta annealing, clipping, early stopping."""

    epochs: int = per_member(60)
    batch_size: int = 128
    lr: float = per_member(1e-3)
    weight_decay: float = per_member(0.0)
    warmup_epochs: int = per_member(1)
    beta_annealing: bool = per_member(False)
    beta_anneal_epochs: int = per_member(10)
    grad_clip: float = per_member(10.0)
    patience: int = per_member(10)
    #: the per-epoch column stage-3 early stopping and the best weights follow (one of
    #: ``EARLY_STOPPING_METRICS``); ``val_acc_y_val_domain`` needs ``DataConfig.val_domain``
    early_stopping_metric: str = per_member("val_loss")
    #: of one epoch's batches; above it the run has diverged
    max_bad_batch_fraction: float = per_member(0.5)
    max_bad_epochs: int = per_member(3)  # consecutive epochs over that fraction before failing


@dataclass(frozen=True)
class DataConfig:
    """Which data set, where it lives, how it is split."""

    dataset: str = "digits"
    data_root: str | None = None
    image_size: int | None = None  # None: the data set's native size (digits 16, mnist 28, ..)
    domains: tuple[float, ...] = (0.0, 15.0, 30.0, 45.0, 60.0, 75.0)
    test_domain: int | None = None  # index into domains held out entirely
    #: index into domains held out of training as an out-of-domain validation set (split
    #: ``val_domain``, metric ``acc_y_val_domain``); never the test domain
    val_domain: int | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    max_samples: int | None = None  # cap on samples drawn from large on-disk data sets
    #: seed of the train/validation/test split (None: the run's ``seed``); replicates of a
    #: setting pin it, so that their seeds vary the model and not the data
    split_seed: int | None = per_member(None)


@dataclass(frozen=True)
class RunConfig:
    """The whole configuration of one training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    stages: StageConfig = field(default_factory=StageConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    seed: int = per_member(0)
    device: str = "auto"
    #: per split, for the final disentanglement evaluation
    eval_max_samples: int = per_member(5000)
    write_plots: bool = per_member(True)

    def __post_init__(self) -> None:
        validate(self)

    # -- derived schedule ---------------------------------------------------------
    @property
    def stage1_epochs(self) -> int:
        if not self.stages.staged_training:
            return 0
        return params.get("stage1_epochs").resolve(self.stages.stage1_epochs, self.optim.epochs)

    @property
    def stage2_epochs(self) -> int:
        if not self.stages.staged_training:
            return 0
        return params.get("stage2_epochs").resolve(self.stages.stage2_epochs, self.optim.epochs)

    @property
    def data_seed(self) -> int:
        """The seed the data split is drawn from: ``data.split_seed``, else ``seed``."""
        return self.seed if self.data.split_seed is None else self.data.split_seed

    @property
    def stage3_start(self) -> int:
        return self.stage1_epochs + self.stage2_epochs

    # -- serialisation ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key in _SECTIONS:
                kwargs[key] = _build(_SECTIONS[key], value)
            elif key in {f.name for f in fields(cls)}:
                kwargs[key] = value
            else:
                raise ConfigError(f"unknown configuration key {key!r}")
        return cls(**kwargs)

    def replace(self, **flat: Any) -> RunConfig:
        """A copy with fields changed by their flat name (``epochs=10``, ``lr=1e-4``)."""
        return RunConfig.from_dict(apply_flat(self.to_dict(), flat))


#: the sections of a ``RunConfig``, by field name
_SECTIONS: dict[str, type] = {"model": ModelConfig, "stages": StageConfig,
                              "optim": OptimConfig, "data": DataConfig}


def _build(kind: type, value: dict[str, Any]) -> Any:
    known = {f.name for f in fields(kind)}
    unknown = set(value) - known
    if unknown:
        raise ConfigError(f"unknown {kind.__name__} key(s): {', '.join(sorted(unknown))}")
    value = dict(value)
    if kind is DataConfig and "domains" in value:
        value["domains"] = tuple(float(d) for d in value["domains"])
    return kind(**value)


def member_variable_fields(cfg: RunConfig | None = None) -> frozenset[str]:
    """The flat dotted names (``optim.lr``, ``seed``) of the fields declared ``per_member``
    in ``cfg``'s classes (default: ``RunConfig``'s): the only ones in which members of one
    population may differ."""
    cfg = RunConfig() if cfg is None else cfg
    names = {f.name for f in fields(cfg) if f.metadata.get(PER_MEMBER)}
    for section in _SECTIONS:
        names |= {f"{section}.{f.name}" for f in fields(getattr(cfg, section))
                  if f.metadata.get(PER_MEMBER)}
    return frozenset(names)


def flat_field_index() -> dict[str, str]:
    """Map each flat field name (``lr``) to its section (``optim``); top-level maps to ''."""
    index: dict[str, str] = {}
    for section, kind in (
        ("model", ModelConfig),
        ("stages", StageConfig),
        ("optim", OptimConfig),
        ("data", DataConfig),
    ):
        for f in fields(kind):
            index[f.name] = section
    for f in fields(RunConfig):
        if f.name not in ("model", "stages", "optim", "data"):
            index[f.name] = ""
    return index


def flatten_config(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """``{"optim": {"lr": ..}}`` -> ``{"optim.lr": ..}``."""
    flat: dict[str, Any] = {}
    for section, value in cfg_dict.items():
        if isinstance(value, dict):
            flat.update({f"{section}.{k}": v for k, v in value.items()})
        else:
            flat[section] = value
    return flat


def apply_flat(raw: dict[str, Any], flat: dict[str, Any]) -> dict[str, Any]:
    """Return ``raw`` (a ``RunConfig.to_dict``) with flat-named fields overridden."""
    index = flat_field_index()
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for name, value in flat.items():
        if name not in index:
            raise ConfigError(f"unknown configuration field {name!r}")
        section = index[name]
        if section:
            out[section][name] = value
        else:
            out[name] = value
    return out


def validate(cfg: RunConfig) -> None:
    """Raise ConfigError naming the first problem; a valid config passes silently."""
    o, s, m, d = cfg.optim, cfg.stages, cfg.model, cfg.data
    if o.epochs < 1:
        raise ConfigError(f"epochs must be at least 1 (got {o.epochs})")
    for name in ("stage1_epochs", "stage2_epochs"):
        value = getattr(s, name)
        if value is not None and value < 0:
            raise ConfigError(f"{name} must not be negative (got {value})")
    if cfg.stage1_epochs + cfg.stage2_epochs > o.epochs:
        raise ConfigError(
            f"stage1_epochs + stage2_epochs = {cfg.stage1_epochs} + {cfg.stage2_epochs} "
            f"exceeds epochs = {o.epochs}; shorten the stages or raise --epochs"
        )
    if s.independence_penalty < 0:
        raise ConfigError(
            f"independence_penalty must not be negative (got {s.independence_penalty})"
        )
    for name in ("beta_y", "beta_a", "beta_ay", "beta_x"):
        if not getattr(m, name) >= 0:  # NaN too
            raise ConfigError(f"{name} must be a non-negative number (got {getattr(m, name)})")
    index = flat_field_index()
    for p in params.PARAMS:  # the registry's choice parameters: zay_suppression, ...
        if p.allowed:
            value = getattr(getattr(cfg, index[p.name]) if index[p.name] else cfg, p.name)
            if value not in p.allowed:
                raise ConfigError(
                    f"unknown {p.name} {value!r}; choose one of {', '.join(p.allowed)}"
                )
    if m.variant not in MODEL_VARIANTS:
        raise ConfigError(
            f"unknown model variant {m.variant!r}; choose one of {', '.join(MODEL_VARIANTS)}"
        )
    if m.arch not in MODEL_ARCHS:
        raise ConfigError(
            f"unknown arch {m.arch!r}; choose one of {', '.join(MODEL_ARCHS)}"
        )
    for name in ("zy_dim", "za_dim", "zx_dim", "hidden_dim", "conv_channels"):
        if getattr(m, name) < 1:
            raise ConfigError(f"{name} must be at least 1 (got {getattr(m, name)})")
    if m.variant == "staged" and m.zay_dim < 1:
        raise ConfigError(f"zay_dim must be at least 1 for the staged model (got {m.zay_dim})")
    for name in ("batch_size",):
        if getattr(o, name) < 1:
            raise ConfigError(f"{name} must be at least 1 (got {getattr(o, name)})")
    if o.lr <= 0:
        raise ConfigError(f"lr must be positive (got {o.lr})")
    if o.patience < 1:
        raise ConfigError(f"patience must be at least 1 (got {o.patience})")
    if o.early_stopping_metric not in EARLY_STOPPING_METRICS:
        raise ConfigError(
            f"unknown early_stopping_metric {o.early_stopping_metric!r}; choose one of "
            f"{', '.join(EARLY_STOPPING_METRICS)}"
        )
    if o.early_stopping_metric == "val_acc_y_val_domain" and d.val_domain is None:
        raise ConfigError(
            "early_stopping_metric val_acc_y_val_domain needs a validation domain; "
            "give --val_domain K"
        )
    if not 0 < d.val_fraction < 1 or not 0 < d.test_fraction < 1:
        raise ConfigError("val_fraction and test_fraction must lie strictly between 0 and 1")
    if d.val_fraction + d.test_fraction >= 1:
        raise ConfigError("val_fraction + test_fraction must leave some training data")
    if d.test_domain is not None and not 0 <= d.test_domain < len(d.domains):
        raise ConfigError(
            f"test_domain {d.test_domain} is not a domain index (0..{len(d.domains) - 1})"
        )
    if d.val_domain is not None and not 0 <= d.val_domain < len(d.domains):
        raise ConfigError(
            f"val_domain {d.val_domain} is not a domain index (0..{len(d.domains) - 1})"
        )
    if d.val_domain is not None and d.val_domain == d.test_domain:
        raise ConfigError(
            f"val_domain {d.val_domain} is also the test_domain; validating on the test "
            f"domain is selecting on it: choose another domain"
        )
    if d.image_size is not None and d.image_size < 8:
        raise ConfigError(f"image_size must be at least 8 (got {d.image_size})")
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise ConfigError(f"unknown device {cfg.device!r}; choose auto, cpu or cuda")
