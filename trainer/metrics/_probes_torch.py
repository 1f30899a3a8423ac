"""The evaluation's probes in torch, batched over problems (members x groups x factors).

They solve the same problems as the scikit-learn reference in ``_probes``:

- ``logistic_probes``: ``StandardScaler`` then ``LogisticRegression(C=c)`` (lbfgs,
  multinomial for three or more classes, one sigmoid for two), i.e. minimise
  ``mean_i CE_i + ||W||^2 / (2 C n)`` with the intercept unpenalised. Two classes use
  the softmax form with the penalty doubled: its optimum has ``w1 = -w0``, so
  ``w = w1 - w0`` carries the sigmoid's penalty ``||w||^2 / (2 C n)`` exactly.
- ``ridge_probes``: the ridge fit on standardised features of ``regression_scores``.

Problems of different sizes share one padded batch: padded samples have weight 0,
padded features are 0 (their weights only feel the penalty and stay 0), padded classes
get logit -inf. One L-BFGS run in float64 minimises the sum of the problems' objectives,
which are independent, so each reaches its own optimum.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

_STD_FLOOR = 1e-12


def _standardise(x_fit: torch.Tensor, fit_mask: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fit split scaled by its mean and (population) std over its real samples, and
    that mean and std, ``(P, 1, d)`` each (scored inputs are not scaled: the fitted
    weights are mapped back instead, ``_unstandardised``)."""
    w = fit_mask.unsqueeze(-1).to(x_fit.dtype)
    n = w.sum(1, keepdim=True).clamp_min(1.0)
    mean = (x_fit * w).sum(1, keepdim=True) / n
    var = (((x_fit - mean) ** 2) * w).sum(1, keepdim=True) / n
    std = var.sqrt()
    std = torch.where(std > _STD_FLOOR, std, torch.ones_like(std))
    return (x_fit - mean) / std * w, mean, std


