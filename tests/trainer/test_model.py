from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.trainer.conftest import tiny_config
from trainer import StagedVAE, staged_loss
from trainer._model import gaussian_kl

ARCHS = ["mlp", "conv"]


def _model_and_batch(cfg, seed=0):
    torch.manual_seed(seed)
    model = StagedVAE(cfg.model, input_shape=(3, 8, 8), n_classes=4, n_domains=3)
    assert model.arch == (cfg.model.arch if cfg.model.arch != "auto" else "mlp")
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(32, 3, 8, 8, generator=g)
    y = torch.randint(0, 4, (32,), generator=g)
    a = torch.randint(0, 3, (32,), generator=g)
    return model, x, y, a


def _grad_norm(module):
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return sum(float(g.abs().sum()) for g in grads)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("heads_read_zay", [False, True])
def test_gate_stage1_sends_no_gradient_into_zay_encoder(heads_read_zay, arch):
    cfg = tiny_config(heads_read_zay=heads_read_zay, arch=arch, conv_channels=4)
    model, x, y, a = _model_and_batch(cfg)
    out = model(x, zay_gate=0.0, zay_frozen=True)
    staged_loss(model, out, x, y, a, cfg, capacity=0.0).total.backward()
    assert _grad_norm(model.encoders["zay"]) == 0.0
    assert _grad_norm(model.encoders["zy"]) > 0.0
    assert _grad_norm(model.encoders["za"]) > 0.0


@pytest.mark.parametrize("arch", ARCHS)
def test_gate_stage3_trains_zay_encoder(arch):
    cfg = tiny_config(arch=arch, conv_channels=4)
    model, x, y, a = _model_and_batch(cfg)
    out = model(x, zay_gate=1.0)
    staged_loss(model, out, x, y, a, cfg, capacity=1.0).total.backward()
    assert _grad_norm(model.encoders["zay"]) > 0.0


@pytest.mark.parametrize("arch", ARCHS)
def test_gate_zeroes_zay_at_the_decoder(arch):
    cfg = tiny_config(arch=arch, conv_channels=4)
    model, x, _, _ = _model_and_batch(cfg)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    gated = model(x, zay_gate=0.0, generator=g1)["recon_logits"]
    # With zay's weights in the decoder zeroed, the ungated model must decode the same.
    with torch.no_grad():
        first = model.decoder[0]  # both archs: a Linear reads the concatenated latents
        zay_cols = slice(8, 12)  # decoder input order: zy(4) za(4) zay(4) zx(4)
        first.weight[:, zay_cols] = 0.0
    assert torch.allclose(gated, model(x, zay_gate=1.0, generator=g2)["recon_logits"])


def test_kl_weight_loss_equals_the_formula_term_by_term():
    cfg = tiny_config(zay_suppression="kl_weight", beta_y=0.7, beta_a=1.3, beta_ay=2.0,
                      beta_x=0.5, alpha_y=3.0, alpha_a=5.0, recon_weight=1.5,
                      independence_penalty=4.0)
    model, x, y, a = _model_and_batch(cfg)
    c, beta = 0.01, 0.8
    out = model(x, generator=torch.Generator().manual_seed(1))
    terms = staged_loss(model, out, x, y, a, cfg, capacity=c, beta_scale=beta,
                        with_penalty=True)
    post = out["posteriors"]

    def kl(group, mu_p, logvar_p):
        return gaussian_kl(post[group].mu, post[group].logvar, mu_p, logvar_p).mean()

    def prior(emb, idx):
        mu, logvar = emb(idx).chunk(2, -1)
        return mu, logvar.clamp(-10, 10)

    kl_zy = kl("zy", *prior(model.prior_zy, y))
    kl_za = kl("za", *prior(model.prior_za, a))
    kl_zay = kl("zay", *prior(model.prior_zay, y * 3 + a))
    zeros = torch.zeros_like(post["zx"].mu)
    kl_zx = kl("zx", zeros, zeros)
    recon = F.binary_cross_entropy(torch.sigmoid(out["recon_logits"]), x, reduction="sum") / 32
    ce_y, ce_a = F.cross_entropy(out["y_logits"], y), F.cross_entropy(out["a_logits"], a)
    zy, za, zay = post["zy"].mu, post["za"].mu, post["zay"].mu

    def hsic_u(k, ll):  # unbiased HSIC of two Gram matrices (Song et al. 2012), literally
        n = k.shape[0]
        k, ll = k - torch.diag(torch.diag(k)), ll - torch.diag(torch.diag(ll))
        one = torch.ones(n, 1, dtype=k.dtype)
        return (torch.trace(k @ ll) + (one.T @ k @ one) * (one.T @ ll @ one) / ((n - 1) * (n - 2))
                - 2.0 / (n - 2) * (one.T @ k @ ll @ one)).squeeze() / (n * (n - 3))

    def cka(u, v):  # debiased linear CKA, clamped at 0 as the penalty is
        u, v = u.double(), v.double()
        k, ll = u @ u.T, v @ v.T
        return (hsic_u(k, ll) / (hsic_u(k, k) * hsic_u(ll, ll)).sqrt()).clamp_min(0)

    penalty = cka(zay, zy) + cka(zay, za)
    expected = (1.5 * recon + beta * (0.7 * kl_zy + 0.5 * kl_zx + c * 2.0 * kl_zay + 1.3 * kl_za)
                + 3.0 * ce_y + 5.0 * ce_a + 4.0 * penalty.float())
    assert float(terms.recon) == pytest.approx(float(recon), rel=1e-4)
    assert float(terms.kl["zy"]) == pytest.approx(float(kl_zy), rel=1e-5)
    assert float(terms.kl["zay"]) == pytest.approx(float(kl_zay), rel=1e-5)
    assert float(terms.kl_zay_term) == pytest.approx(float(c * 2.0 * kl_zay), rel=1e-5)
    # near independence (a fresh model) both terms sit near 0: float32 rounding, not rel
    assert float(terms.penalty) == pytest.approx(float(penalty), rel=1e-4, abs=1e-4)
    assert float(terms.total) == pytest.approx(float(expected), rel=1e-4)


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(2)
    mu_q, lv_q, mu_p, lv_p = (torch.randn(5, 3, generator=g) for _ in range(4))
    q = torch.distributions.Normal(mu_q, (0.5 * lv_q).exp())
    p = torch.distributions.Normal(mu_p, (0.5 * lv_p).exp())
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    assert torch.allclose(gaussian_kl(mu_q, lv_q, mu_p, lv_p), expected, atol=1e-5)


def test_kl_target_term_is_distance_to_the_capacity_target():
    cfg = tiny_config(zay_suppression="kl_target", kl_target_gamma=3.0, kl_target_max=5.0)
    model, x, y, a = _model_and_batch(cfg)
    out = model(x)
    terms = staged_loss(model, out, x, y, a, cfg, capacity=0.5)
    assert float(terms.kl_zay_term) == pytest.approx(3.0 * abs(float(terms.kl["zay"]) - 2.5),
                                                     rel=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_diva_variant_has_no_zay(arch):
    cfg = tiny_config(variant="diva", arch=arch, conv_channels=4)
    model, x, y, a = _model_and_batch(cfg)
    out = model(x)
    assert set(out["posteriors"]) == {"zy", "za", "zx"}
    terms = staged_loss(model, out, x, y, a, cfg, capacity=1.0, with_penalty=True)
    assert float(terms.penalty) == 0.0
