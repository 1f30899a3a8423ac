"""The staged trainer: a four-latent VAE trained in three stages.

Public surface: ``fit`` (the one seam with the search), the configuration classes,
``stage_of`` / ``zay_capacity``, the data registry, the metric registry and the parameter
registry ``trainer.params`` (each tunable parameter declared once).
Attributes are imported on first use, so ``import trainer.objectives`` or
``trainer.params`` (plain Python, what ``analysis`` reads) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "fit": "trainer._fit",
    "FitResult": "trainer._fit",
    "DivergenceError": "trainer._fit",
    "EVALUATION": "trainer._final_evaluation",
    "resolve_device": "trainer._fit",
    "fit_population": "trainer._population",
    "group_population": "trainer._population",
    "Pruned": "trainer._population",
    "RunConfig": "trainer._config",
    "ModelConfig": "trainer._config",
    "StageConfig": "trainer._config",
    "OptimConfig": "trainer._config",
    "DataConfig": "trainer._config",
    "ConfigError": "trainer._config",
    "apply_flat": "trainer._config",
    "ZAY_SUPPRESSION_MODES": "trainer._config",
    "PENALTY_MEASURES": "trainer._config",
    "stage_of": "trainer._stages",
    "zay_capacity": "trainer._stages",
    "penalty_active": "trainer._stages",
    "load_dataset": "trainer._data",
    "register_dataset": "trainer._data",
    "dataset_names": "trainer._data",
    "DataBundle": "trainer._data",
    "StagedVAE": "trainer._model",
    "staged_loss": "trainer._model",
    "evaluate_latents": "trainer.metrics",
    "EvalInputs": "trainer.metrics",
    "register_metric": "trainer.metrics",
    "METRICS": "trainer.objectives",
    "Param": "trainer.params",
    "PARAMS": "trainer.params",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
