"""A run whose trained weights are not finite fails alone in a shared evaluation."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.trainer.conftest import tiny_config
from trainer import DivergenceError, fit
from trainer._final_evaluation import EVALUATION, final_analyses
from trainer._setup import build_model, prepare_run


def test_non_finite_weights_fail_their_own_run_and_no_other(one_thread):
    cfg = tiny_config()
    _, data = prepare_run(cfg, None)
    model = build_model(cfg, data)
    good = copy.deepcopy(model.state_dict())
    bad = copy.deepcopy(good)
    name = next(k for k in bad if k.startswith("enc") and k.endswith("weight"))
    bad[name] = torch.full_like(bad[name], float("nan"))
    alone = final_analyses(model, data, [(cfg, good)])
    both = final_analyses(model, data, [(cfg, bad), (cfg, good)])
    assert isinstance(both[0], DivergenceError)
    assert "non-finite latents" in str(both[0])
    # a sweep stores where it failed: in the evaluation, not in training
    from search.worker.solo import failure_result

    reason = failure_result(both[0], {"phase": "training"}).details
    assert reason["reason"].endswith("(the final evaluation)"), reason
    # the finite run's evaluation is what it would be alone
    assert both[1]["metrics"]["task_accuracy"] == alone[0]["metrics"]["task_accuracy"]
    assert both[1]["metrics"].keys() == alone[0]["metrics"].keys()
    # every run non-finite: nothing to fit, each fails
    assert all(isinstance(r, DivergenceError)
               for r in final_analyses(model, data, [(cfg, bad), (cfg, bad)]))


def test_a_solo_run_with_non_finite_weights_raises_from_its_evaluation(monkeypatch, one_thread):
    # the last epoch leaves every weight NaN without a non-finite loss on the way
    import trainer._fit as fit_module

    real = fit_module.final_analyses

    def poisoned(model, data, runs):
        (cfg, state), = runs
        state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                 for k, v in (state or model.state_dict()).items()}
        return real(model, data, [(cfg, state)])

    monkeypatch.setattr(fit_module, "final_analyses", poisoned)
    with pytest.raises(DivergenceError, match="non-finite latents") as caught:
        fit(tiny_config(epochs=2, stage1_epochs=0, stage2_epochs=0))
    assert EVALUATION in "".join(getattr(caught.value, "__notes__", []))
