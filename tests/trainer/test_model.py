from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.trainer.conftest import tiny_config
from trainer import StagedVAE, staged_loss
from trainer._independence import hsic
from trainer._model import Posterior, gaussian_kl

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


def _hsic_u(k, ll):  # unbiased HSIC of two Gram matrices (Song et al. 2012), literally
    n = k.shape[0]
    k, ll = k - torch.diag(torch.diag(k)), ll - torch.diag(torch.diag(ll))
    one = torch.ones(n, 1, dtype=k.dtype)
    return (torch.trace(k @ ll) + (one.T @ k @ one) * (one.T @ ll @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (one.T @ k @ ll @ one)).squeeze() / (n * (n - 3))


def _cka(u, v):  # debiased linear CKA, clamped at 0 as the penalty is
    u, v = u.double(), v.double()
    k, ll = u @ u.T, v @ v.T
    return (_hsic_u(k, ll) / (_hsic_u(k, k) * _hsic_u(ll, ll)).sqrt()).clamp_min(0)


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

    penalty = _cka(zay, zy) + _cka(zay, za)
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


# -- the levers: per-group KL weights and the penalty's pairs -------------------------------


def _double_pass(cfg, seed=0):
    """A float64 model and one sampled pass: loss differences are then exact to ~1e-15."""
    model, x, y, a = _model_and_batch(cfg, seed)
    model = model.double()
    out = model(x.double(), generator=torch.Generator().manual_seed(1))
    return model, out, x.double(), y, a


@pytest.mark.parametrize("mode", ["gate", "kl_weight"])
@pytest.mark.parametrize(("name", "group"), [("beta_y", "zy"), ("beta_a", "za"),
                                             ("beta_ay", "zay"), ("beta_x", "zx")])
def test_a_kl_weight_moves_the_loss_by_its_change_times_that_groups_kl(mode, name, group):
    cfg = tiny_config(zay_suppression=mode)
    model, out, x, y, a = _double_pass(cfg)
    c, beta = 0.25, 0.6
    base = staged_loss(model, out, x, y, a, cfg, capacity=c, beta_scale=beta)
    changed = staged_loss(model, out, x, y, a, cfg.replace(**{name: 2.5}), capacity=c,
                          beta_scale=beta)
    # the group's KL, computed here from its posterior and its prior
    post = out["posteriors"][group]
    if group == "zx":
        mu_p = logvar_p = torch.zeros_like(post.mu)
    else:
        emb = {"zy": (model.prior_zy, y), "za": (model.prior_za, a),
               "zay": (model.prior_zay, y * 3 + a)}[group]
        mu_p, logvar_p = emb[0](emb[1]).chunk(2, -1)
    kl = float(gaussian_kl(post.mu, post.logvar, mu_p, logvar_p.clamp(-10, 10)).mean())
    scale = c if (group == "zay" and mode == "kl_weight") else 1.0  # zay's capacity
    expected = (2.5 - 1.0) * beta * scale * kl
    assert float(changed.total - base.total) == pytest.approx(expected, rel=1e-10)
    # the other groups' terms and the KLs themselves are untouched
    assert {g: float(v) for g, v in changed.kl.items()} == {g: float(v)
                                                           for g, v in base.kl.items()}
    # weights passed per call (a population member's) act as the config's
    weights = {"zy": 1.0, "za": 1.0, "zay": 1.0, "zx": 1.0} | {group: torch.tensor(2.5)}
    direct = staged_loss(model, out, x, y, a, cfg, capacity=c, beta_scale=beta,
                         weights=weights)
    assert float(direct.total) == pytest.approx(float(changed.total), rel=1e-12)


def test_beta_ay_does_nothing_in_kl_target_mode():
    cfg = tiny_config(zay_suppression="kl_target")
    model, out, x, y, a = _double_pass(cfg)
    one = staged_loss(model, out, x, y, a, cfg, capacity=0.5)
    four = staged_loss(model, out, x, y, a, cfg.replace(beta_ay=4.0), capacity=0.5)
    assert float(one.total) == float(four.total)


def _leaky_zx(out, seed=3):
    """``out`` with zx's posterior mean a noisy linear map of zay's (so the zay/zx pair
    measures clearly above 0)."""
    post = dict(out["posteriors"])
    g = torch.Generator().manual_seed(seed)
    zay = post["zay"].mu
    mix = torch.randn(zay.shape[1], post["zx"].mu.shape[1], generator=g, dtype=zay.dtype)
    mu = zay @ mix
    mu = mu + 0.3 * mu.std() * torch.randn(mu.shape, generator=g, dtype=zay.dtype)
    post["zx"] = Posterior(mu, post["zx"].logvar, mu)
    return {**out, "posteriors": post}


@pytest.mark.parametrize("measure", ["corr", "hsic", "hsic_labels"])
def test_penalty_pairs_zy_za_zx_adds_exactly_the_zay_zx_term(measure):
    cfg = tiny_config(penalty_measure=measure, independence_penalty=3.0)
    model, out, x, y, a = _double_pass(cfg)
    out = _leaky_zx(out)
    two = staged_loss(model, out, x, y, a, cfg, capacity=1.0, with_penalty=True)
    three = staged_loss(model, out, x, y, a, cfg.replace(penalty_pairs="zy_za_zx"),
                        capacity=1.0, with_penalty=True)
    zay, zx = out["posteriors"]["zay"].mu, out["posteriors"]["zx"].mu
    # corr: debiased linear CKA written out above; hsic and hsic_labels: RBF HSIC of
    # zay against zx (zx has no label, so hsic_labels measures its pair on the latents)
    pair = float(_cka(zay, zx)) if measure == "corr" else float(hsic(zay, zx).clamp_min(0))
    assert pair > 0.1  # zx leaks zay: the pair is measured, not clamped away
    assert float(three.penalty - two.penalty) == pytest.approx(pair, rel=1e-9)
    assert float(three.total - two.total) == pytest.approx(3.0 * pair, rel=1e-9)
