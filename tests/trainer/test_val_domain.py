"""The validation domain (``--val_domain``): its split, its metric on a known answer,
and early stopping that follows it (issue 20: selection that never reads the test
domain)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.trainer.conftest import tiny_config
from trainer import ConfigError, DataConfig, RunConfig, fit, load_dataset
from trainer._bundle import DataBundle, make_splits
from trainer._evaluation import eval_inputs
from trainer._fit import build_model
from trainer._progress import RunProgress
from trainer._validation import validate_epoch
from trainer.cli import build_parser, config_from_args, main
from trainer.metrics import task_accuracy

SPLITS = ("train", "val", "test", "test_domain", "val_domain")


def _sources(data, split):
    return set(data.source[data.splits[split]].tolist())


# -- the split ------------------------------------------------------------------------


@pytest.mark.parametrize("test_domain", [None, 2])
def test_val_domain_is_held_out_of_training_from_its_own_sources(test_domain):
    """digits: every source digit sits in all six domains, so the validation domain's
    images must come from sources reserved for it, as the test domain's do."""
    cfg = DataConfig(max_samples=40, val_domain=4, test_domain=test_domain)
    data = load_dataset(cfg, seed=0)
    held = data.splits["val_domain"]
    assert held.numel() > 0 and (data.a[held] == 4).all()
    names = [k for k in SPLITS if k in data.splits]
    assert ("test_domain" in names) == (test_domain is not None)
    for k in names:
        if k != "val_domain":
            assert (data.a[data.splits[k]] != 4).all(), k
            assert not _sources(data, k) & _sources(data, "val_domain"), k
    # every source in exactly one split, none lost
    assert sum(len(_sources(data, k)) for k in names) == 40
    # 15% (val_fraction) of the sources left after the test domain's reservation
    left = 40 - (round(0.15 * 40) if test_domain is not None else 0)
    assert held.numel() == round(0.15 * left)
    if test_domain is not None:  # the test domain is reserved first: unchanged by it
        alone = load_dataset(DataConfig(max_samples=40, test_domain=2), seed=0)
        assert torch.equal(alone.splits["test_domain"], data.splits["test_domain"])


def test_one_domain_per_image_puts_the_whole_domain_in_val_domain():
    """mnist and shapes: each image is its own source, so the validation domain is all
    of that domain's images, and the others are split as before."""
    domain = np.random.default_rng(0).integers(0, 6, 500)
    splits = make_splits(domain, DataConfig(test_domain=1, val_domain=3), seed=0)
    assert set(splits["val_domain"].tolist()) == set(np.flatnonzero(domain == 3).tolist())
    assert set(splits["test_domain"].tolist()) == set(np.flatnonzero(domain == 1).tolist())
    together = np.concatenate([v.numpy() for v in splits.values()])
    assert len(together) == len(set(together.tolist())) == 500


def test_shapes_val_domain():
    data = load_dataset(DataConfig(dataset="shapes", image_size=32, max_samples=120,
                                   val_domain=5), 0)
    assert set(data.a[data.splits["val_domain"]].tolist()) == {5}
    assert data.split_size("val_domain") == int((data.a == 5).sum())
    for k in ("train", "val", "test"):
        assert (data.a[data.splits[k]] != 5).all()


