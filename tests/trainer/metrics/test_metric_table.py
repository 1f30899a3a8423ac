"""The metric table (``trainer.objectives.METRICS``) and what ``evaluate_latents`` returns
name the same metrics, name for name.

The rule, both ways, on a full input (every latent group, ground-truth factors with an
interaction factor, posterior scales, each group's KL to its prior, a test and a
validation domain: what ``eval_inputs`` reads of a model):

1. every name in the table is returned: none is declared that nothing computes;
2. every name returned is in the table, with its direction, unless it is one of the
   diagnostics in ``NOT_HEADLINES``: a cell of a table indexed by a latent group or a
   factor, a pairwise term of a dependence score, a term a headline is computed from, or
   a ``_means`` variant (the same quantity on the encoder means). No study optimises
   those; the table may still declare pairwise terms it reports and ``_means`` variants
   (it declares the dependence scores'), never a cell or a headline's term.

So a new headline the evaluation returns fails here until the table declares it (its
direction with it) or it is named below as one of these kinds, and each kind below must
still match something the evaluation returns.
"""

from __future__ import annotations

import re

import pytest
import torch

from trainer import RunConfig, load_dataset
from trainer._evaluation import eval_inputs
from trainer._setup import build_model
from trainer.metrics import evaluate_latents, fit_probes
from trainer.objectives import METRICS

GROUP = "(zy|za|zay|zx)"
PAIRWISE = rf"(zy|za)_{GROUP}_\w+"
MEANS = r"\w+_means"
#: what the evaluation returns beside the table's headlines, by kind
NOT_HEADLINES: dict[str, str] = {
    rf"probe_acc(_cc)?_{GROUP}_\w+": "probe tables: one cell per (group, factor)",
    rf"factor_\w+_from_{GROUP}": "the factor x group matrix: one cell per (factor, group)",
    r"exclusivity_\w+": "one factor's exclusivity (factor_exclusivity averages them)",
    r"(zy|za|zx)_(active_dims|rate|kl|collapsed)": "activity of the groups other than zay",
    PAIRWISE: "pairwise terms of the dependence scores",
    r"zay_(mi_y|mi_y_given_a|h_y_given_a)": "the terms of zay_coinformation",
    r"factor_exclusivity": "disentanglement_score before its collapse gate",
    r"zay_active_fraction": "zay_active_dims over zay's width",
    MEANS: "the same quantity on the encoder means",
}
#: the kinds the table may declare too (it reports some pairs, and the dependence scores'
#: means); a cell or a headline's term in the table would be a headline misfiled
DECLARABLE = {PAIRWISE, MEANS}


@pytest.fixture(scope="module")
def returned() -> set[str]:
    """What ``evaluate_latents`` returns for an untrained model's full input."""
    cfg = RunConfig().replace(max_samples=300, device="cpu", write_plots=False,
                              test_domain=5, val_domain=4, eval_max_samples=200)
    data = load_dataset(cfg.data, 0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        inputs = eval_inputs(build_model(cfg, data), data, cfg)
        inputs.draws = 4  # the names do not depend on how many draws are scored
        fit_probes([inputs])
        names = set(evaluate_latents(inputs))
    finally:
        torch.set_num_threads(before)
    # the input is full: scales, KL, both held-out domains and the interaction
    assert inputs.stochastic and set(inputs.kl) == {"zy", "za", "zay", "zx"}
    assert {"acc_y_test_domain", "acc_y_val_domain"} <= set(inputs.task)
    assert inputs.interaction_factor == "s" and inputs.factor_groups
    return names


def _kinds(name: str) -> list[str]:
    return [pattern for pattern in NOT_HEADLINES if re.fullmatch(pattern, name)]


def test_every_metric_in_the_table_is_returned(returned):
    assert sorted(set(METRICS) - returned) == []


def test_every_headline_returned_is_in_the_table(returned):
    undeclared = sorted(n for n in returned - set(METRICS) if not _kinds(n))
    assert undeclared == []


def test_each_kind_of_diagnostic_names_something_returned(returned):
    unused = [p for p in NOT_HEADLINES if not any(re.fullmatch(p, n) for n in returned)]
    assert unused == []


def test_the_table_declares_no_cell_or_term_of_a_headline():
    misfiled = {n: kinds for n in METRICS if (kinds := set(_kinds(n)) - DECLARABLE)}
    assert misfiled == {}
    # the table's headlines are none of the kinds at all
    assert [n for n in ("disentanglement_score", "zay_independence_score", "task_accuracy",
                        "zay_label_leakage", "zay_collapsed") if _kinds(n)] == []
