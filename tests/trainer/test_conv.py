"""The convolutional architecture: shapes at every supported size, vmap, staged runs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from tests.trainer.conftest import interrupted_then_resumed, tiny_config
from trainer import ConfigError, ModelConfig, RunConfig, StagedVAE, fit, load_dataset
from trainer._fit import build_model
from trainer._model import conv_sides, resolve_arch

DIMS = {"zy": 3, "za": 4, "zay": 5, "zx": 6}
#: float32 unit roundoff
U32 = 2.0**-24


def assert_accuracy_of_weights(final: dict[str, float], cfg: RunConfig,
                               state: dict[str, torch.Tensor]) -> None:
    """``final``'s accuracies are those of ``state``'s q(y|zy) at the posterior mean,
    counted here on the evaluation's splits (its first ``eval_max_samples``).

    The evaluation reports a float32 mean of 0/1 values: the count is exact and the one
    division rounds to within U32 of k / n.
    """
    data = load_dataset(cfg.data, cfg.seed)
    model = build_model(cfg, data)
    model.load_state_dict(state)
    model.eval()
    for split in ("val", "test"):
        idx = data.splits[split][: cfg.eval_max_samples]
        with torch.no_grad():
            pred = model(data.x[idx], sample=False)["y_logits"].argmax(-1)
        k, n = int((pred == data.y[idx]).sum()), idx.numel()
        assert abs(final[f"acc_y_{split}"] - k / n) <= U32 * k / n, (split, k, n)


def _conv_model(side: int, channels: int = 3, seed: int = 0) -> StagedVAE:
    torch.manual_seed(seed)
    cfg = ModelConfig(arch="conv", conv_channels=4, zy_dim=3, za_dim=4, zay_dim=5, zx_dim=6)
    return StagedVAE(cfg, input_shape=(channels, side, side), n_classes=6, n_domains=4)


@pytest.mark.parametrize(
    ("side", "sides"),
    [
        (28, [28, 14, 7, 4]),
        (32, [32, 16, 8, 4]),
        (64, [64, 32, 16, 8, 4]),
        (96, [96, 48, 24, 12, 6, 3]),
    ],
)
def test_every_output_has_its_shape_at_each_size(side, sides):
    assert conv_sides(side) == sides  # ceil-halving until the map is at most 4 px
    model = _conv_model(side)
    x = torch.rand(5, 3, side, side)
    out = model(x)
    for g, d in DIMS.items():
        assert out["posteriors"][g].mu.shape == (5, d)
        assert out["posteriors"][g].logvar.shape == (5, d)
        assert out["posteriors"][g].z.shape == (5, d)
        assert model.prior_params(g, torch.zeros(5, dtype=torch.long),
                                  torch.zeros(5, dtype=torch.long))[0].shape == (5, d)
    assert out["recon_logits"].shape == x.shape
    assert out["y_logits"].shape == (5, 6) and out["a_logits"].shape == (5, 4)
    assert model.predict_y(x).shape == (5,)
    # one strided block per halving, in each encoder; the decoder mirrors them
    n_blocks = len(sides) - 1
    for enc in model.encoders.values():
        assert sum(isinstance(m, nn.Conv2d) for m in enc) == n_blocks
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in model.decoder) == n_blocks


def test_grey_images_decode_to_one_channel():
    model = _conv_model(28, channels=1)
    x = torch.rand(2, 1, 28, 28)
    assert model(x)["recon_logits"].shape == (2, 1, 28, 28)


def test_a_sample_does_not_depend_on_its_batch():
    # GroupNorm, not BatchNorm: a sample's encoding is the same alone or in a batch, and
    # in train and eval mode.
    model = _conv_model(32)
    x = torch.rand(8, 3, 32, 32)
    model.train()
    batch = model.encode_means(x)
    alone = model.encode_means(x[:1])
    model.eval()
    evaluated = model.encode_means(x)
    for g in DIMS:
        assert torch.allclose(batch[g][:1], alone[g], atol=1e-6)
        assert torch.allclose(batch[g], evaluated[g], atol=1e-6)
    assert not list(model.buffers())  # nothing is updated in place


def test_vmap_over_stacked_copies_equals_each_copy():
    models = [_conv_model(28, seed=s) for s in (1, 2, 3)]
    params, buffers = stack_module_state(models)
    x = torch.rand(4, 3, 28, 28)

    def recon(p, b, x):
        return functional_call(models[0], (p, b), (x,), {"sample": False})["recon_logits"]

    stacked = vmap(recon, in_dims=(0, 0, None))(params, buffers, x)
    for k, m in enumerate(models):
        assert torch.allclose(stacked[k], m(x, sample=False)["recon_logits"], atol=1e-5)


def test_arch_auto_is_the_data_sets_default_and_bad_arch_is_refused():
    assert resolve_arch(tiny_config()) == "mlp"  # digits declares mlp
    assert resolve_arch(tiny_config(dataset="mnist")) == "conv"
    assert resolve_arch(tiny_config(dataset="digits", arch="conv")) == "conv"
    with pytest.raises(ConfigError, match="unknown arch 'resnet'"):
        tiny_config(arch="resnet")
    with pytest.raises(ConfigError, match="conv_channels must be at least 1"):
        tiny_config(conv_channels=0)


def _conv_run(**flat):
    return tiny_config(arch="conv", conv_channels=4, image_size=16, **flat)


@pytest.mark.usefixtures("one_thread")
def test_staged_conv_run_end_to_end_and_its_resume_is_bitwise_equal(tmp_path):
    cfg = _conv_run(epochs=4, stage1_epochs=1, stage2_epochs=1)
    rows = []
    whole = fit(cfg, checkpoint_dir=tmp_path / "whole", report=rows.append)
    assert [r["stage"] for r in rows] == [1, 2, 3, 3]
    assert [r["penalty_active"] for r in rows] == [0.0, 1.0, 0.0, 0.0]
    assert all(math.isfinite(r["val_loss"]) for r in rows)
    assert whole.final["final_stage"] == 3.0
    assert "zay_independence_score" in whole.final
    # the evaluation reads the best stage-3 weights (epochs 2 and 3), kept in the checkpoint
    stored = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    assert stored["best_epoch"] == whole.best_epoch in (2, 3)
    assert_accuracy_of_weights(whole.final, cfg, stored["best_state"])

    resumed = interrupted_then_resumed(cfg, tmp_path / "cut", stop_epoch=1)
    timing = ("epoch_time_s", "samples_per_s")
    assert [{k: v for k, v in r.items() if k not in timing} for r in resumed.history] == [
        {k: v for k, v in r.items() if k not in timing} for r in whole.history
    ]
    for key, value in whole.final.items():
        assert resumed.final[key] == value, key
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_command_line_flags_reach_the_config():
    from trainer.cli import build_parser, config_from_args

    argv = ["--dataset", "shapes", "--arch", "conv", "--conv_channels", "8",
            "--image_size", "64"]
    cfg = config_from_args(build_parser().parse_args(argv), argv)
    assert (cfg.model.arch, cfg.model.conv_channels, cfg.data.image_size) == ("conv", 8, 64)
    default = config_from_args(build_parser().parse_args([]), [])
    assert (default.model.arch, default.data.image_size) == ("auto", None)
