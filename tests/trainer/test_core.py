"""The training core: what solo and population training share, once (``trainer._setup``,
``_schedule``, ``_step``, ``_optimiser``, ``_validation``, ``_progress``, ``_checkpoints``,
``_final_evaluation``).

Each test pins a place where the two drivers had drifted apart: the refusal of a
tampered checkpoint, the report of a failure in the final evaluation and the warm-up
formula (private names across module borders: ``tests/test_architecture.py``).
"""

from __future__ import annotations

import ast
import pickle
import traceback
from pathlib import Path

import pytest
import torch

from tests.tampered import RunsCode
from tests.trainer.conftest import tiny_config
from trainer import ConfigError, DivergenceError, fit, fit_population, load_dataset
from trainer._final_evaluation import EVALUATION
from trainer._fit import load_checkpoint
from trainer._optimiser import (
    StackedAdam,
    learning_rate,
    make_optimiser,
    warmup_factor,
    warmup_steps,
)
from trainer._population import POPULATION_CHECKPOINT, load_population_checkpoint
from trainer._setup import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

TRAINER = Path(__file__).resolve().parents[2] / "trainer"
#: one quick run: one epoch of stage 3
ONE_EPOCH = dict(epochs=1, stage1_epochs=0, stage2_epochs=0)


# -- drift 1: a tampered population checkpoint ---------------------------------------------


def test_a_tampered_population_checkpoint_is_refused_like_a_solo_one(tmp_path):
    cfg = tiny_config(**ONE_EPOCH)
    marker = tmp_path / "pwned"
    path = tmp_path / POPULATION_CHECKPOINT
    entry = {"config_json": cfg.to_json(), "model": RunsCode(marker)}
    with open(path, "wb") as fh:
        pickle.dump({"members": [entry]}, fh, protocol=2)

    with pytest.raises(ConfigError) as solo:
        load_checkpoint(path, cfg)
    with pytest.raises(ConfigError) as pop:
        load_population_checkpoint(path, [cfg])
    assert str(solo.value).startswith(f"refusing checkpoint {path}: ")
    # the same refusal, word for word, naming the kind of checkpoint
    assert str(pop.value) == str(solo.value).replace(
        "refusing checkpoint", "refusing population checkpoint", 1)
    assert "tampered with" in str(pop.value)
    # and resuming from it refuses it the same way, before anything trains
    with pytest.raises(ConfigError, match="refusing population checkpoint .*tampered"):
        fit_population([cfg], checkpoint_dir=tmp_path, resume=True, evaluate=False)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all"])
def test_an_unreadable_population_checkpoint_is_reported_like_a_solo_one(tmp_path, content):
    path = tmp_path / POPULATION_CHECKPOINT
    path.write_bytes(content)
    cfg = tiny_config(**ONE_EPOCH)
    with pytest.raises(ConfigError, match="^(cannot read|refusing) checkpoint ") as solo:
        load_checkpoint(path, cfg)
    with pytest.raises(ConfigError) as pop:
        load_population_checkpoint(path, [cfg])
    assert str(pop.value) == str(solo.value).replace(" checkpoint ", " population checkpoint ",
                                                     1)


# -- drift 2: a failure in the final evaluation --------------------------------------------


class ProbeFailure(RuntimeError):
    pass


def _notes(exc: BaseException) -> list[str]:
    return list(getattr(exc, "__notes__", []))


def test_a_failure_in_the_population_evaluation_is_reported_as_the_evaluation(monkeypatch):
    def fail(*args, **kwargs):
        raise ProbeFailure("a probe blew up")

    # the last step of the evaluation both drivers run
    monkeypatch.setattr("trainer._evaluation.evaluate_inputs", fail)
    cfg = tiny_config(**ONE_EPOCH)
    with pytest.raises(ProbeFailure) as solo:
        fit(cfg)
    with pytest.raises(ProbeFailure) as pop:
        fit_population([cfg, cfg.replace(lr=2e-3)])
    # type and message untouched; both say, the same way, that the evaluation raised
    assert str(pop.value) == str(solo.value) == "a probe blew up"
    assert _notes(pop.value) == _notes(solo.value) == [f"stagetune: raised in {EVALUATION}"]
    # what a failed trial stores (its traceback's last lines) names the evaluation
    stored = "".join(traceback.format_exception(pop.value)).rstrip().splitlines()[-12:]
    assert any("raised in the final evaluation" in line for line in stored)


