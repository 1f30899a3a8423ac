"""An epoch's validation: the loss at the posterior means, the accuracies, the
disentanglement proxies on posterior samples and, with a validation domain, its accuracy."""

from __future__ import annotations

import torch

from trainer._config import RunConfig
from trainer._data import DataBundle
from trainer._model import StagedVAE, staged_loss
from trainer.metrics import epoch_proxies


@torch.no_grad()
def validate_epoch(
    model: StagedVAE, data: DataBundle, cfg: RunConfig, *, capacity: float, beta: float,
    chunk: int = 4096,
) -> dict[str, torch.Tensor]:
    """Validation loss (at posterior means), accuracies and disentanglement proxies (on
    posterior samples).

    All device tensors (read back once per epoch by the caller). The proxies
    (``trainer.metrics._proxies``) are the per-epoch stand-ins of every disentanglement
    metric the search can select. Where the data has a validation domain (a non-empty
    ``val_domain`` split), ``val_acc_y_val_domain`` is q(y|zy)'s accuracy on it
    (``val_domain_accuracy``): the column ``--early_stopping_metric`` can follow.
    """
    model.eval()
    idx = data.splits["val"]
    sums = {"val_loss": 0.0, "val_acc_y": 0.0, "val_acc_a": 0.0}
    means: dict[str, list[torch.Tensor]] = {g: [] for g in model.groups}
    stds: dict[str, list[torch.Tensor]] = {g: [] for g in model.groups}
    gate = capacity if cfg.stages.zay_suppression == "gate" else 1.0
    for start in range(0, idx.numel(), chunk):
        b = idx[start : start + chunk]
        x, y, a = data.x[b], data.y[b], data.a[b]
        out = model(x, zay_gate=gate, sample=False)
        terms = staged_loss(model, out, x, y, a, cfg, capacity=capacity, beta_scale=beta)
        n = b.numel()
        sums["val_loss"] = sums["val_loss"] + terms.total * n
        sums["val_acc_y"] = sums["val_acc_y"] + (out["y_logits"].argmax(-1) == y).sum()
        sums["val_acc_a"] = sums["val_acc_a"] + (out["a_logits"].argmax(-1) == a).sum()
        for g, p in out["posteriors"].items():
            means[g].append(p.mu)
            stds[g].append((0.5 * p.logvar).exp())
    n_val = idx.numel()
    result = {k: v / n_val for k, v in sums.items()}
    if "zay" in means and n_val >= 8:
        factors: dict[str, tuple[torch.Tensor, int | None]] = {
            "y": (data.y[idx], data.n_classes), "a": (data.a[idx], data.n_domains)}
        for name, values in data.factors.items():
            if name in data.factor_groups:
                t = torch.from_numpy(values).to(idx.device)[idx]
                discrete = not t.is_floating_point()
                factors[name] = (t, int(values.max()) + 1 if discrete else None)
        # probes: fit on the sources with an even id, scored on the others
        half = data.source[idx] % 2 == 0
        one_sided = half.all() | (~half).all()  # a tensor: no host sync
        by_position = torch.arange(n_val, device=idx.device) % 2 == 0
        half = torch.where(one_sided, by_position, half)
        latents = {g: torch.cat(v) for g, v in means.items()}
        scales = {g: torch.cat(v) for g, v in stds.items()}
        result.update(epoch_proxies(latents, factors, data.factor_groups, half, std=scales))
    if data.split_size("val_domain"):
        result["val_acc_y_val_domain"] = val_domain_accuracy(model, data, chunk=chunk)
    return result


@torch.no_grad()
def val_domain_accuracy(model: StagedVAE, data: DataBundle, *, chunk: int = 4096
                        ) -> torch.Tensor:
    """q(y|zy)'s accuracy on the whole ``val_domain`` split, a device scalar.

    ``model.predict_y`` (the posterior mean of zy, read by the head), as the final
    ``acc_y_val_domain`` measures it: one encoder and the head per chunk, no more.
    """
    model.eval()
    idx = data.splits["val_domain"]
    correct = torch.zeros((), dtype=torch.int64, device=idx.device)
    for start in range(0, idx.numel(), chunk):
        b = idx[start : start + chunk]
        correct = correct + (model.predict_y(data.x[b]) == data.y[b]).sum()
    return correct / idx.numel()