def _unstandardised(weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
                    std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``(P, d, k)`` and bias ``(P, k)`` that give on raw x what the fitted ones
    give on (x - mean) / std: the many scored draws are never rescaled."""
    scaled = weight / std.transpose(1, 2)
    return scaled, bias - (mean @ scaled).squeeze(1)


def _pad(arrays: Sequence[np.ndarray], shape: tuple[int, ...], dtype: torch.dtype,
         device: torch.device | str, fill: float = 0.0) -> torch.Tensor:
    if len(arrays) == 1 and np.shape(arrays[0]) == shape:  # one problem: nothing to pad
        return torch.as_tensor(np.asarray(arrays[0])).to(device=device, dtype=dtype)[None]
    out = torch.full((len(arrays), *shape), fill, dtype=dtype)
    for i, a in enumerate(arrays):
        t = torch.as_tensor(np.asarray(a))
        if t.dim() == 1:
            out[i, : t.shape[0]] = t.to(dtype)
        else:
            out[i, : t.shape[0], : t.shape[1]] = t.to(dtype)
    return out.to(device)


def logistic_probes(
    problems: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    c: float = 1.0,
    device: torch.device | str = "cpu",
    max_iter: int = 1000,
    batched: bool | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fit one standardised logistic probe per ``(x_fit, y_fit, x_score)``.

    Returns, per problem, ``(proba, classes)`` as scikit-learn's ``predict_proba`` and
    ``classes_`` would: class probabilities of ``x_score`` over the sorted labels seen
    in ``y_fit``. Every problem needs at least two classes and one feature.
    ``batched`` (default: on any device but a CPU) solves all problems in one padded
    L-BFGS run; otherwise one run per problem.
    """
    out = []
    for logits, classes in _solve_logistic(problems, c=c, device=device, max_iter=max_iter,
                                           batched=batched):
        out.append((torch.softmax(logits, -1).cpu().numpy(), classes))
    return out


def logistic_scores(
    problems: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    *,
    c: float = 1.0,
    device: torch.device | str = "cpu",
    max_iter: int = 1000,
    batched: bool | None = None,
) -> list[tuple[float, float]]:
    """``logistic_probes`` on ``(x_fit, y_fit, x_score, y_score)``, scored on the device.

    Returns, per problem, the accuracy on ``y_score`` and the mean cross-entropy in nats,
    with ``_probes``' conventions: probabilities clipped to [1e-6, 1], and a
    label not seen when fitting gets the floor probability. Nothing of size
    ``len(x_score)`` x classes leaves the device (the posterior-sample probes score many
    draws per input).
    """
    solved = _solve_logistic([p[:3] for p in problems], c=c, device=device,
                             max_iter=max_iter, batched=batched)
    out = []
    for (logits, classes), (*_, y_score) in zip(solved, problems, strict=True):
        pos = np.clip(np.searchsorted(classes, y_score), 0, len(classes) - 1)
        seen = torch.as_tensor(classes[pos] == y_score, device=logits.device)
        label = torch.as_tensor(pos, device=logits.device)
        log_p = logits.gather(-1, label[:, None]).squeeze(-1) - logits.logsumexp(-1)
        floor = float(np.log(1e-6))
        log_p = torch.where(seen, log_p.clamp(floor, 0.0), torch.full_like(log_p, floor))
        correct = (logits.argmax(-1) == label) & seen
        out.append((float(correct.double().mean()), float(-log_p.mean())))
    return out


def _solve_logistic(
    problems: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    c: float,
    device: torch.device | str,
    max_iter: int,
    batched: bool | None,
) -> list[tuple[torch.Tensor, np.ndarray]]:
    """The fitted probes' logits on each problem's ``x_score`` (on the device), and the
    sorted classes of its ``y_fit``."""
    if not problems:
        return []
    if batched is None:
        # On a CPU the cost is arithmetic, not launches: one solve per problem stops each
        # at its own convergence instead of running all to the slowest one's.
        batched = torch.device(device).type != "cpu"
    if not batched and len(problems) > 1:
        return [_solve_logistic([p], c=c, device=device, max_iter=max_iter, batched=False)[0]
                for p in problems]
    classes = [np.unique(y) for _, y, _ in problems]
    encoded = [np.searchsorted(cl, y) for cl, (_, y, _) in zip(classes, problems, strict=True)]
    n_fit = max(len(y) for _, y, _ in problems)
    n_score = max(len(xs) for _, _, xs in problems)
    d = max(x.shape[1] for x, _, _ in problems)
    k = max(len(cl) for cl in classes)
    f64 = torch.float64
    x_fit = _pad([x for x, _, _ in problems], (n_fit, d), f64, device)
    x_score = _pad([xs for _, _, xs in problems], (n_score, d), f64, device)
    y = _pad(encoded, (n_fit,), torch.long, device)
    fit_mask = _pad([np.ones(len(e)) for e in encoded], (n_fit,), torch.bool, device)
    x_fit, mean, std = _standardise(x_fit, fit_mask)
    n_real = fit_mask.sum(1).to(f64)
    n_classes = torch.tensor([len(cl) for cl in classes], device=device)
    class_ok = torch.arange(k, device=device)[None, :] < n_classes[:, None]  # (P, K)
    # sklearn's penalty 1 / (C n), doubled for the two-class softmax form (see module doc)
    reg = torch.where(n_classes == 2, 2.0, 1.0).to(f64) / (c * n_real)
    weight = torch.zeros((len(problems), d, k), dtype=f64, device=device, requires_grad=True)
    bias = torch.zeros((len(problems), k), dtype=f64, device=device, requires_grad=True)
    sample_w = fit_mask.to(f64) / n_real[:, None]
    neg_inf = torch.tensor(float("-inf"), dtype=f64, device=device)
    padded_classes = not bool(class_ok.all())

    def logits_of(x: torch.Tensor, weight: torch.Tensor = weight,
                  bias: torch.Tensor = bias) -> torch.Tensor:
        logits = torch.baddbmm(bias[:, None, :], x, weight)
        return torch.where(class_ok[:, None, :], logits, neg_inf) if padded_classes else logits

    def closure() -> torch.Tensor:
        # The objective and its gradient in closed form (no autograd graph):
        # d/dW = X' diag(w) (softmax - onehot(y)) + reg W, d/db = sum_i w_i (softmax_i - y_i).
        with torch.no_grad():
            logits = logits_of(x_fit)
            top = logits.amax(-1, keepdim=True)
            lse = top + (logits - top).exp().sum(-1, keepdim=True).log()
            nll = (lse - logits.gather(-1, y[..., None])).squeeze(-1)
            loss = ((nll * sample_w).sum(1) + 0.5 * reg * weight.pow(2).sum((1, 2))).sum()
            resid = (logits - lse).exp_()
            resid.scatter_add_(-1, y[..., None], resid.new_full((*y.shape, 1), -1.0))
            resid.mul_(sample_w[..., None])
            weight.grad = x_fit.transpose(1, 2) @ resid + reg[:, None, None] * weight
            bias.grad = resid.sum(1)
        return loss

    # Stop at a gradient of 1e-5 (max-abs, per problem's mean-scaled objective): ten
    # times tighter than scikit-learn's own lbfgs stop (tol 1e-4 on the same objective).
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-5, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")
    opt.step(closure)
    with torch.no_grad():
        logits = logits_of(x_score, *_unstandardised(weight, bias, mean, std))
    return [(logits[i, : len(xs), : len(cl)], cl)
            for i, ((_, _, xs), cl) in enumerate(zip(problems, classes, strict=True))]


def ridge_probes(
    problems: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    alpha: float = 1.0,
    device: torch.device | str = "cpu",
) -> list[np.ndarray]:
    """Ridge predictions on ``x_score`` per ``(x_fit, t_fit, x_score)``, standardised
    features, centred target, penalty ``alpha`` (``regression_scores``' probe)."""
    if not problems:
        return []
    f64 = torch.float64
    n_fit = max(len(t) for _, t, _ in problems)
    n_score = max(len(xs) for _, _, xs in problems)
    d = max(x.shape[1] for x, _, _ in problems)
    x_fit = _pad([x for x, _, _ in problems], (n_fit, d), f64, device)
    x_score = _pad([xs for _, _, xs in problems], (n_score, d), f64, device)
    t = _pad([t for _, t, _ in problems], (n_fit,), f64, device)
    fit_mask = _pad([np.ones(len(t)) for _, t, _ in problems], (n_fit,), torch.bool, device)
    x_fit, mean, std = _standardise(x_fit, fit_mask)
    m = fit_mask.to(f64)
    t_mean = (t * m).sum(1, keepdim=True) / m.sum(1, keepdim=True)
    gram = x_fit.transpose(1, 2) @ x_fit + alpha * torch.eye(d, dtype=f64, device=device)
    w = torch.linalg.solve(gram, x_fit.transpose(1, 2) @ ((t - t_mean) * m)[..., None])
    w, b = _unstandardised(w, t_mean, mean, std)
    pred = (x_score @ w).squeeze(-1) + b
    pred = pred.cpu().numpy()
    return [pred[i, : len(xs)] for i, (_, _, xs) in enumerate(problems)]