def test_a_failure_in_training_is_not_noted_as_the_evaluation():
    cfg = tiny_config(epochs=6)
    data = load_dataset(cfg.data, cfg.seed)
    data.x[:] = float("nan")
    with pytest.raises(DivergenceError, match=r"\(epoch \d+, stage \d\)") as solo:
        fit(cfg, data=data)
    assert _notes(solo.value) == []


# -- the warm-up: one formula ---------------------------------------------------------------


def test_the_warmup_is_one_function_that_matches_a_hand_computation():
    cfg = tiny_config(lr=1e-3, warmup_epochs=2)
    batches = 6  # the tiny data set's batches per epoch
    assert warmup_steps(cfg, batches) == 12
    # by hand: lr * min(1, (step + 1) / 12), flat at lr from step 11 on
    hand = [1e-3 * ((s + 1) / 12) for s in range(11)] + [1e-3] * 4
    assert [learning_rate(cfg, s, batches) for s in range(15)] == hand
    assert [warmup_factor(s, 12) for s in (0, 5, 11, 40)] == [1 / 12, 0.5, 1.0, 1.0]
    # no warm-up: the full rate from the first step
    assert warmup_steps(cfg.replace(warmup_epochs=0), batches) == 1
    assert learning_rate(cfg.replace(warmup_epochs=0), 0, batches) == 1e-3

    # the same numbers where each driver reads them: LambdaLR for one model ...
    data = load_dataset(cfg.data, cfg.seed)
    model = build_model(cfg, data)
    opt, sched = make_optimiser(model, cfg, batches)
    seen = []
    for _ in range(15):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == hand
    # ... and the stacked Adam's per-member tensor, for members of other warm-ups
    other = cfg.replace(warmup_epochs=1, lr=2e-3)
    params = {n: torch.stack([p.detach()] * 2) for n, p in model.named_parameters()}
    adam = StackedAdam(params, [cfg, other], batches)
    for s in range(15):
        adam.n_steps = torch.full((2,), float(s), dtype=torch.float64)
        assert adam.current_lr().tolist() == [learning_rate(cfg, s, batches),
                                              learning_rate(other, s, batches)]


def _warmup_arithmetic(source: str) -> list[int]:
    """Lines that read ``.warmup_epochs`` or build a ``LambdaLR``: the warm-up's parts."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
        if name == "LambdaLR" or (name == "warmup_epochs" and isinstance(node, ast.Attribute)):
            lines.append(node.lineno)
    return lines


def test_only_the_optimiser_module_computes_the_warmup():
    assert _warmup_arithmetic("lr = cfg.optim.lr * min(1, (s + 1) / cfg.optim.warmup_epochs)")
    offenders = {p.name: _warmup_arithmetic(p.read_text()) for p in TRAINER.glob("*.py")
                 if p.name != "_optimiser.py"}
    assert {k: v for k, v in offenders.items() if v} == {}


def _penalty_calls(source: str) -> list[int]:
    """Lines that call ``independence_penalty``: where the penalty is computed."""
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(
                node.func, "attr", None)) == "independence_penalty"]


def test_only_the_loss_computes_the_independence_penalty():
    # solo runs and population members (a switch per member under vmap) both go through
    # staged_loss: one computation, so the two cannot measure different pairs or weights
    assert _penalty_calls("v = independence_penalty(m, zay, zy, za)") == [1]
    calls = {str(p.relative_to(TRAINER)): _penalty_calls(p.read_text())
             for p in TRAINER.rglob("*.py")}
    assert {k: v for k, v in calls.items() if v} == {"_model.py": [calls["_model.py"][0]]}