def test_bad_val_domains_are_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="val_domain 2 is also the test_domain"):
        RunConfig().replace(test_domain=2, val_domain=2)
    with pytest.raises(ConfigError, match="val_domain 6 is not a domain index"):
        RunConfig().replace(val_domain=6)
    with pytest.raises(ConfigError, match="val_domain 3 has no samples"):
        make_splits(np.zeros(20, dtype=int), DataConfig(val_domain=3), seed=0)
    code = main(["--test_domain", "1", "--val_domain", "1", "--epochs", "1",
                 "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "also the test_domain" in err[0]
    assert not (tmp_path / "r").exists()


def test_cli_flags_set_the_fields():
    argv = ["--val_domain", "3", "--early_stopping_metric", "val_acc_y_val_domain"]
    cfg = config_from_args(build_parser().parse_args(argv), argv)
    assert cfg.data.val_domain == 3
    assert cfg.optim.early_stopping_metric == "val_acc_y_val_domain"
    default = config_from_args(build_parser().parse_args([]), [])
    assert default.data.val_domain is None and default.optim.early_stopping_metric == "val_loss"
    with pytest.raises(ConfigError, match="needs a validation domain; give --val_domain"):
        RunConfig().replace(early_stopping_metric="val_acc_y_val_domain")
    with pytest.raises(ConfigError, match="unknown early_stopping_metric 'acc'"):
        RunConfig().replace(early_stopping_metric="acc")


# -- the metric on a known answer ------------------------------------------------------

N_PER_DOMAIN = 40
AGREE = 10  # validation-domain samples whose shortcut still agrees with y


def _shortcut_data(val_domain: int = 2) -> tuple[RunConfig, DataBundle]:
    """Two "pixels": x0 = y in every domain (the invariant factor); x1 = y in the
    training domains 0 and 1 (a perfect shortcut there), but in domain 2 equal to y for
    only AGREE of its N_PER_DOMAIN images and 1 - y for the rest."""
    cfg = RunConfig().replace(domains=(0.0, 15.0, 30.0), val_domain=val_domain,
                              device="cpu", hidden_dim=4, zy_dim=2, za_dim=2, zay_dim=2,
                              zx_dim=2, eval_max_samples=1000)
    domain = np.repeat(np.arange(3), N_PER_DOMAIN)
    y = np.tile(np.arange(N_PER_DOMAIN) % 2, 3)
    shortcut = y.copy()
    in_val = np.flatnonzero(domain == val_domain)
    shortcut[in_val[AGREE:]] = 1 - y[in_val[AGREE:]]
    x = torch.tensor(np.stack([y, shortcut], 1), dtype=torch.float32)[:, :, None, None]
    return cfg, DataBundle(
        x=x, y=torch.from_numpy(y), a=torch.from_numpy(domain), n_classes=2, n_domains=3,
        splits=make_splits(domain, cfg.data, seed=0))


@torch.no_grad()
def _reader(cfg: RunConfig, data: DataBundle, pixel: int):
    """An MLP model whose q(y|zy) reads exactly one pixel: zy_0 = x[pixel] through the
    encoder's two ReLU layers (x >= 0 passes them unchanged), class 1 iff zy_0 > 1/2."""
    model = build_model(cfg, data)
    for layer in model.encoders["zy"]:
        if isinstance(layer, torch.nn.Linear):
            layer.weight.zero_()
            layer.bias.zero_()
    first, second, last = (m for m in model.encoders["zy"] if isinstance(m, torch.nn.Linear))
    first.weight[0, pixel] = 1.0
    second.weight[0, 0] = 1.0
    last.weight[0, 0] = 1.0  # mu_zy[0]; log-variances 0
    model.head_y.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
    model.head_y.bias.copy_(torch.tensor([0.5, -0.5]))
    return model


@pytest.mark.parametrize(("pixel", "in_domain", "out_of_domain"),
                         [(0, 1.0, 1.0), (1, 1.0, AGREE / N_PER_DOMAIN)])
def test_acc_y_val_domain_on_a_known_answer(pixel, in_domain, out_of_domain):
    """The invariant reader scores the same in and out of domain; the shortcut reader is
    perfect in the training domains and drops to AGREE / N_PER_DOMAIN = 0.25 in the
    validation domain, which is what its construction implies. The per-epoch proxy on
    the same weights gives the same value."""
    cfg, data = _shortcut_data()
    assert data.split_size("val_domain") == N_PER_DOMAIN
    model = _reader(cfg, data, pixel)
    inputs = eval_inputs(model, data, cfg)
    assert inputs.task["acc_y_val"] == inputs.task["acc_y_test"] == in_domain
    assert inputs.task["acc_y_val_domain"] == pytest.approx(out_of_domain, abs=1e-12)
    final = task_accuracy(inputs)
    assert final["acc_y_val_domain"] == inputs.task["acc_y_val_domain"]
    assert "acc_y_test_domain" not in final  # no test domain here
    # its confusion matrix on the validation domain: the reader predicts the pixel it
    # reads, so cell (y, p) counts the validation images whose class is y and pixel is p
    held = data.splits["val_domain"]
    read = data.x[held, pixel, 0, 0].long()
    expected = [[int(((data.y[held] == t) & (read == p)).sum()) for p in (0, 1)]
                for t in (0, 1)]
    assert inputs.confusion == {"val_domain": expected}
    assert expected == ([[20, 0], [0, 20]] if pixel == 0 else [[5, 15], [15, 5]])
    row = validate_epoch(model, data, cfg, capacity=1.0, beta=1.0)
    assert float(row["val_acc_y_val_domain"]) == pytest.approx(out_of_domain, abs=1e-7)
    assert float(row["val_acc_y"]) == in_domain


def test_no_val_domain_no_metric():
    cfg, data = _shortcut_data()
    del data.splits["val_domain"]
    model = _reader(cfg, data, 0)
    assert "acc_y_val_domain" not in eval_inputs(model, data, cfg).task
    assert "val_acc_y_val_domain" not in validate_epoch(model, data, cfg, capacity=1.0,
                                                        beta=1.0)


# -- early stopping ------------------------------------------------------------------


def _rows(progress, values, column, stage=3):
    for e, v in enumerate(values):
        progress.end_epoch({"val_loss": 1.0, column: v} if column != "val_loss"
                           else {"val_loss": v}, bad=0, batches_per_epoch=1, epoch=e,
                           stage=stage, state=lambda e=e: {"epoch": torch.tensor(e)})
        if progress.stopped_early:
            break


def test_end_epoch_follows_the_chosen_column():
    """val_acc_y_val_domain is maximised (a tie is no improvement); val_loss minimised."""
    cfg = RunConfig().replace(val_domain=1, early_stopping_metric="val_acc_y_val_domain",
                              patience=3)
    p = RunProgress(cfg)
    _rows(p, [0.5, 0.7, 0.6, 0.7, 0.65, 0.9], "val_acc_y_val_domain")
    assert p.best_epoch == 1 and p.stopped_early and len(p.history) == 5
    assert int(p.best_state["epoch"]) == 1 and p.best_loss == -0.7
    q = RunProgress(RunConfig().replace(patience=3))
    _rows(q, [0.5, 0.7, 0.4, 0.45, 0.41, 0.42], "val_loss")
    assert q.best_epoch == 2 and q.stopped_early and len(q.history) == 6
    # stages 1 and 2 are never compared
    r = RunProgress(cfg)
    _rows(r, [0.9, 0.1], "val_acc_y_val_domain", stage=2)
    assert r.best_epoch == -1 and not r.stopped_early


@pytest.mark.usefixtures("one_thread")
def test_fit_stops_where_the_val_domain_proxy_peaked():
    cfg = tiny_config(epochs=10, stage1_epochs=1, stage2_epochs=1, val_domain=2,
                      early_stopping_metric="val_acc_y_val_domain", patience=3,
                      max_samples=150, batch_size=32, lr=3e-3)
    result = fit(cfg)
    rows = [r for r in result.history if r["stage"] == 3]
    values = [r["val_acc_y_val_domain"] for r in rows]
    best = rows[int(np.argmax(values))]["epoch"]  # the first of the highest
    assert result.best_epoch == best
    # the validation loss was still falling: following it would have picked a later epoch
    assert result.history[-1]["val_loss"] < result.history[int(best)]["val_loss"]
    after = [v for r, v in zip(rows, values, strict=True) if r["epoch"] > best]
    assert all(v <= max(values) for v in after)
    if result.stopped_early:
        assert len(after) == cfg.optim.patience
    # the final evaluation reads the best epoch's weights: the proxy's value there
    assert result.final["acc_y_val_domain"] == pytest.approx(max(values), abs=1e-6)
    assert result.final["best_epoch"] == best


def test_early_stopping_on_data_without_val_domain_is_refused_before_training():
    cfg = tiny_config(val_domain=2, early_stopping_metric="val_acc_y_val_domain")
    data = load_dataset(tiny_config().data, 0)  # loaded without --val_domain
    with pytest.raises(ConfigError, match="needs a val_domain split"):
        fit(cfg, data=data)
