"""Reference solutions to the notebooks' exercises, kept apart from the exercise text so a
teacher can hand out notebooks without answers. Each function passes its ``check_*`` in
:mod:`elm_lite.exercises`."""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from . import losses


def balanced_error(cm) -> float:
    """01.1: mean per-class error from a confusion matrix (rows: true class), untested classes left out."""
    cm = np.asarray(cm, dtype=float)
    support = cm.sum(1)
    tested = support > 0
    return float(1 - np.mean(np.diag(cm)[tested] / support[tested]))


def p_no_example(n_c: int, total: int, batch: int) -> float:
    """01.3: P(no example of the class in a batch drawn without replacement)."""
    k = np.arange(batch)
    return float(np.prod(np.clip(total - n_c - k, 0, None) / (total - k)))


def my_la_loss(logits: torch.Tensor, labels: torch.Tensor, counts, tau: float) -> torch.Tensor:
    """02.1: logit-adjusted cross-entropy."""
    counts = torch.as_tensor(counts, dtype=logits.dtype)
    return F.cross_entropy(logits + tau * torch.log(counts / counts.sum()), labels)


def my_ldam_margins(counts, max_m: float) -> np.ndarray:
    """02.2: margins proportional to n^(-1/4), the largest equal to max_m."""
    m = np.asarray(counts, dtype=float) ** -0.25
    return m * max_m / m.max()


def my_spread(z, y, c: int) -> float:
    """03.1: 1 - mean cos(z_i, mu_c) over the normalised embeddings of class c."""
    members = np.asarray(z, dtype=float)[np.asarray(y) == c]
    members = members / np.linalg.norm(members, axis=1, keepdims=True)
    mu = members.mean(0)
    return float(1 - np.mean(members @ (mu / np.linalg.norm(mu))))


def has_positive(labels) -> np.ndarray:
    """04.1: whether each anchor has another example of its class in the batch."""
    labels = np.asarray(labels)
    return (labels[:, None] == labels[None, :]).sum(1) > 1


def my_elm(logits, z, labels, counts, lam: float) -> torch.Tensor:
    """05.1: logit-adjusted CE plus lam times the embedding term in the course's recommended form."""
    logit_term = losses.LogitAdjustedLoss(counts).to(logits.dtype)(logits, labels)
    embedding_term = losses.EmbeddingMarginLoss(counts, temperature=0.1, delta_max=0.5, placement="centroid",
                                                anchor_average="class").to(z.dtype)(z, labels)
    return logit_term + lam * embedding_term


def my_supcon(z, labels, temperature: float) -> torch.Tensor:
    """04.2: SupCon's L_out, written from the formula with an explicit loop over anchors."""
    z = F.normalize(z, dim=1)
    sim = z @ z.T / temperature
    losses_ = []
    for i in range(len(labels)):
        others = [a for a in range(len(labels)) if a != i]
        positives = [p for p in others if labels[p] == labels[i]]
        if positives:
            log_denominator = torch.logsumexp(sim[i, others], 0)
            losses_.append(-torch.stack([sim[i, p] - log_denominator for p in positives]).mean())
    return torch.stack(losses_).mean() if losses_ else z.sum() * 0


def my_centroid_margin(z, labels, delta, temperature: float) -> torch.Tensor:
    """05.2: the centroid margin term, written from the formula with an explicit loop over anchors."""
    z = F.normalize(z, dim=1)
    losses_ = []
    for i in range(len(labels)):
        logits, own = [], None
        for k in sorted(set(labels.tolist())):
            members = [j for j in range(len(labels)) if labels[j] == k and j != i]
            if not members:
                continue
            centre = z[members].mean(0)
            cos = z[i] @ centre / centre.norm()
            if k == labels[i]:
                own, cos = len(logits), cos - delta[k]
            logits.append(cos / temperature)
        if own is not None:
            logits = torch.stack(logits)
            losses_.append(torch.logsumexp(logits, 0) - logits[own])
    return torch.stack(losses_).mean() if losses_ else z.sum() * 0


def paired_verdict(rows, method: str, reference: str) -> int:
    """07.1: 1 / -1 if ``method`` beats / loses to ``reference`` beyond the 95 % t-interval of the
    per-seed differences of balanced accuracy, 0 if that interval contains zero."""
    from scipy import stats
    by = {(r["method"], r["seed"]): r["balanced_accuracy"] for r in rows}
    seeds = sorted(s for (m, s) in by if m == method and (reference, s) in by)
    d = np.array([by[(method, s)] - by[(reference, s)] for s in seeds])
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return 1 if d.mean() - half > 0 else -1 if d.mean() + half < 0 else 0
