"""``EvalInputs`` with posterior scales for some groups only: those groups are read from
posterior samples, the others as deterministic (each draw is the means), row for row."""

from __future__ import annotations

import numpy as np
import pytest

from tests.trainer.metrics.known import known_inputs, scores
from trainer.metrics import EvalInputs, fit_probes

pytestmark = pytest.mark.usefixtures("one_thread")

#: zay's means: a copy of zy shrunk this far below its unit posterior noise
SHRINK = 1e-3
DRAWS = 4
#: the metrics read here (the co-information and HSIC are slower and read the same rows)
READ = ["probe_accuracy", "factor_matrix", "activity", "zay_interaction", "correlation"]


def _zay_a_drowned_copy_of_zy(*, with_scales: bool) -> EvalInputs:
    """zay = SHRINK * zy on its means; with ``with_scales`` zay alone has unit posterior
    scales (on both splits) and zy, za, zx none."""
    inputs = known_inputs("y_only")
    for latents, std in ((inputs.fit_latents, inputs.fit_std),
                         (inputs.score_latents, inputs.score_std)):
        latents["zay"] = SHRINK * latents["zay"]
        if with_scales:
            std["zay"] = np.ones_like(latents["zay"])
    inputs.draws = DRAWS
    return inputs


def test_partial_posterior_scales_read_each_group_as_it_was_given():
    partial = _zay_a_drowned_copy_of_zy(with_scales=True)
    means_only = _zay_a_drowned_copy_of_zy(with_scales=False)
    fit_probes([partial, means_only])  # every probe of both in one batched solve
    m, d = scores(partial, READ), scores(means_only, READ)
    # DRAWS draws of each scored input; a group without scales gives its means once per
    # draw, so every group's scored rows line up input for input
    n = len(partial.score_factors["y"])
    assert (partial.score_draws, means_only.score_draws) == (DRAWS, 1)
    assert np.array_equal(partial.received("zy", "score"),
                          np.tile(partial.score_latents["zy"], (DRAWS, 1)))
    assert partial.received("zay", "score").shape == (DRAWS * n, 10)  # zay: 10 dims
    assert np.array_equal(partial.received("zy", "fit"), partial.fit_latents["zy"])
    # the deterministic groups' probes are their means', exactly
    cells = [k for k in d if (k.startswith("probe_acc_") or "_from_" in k)
             and "_zay_" not in k and not k.endswith("_from_zay")]
    # accuracy and chance-corrected of zy, za, zx x y, a, s; the factor matrix's cells
    assert len(cells) == 2 * 3 * 3 + 3 * 4
    assert {k: m[k] for k in cells} == {k: d[k] for k in cells}
    assert m["probe_acc_zy_y"] == m["factor_y_from_zy"] == 1.0
    # zay transmits nothing under noise a thousand times its signal: collapsed (its rate
    # ~1e-6 nats, below 0.01 per dimension), no leakage, independent of zy on samples,
    # while its means are a perfect copy
    assert d["zay_label_leakage"] == 1.0 and m["zay_label_leakage"] <= 0.05
    assert m["zay_collapsed"] == 1.0 and m["zay_rate"] < 1e-4
    assert m["zy_zay_correlation"] < 0.01 and m["zy_zay_correlation_means"] == pytest.approx(1.0)
    assert "zy_rate" not in m  # no scales, no rate


def test_scales_of_other_groups_on_the_two_splits_are_refused():
    inputs = known_inputs()
    unit = {g: np.ones_like(v) for g, v in inputs.fit_latents.items()}
    with pytest.raises(ValueError, match=r"same groups on both splits \(fit: \['zay'\], "
                                         r"score: \['zy'\]\)"):
        EvalInputs(inputs.fit_latents, inputs.fit_factors, inputs.score_latents,
                   inputs.score_factors, fit_std={"zay": unit["zay"]},
                   score_std={"zy": unit["zy"]})
    with pytest.raises(ValueError, match=r"fit: none, score: \['zy'\]"):
        EvalInputs(inputs.fit_latents, inputs.fit_factors, inputs.score_latents,
                   inputs.score_factors, score_std={"zy": unit["zy"]})
