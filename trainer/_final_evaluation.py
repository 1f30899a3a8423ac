"""The final evaluation of trained runs, whose failures say that they are the evaluation's."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from trainer._config import RunConfig
from trainer._data import DataBundle
from trainer._model import StagedVAE
from trainer._progress import DivergenceError, ModelState

#: the note an exception raised in the final evaluation carries (``noted``)
EVALUATION = "the final evaluation, after the last training epoch"


@contextmanager
def noted(place: str) -> Iterator[None]:
    """Note on any exception raised inside where in the run it was raised: the message
    and type stay as they are, the traceback (what a failed trial stores) says it."""
    try:
        yield
    except Exception as exc:
        note = f"stagetune: raised in {place}"
        if hasattr(exc, "add_note"):
            exc.add_note(note)
        else:  # Python 3.10: the attribute 3.11 keeps and prints
            exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]
        raise


def final_analyses(model: StagedVAE, data: DataBundle,
                   runs: Sequence[tuple[RunConfig, ModelState | None]]
                   ) -> list[dict[str, Any] | DivergenceError]:
    """The final evaluation of trained runs that share ``model``'s shape.

    Each ``(config, weights)`` is loaded into ``model`` in turn (None: its weights as
    they are) and its inputs read; then every run's probes are fit in one batch and each
    run's metrics computed. A run whose encoder gives non-finite latents or posterior
    scales (weights that went non-finite without enough bad batches to stop training)
    gets a ``DivergenceError`` in its place and is left out of the batch, so that it
    fails alone. Any other exception raised here carries the note ``EVALUATION``.
    """
    from trainer._evaluation import eval_inputs, evaluate_inputs  # pulls in scikit-learn
    from trainer.metrics import fit_probes

    with noted(EVALUATION):
        inputs: list[Any] = []
        for cfg, state in runs:
            if state is not None:
                model.load_state_dict(state)
            got = eval_inputs(model, data, cfg)
            bad = non_finite_groups(got)
            if bad:
                got = DivergenceError(f"the final evaluation found non-finite latents in "
                                      f"{', '.join(bad)}: the trained weights are not finite")
                got.add_note(EVALUATION)
            inputs.append(got)
        fine = [i for i in inputs if not isinstance(i, DivergenceError)]
        if fine:
            fit_probes(fine)
        return [i if isinstance(i, DivergenceError) else evaluate_inputs(i, data, model.groups)
                for i in inputs]


def non_finite_groups(inputs: Any) -> list[str]:
    """The latent groups whose means or posterior scales hold a non-finite value."""
    bad = []
    for table in (inputs.fit_latents, inputs.score_latents, inputs.fit_std, inputs.score_std):
        bad += [g for g, z in table.items() if not np.isfinite(z).all() and g not in bad]
    return bad
