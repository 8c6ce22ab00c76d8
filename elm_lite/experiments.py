"""Small, seeded experiments shared by the notebooks and the benchmarks: train a toy model with
a given loss and report what the course looks at (balanced accuracy, per-class embedding spread)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from . import metrics
from .data import ToyData
from .models import MLP
from .train import History, fit, gaussian_jitter, set_seed


# The embedding toy problem of notebooks 03-05 and its recipe, each knob with its meaning and range.
EMBEDDING_TOY = dict(
    kind="gaussian",   # isotropic Gaussian classes with known densities
    n_classes=8,       # classes; counts 500, 258, 134, 69, 35, 18, 9, 5 with the values below
    n_max=500,         # head-class training examples (100-2000)
    rho=100,           # imbalance ratio (1-1000)
    dim=16,            # input dimension (>= n_classes): high enough that a few examples under-cover a class
    separation=3.0,    # distance of each class mean from the origin (2-5: harder to easier)
)
EMBEDDING_RECIPE = dict(
    embed_dim=8,       # normalised embedding dimension (3 is too crowded for 8 classes, see notebook 04)
    epochs=30,         # passes over the training set (10-200)
    batch_size=128,    # mini-batch size; with 5 tail examples most batches hold no tail positive
    lr=0.01,           # Adam learning rate (1e-3 - 3e-2)
    n_views=2,         # views per example (1 or 2): two views give every anchor a positive
    jitter=1.0,        # std of the Gaussian input jitter that makes the views (0-1.5; class noise is 1)
)
ELM_TOY_LOSS = dict(
    tau=1.0,           # logit-adjustment strength (0-3)
    lam=1.0,           # weight of the embedding term (0-2); 0 = logit adjustment alone
    temperature=0.1,   # contrastive temperature (0.05-1)
    delta_max=0.5,     # embedding margin of the rarest class, cosine units (0-1)
    anchor_average="class",  # average the contrastive loss per class first ("all": per anchor)
)


@dataclass
class EmbeddingRun:
    """A trained embedding model and its measurements (test set unless named ``train_``)."""
    model: nn.Module
    history: History
    balanced_accuracy: float
    per_class_accuracy: np.ndarray
    spread: np.ndarray            # (C,) test-embedding spread per class
    train_spread: np.ndarray      # (C,) training-embedding spread per class
    z_test: np.ndarray            # (N, E) test embeddings
    snapshots: list = field(default_factory=list)  # [(epoch, z_snapshot (M, E))] if requested


@torch.no_grad()
def embed(model: nn.Module, x) -> tuple[np.ndarray, np.ndarray]:
    """``(logits (N, C), embeddings (N, E))`` as NumPy arrays, model in eval mode."""
    was_training = model.training
    model.eval()
    logits, z = model(torch.as_tensor(np.asarray(x), dtype=torch.float32))
    model.train(was_training)
    return logits.numpy(), z.numpy()


def train_embedding_model(data: ToyData, loss: nn.Module, *, embed_dim: int = 8, hidden: int = 64,
                          epochs: int = 30, batch_size: int | None = 128, lr: float = 0.01, seed: int = 0,
                          n_views: int = 1, jitter: float = 0.0, snapshot_every: int = 0,
                          snapshot_points: int = 60, cosine: bool = False, progress: bool = False) -> EmbeddingRun:
    """Train an :class:`~elm_lite.models.MLP` with a normalised ``embed_dim`` embedding on ``data``.

    ``n_views``/``jitter``: views made by Gaussian input jitter (also used with ``n_views=1`` if
    ``jitter > 0``). ``snapshot_every``: record the test embeddings of the first
    ``snapshot_points`` test points per class every that many epochs (for animations).
    ``cosine``: a cosine classifier head (for LDAM).
    """
    set_seed(seed)
    dim = data.x_train.shape[1]
    model = MLP(dim, data.n_classes, hidden=hidden, depth=2, embed_dim=embed_dim, normalize=True, cosine=cosine)
    keep = np.concatenate([np.flatnonzero(data.y_test == c)[:snapshot_points] for c in range(data.n_classes)])
    snapshots = []

    def snapshot(epoch, m, _history):
        if snapshot_every and (epoch == 1 or epoch % snapshot_every == 0):
            snapshots.append((epoch, embed(m, data.x_test[keep])[1]))

    history = fit(model, data.x_train, data.y_train, loss, epochs=epochs, batch_size=batch_size, lr=lr,
                  seed=seed, progress=progress, n_views=n_views,
                  augment=gaussian_jitter(jitter) if jitter > 0 else None, on_epoch_end=snapshot)
    logits, z_test = embed(model, data.x_test)
    return measure_run(model, history, data, logits, z_test, embed(model, data.x_train)[1], snapshots)


def measure_run(model: nn.Module, history: History, data, logits: np.ndarray, z_test: np.ndarray,
                z_train: np.ndarray, snapshots: list | None = None) -> EmbeddingRun:
    """Package a trained model with its test accuracy and its test / training embedding spread."""
    y_pred = logits.argmax(1)
    return EmbeddingRun(model, history,
                        balanced_accuracy=metrics.balanced_accuracy(data.y_test, y_pred, data.n_classes),
                        per_class_accuracy=metrics.per_class_accuracy(data.y_test, y_pred, data.n_classes),
                        spread=metrics.embedding_spread(z_test, data.y_test, data.n_classes),
                        train_spread=metrics.embedding_spread(z_train, data.y_train, data.n_classes),
                        z_test=z_test, snapshots=snapshots or [])


def run_summary(run: EmbeddingRun, counts, many: int = 100, few: int = 20) -> dict[str, float]:
    """Balanced accuracy, many / medium / few accuracy and spread of one run (flat dict)."""
    split = metrics.shot_split(counts, many, few)
    acc = {f"acc_{k}": float(np.nanmean(run.per_class_accuracy[split == k])) if np.any(split == k) else float("nan")
           for k in metrics.SPLITS}
    spread = metrics.spread_summary(run.spread, counts, many, few)
    return {"balanced_accuracy": run.balanced_accuracy, **acc,
            "spread_many": spread["many"], "spread_medium": spread["medium"], "spread_few": spread["few"],
            "train_spread_few": metrics.spread_summary(run.train_spread, counts, many, few)["few"]}


def compare(methods: dict, data, seeds=(0, 1, 2), progress: bool = False, train=None, done=(),
            on_row=None, **recipe) -> list[dict]:
    """Train every method on the same data and seeds under one recipe.

    ``methods``: name -> ``(make_loss, overrides)`` where ``make_loss(counts)`` builds a fresh loss
    and ``overrides`` changes recipe entries for that method (e.g. ``{"n_views": 1, "jitter": 0}``).
    ``train``: :func:`train_embedding_model` (toy data, the default) or :func:`train_image_model`.
    ``done``: rows of an earlier, interrupted call -- their (method, seed) are not trained again;
    ``on_row(rows)`` is called after every new row (e.g. to save progress).
    Returns one row per (method, seed): ``{"method", "seed", **run_summary}``, in job order.
    """
    train = train or train_embedding_model
    from tqdm.auto import tqdm
    finished = {(r["method"], r["seed"]): r for r in done}
    rows = []
    jobs = [(name, seed) for name in methods for seed in seeds]
    for name, seed in tqdm(jobs, desc="comparison", disable=not progress):
        if (name, seed) in finished:
            rows.append(finished[(name, seed)])
            continue
        make_loss, overrides = methods[name]
        run = train(data, make_loss(data.counts), seed=seed, **{**recipe, **overrides})
        rows.append({"method": name, "seed": seed, **run_summary(run, data.counts)})
        if on_row is not None:
            on_row(rows)
    return rows


def summarize(rows: list[dict], columns=("balanced_accuracy", "acc_few", "spread_few", "spread_many")) -> str:
    """A text table: mean +- std over seeds of each column, one line per method (first-seen order)."""
    names = list(dict.fromkeys(r["method"] for r in rows))
    width = max(len(n) for n in names) + 2
    lines = [f"{'method':{width}s}" + "".join(f"{c:>22s}" for c in columns) + "   seeds"]
    for name in names:
        mine = [r for r in rows if r["method"] == name]
        cells = []
        for c in columns:
            vals = np.array([r[c] for r in mine], dtype=float)
            vals = vals[~np.isnan(vals)]
            cells.append(f"{vals.mean():>14.3f} ± {vals.std():.3f}" if vals.size else f"{'n/a':>22s}")
        lines.append(f"{name:{width}s}" + "".join(cells) + f"   {len(mine)}")
    return "\n".join(lines)


IMAGE_RECIPE = dict(
    model="small_cnn",   # "small_cnn" (CPU-sized, 0.1 M parameters) or "resnet32" (0.46 M)
    epochs=10,           # passes over CIFAR-10-LT (10 is "a few": minutes per run on 2 CPU cores)
    batch_size=128,      # mini-batch size
    lr=1e-3,             # Adam learning rate
    weight_decay=5e-4,   # L2 penalty
    n_views=1,           # 2 for the embedding-term methods (two crop+flip views)
    projection_dim=64,   # projection head for the contrastive term (None: contrast the features)
)


def train_image_model(data, loss: nn.Module, *, model: str = "small_cnn", epochs: int = 10, batch_size: int = 128,
                      lr: float = 1e-3, weight_decay: float = 5e-4, n_views: int = 1, projection_dim: int | None = 64,
                      cosine: bool = False, seed: int = 0, progress: bool = False) -> EmbeddingRun:
    """Train a CIFAR model (crop+flip augmentation) on an :class:`~elm_lite.data.ImageData` on the
    CPU; spread is measured on the backbone features the classifier reads."""
    from .fullscale import evaluate
    from .models import ResNet32, SmallCNN
    from .train import crop_flip
    if model not in ("small_cnn", "resnet32"):
        raise ValueError(f"model must be 'small_cnn' or 'resnet32', got {model!r}.")
    set_seed(seed)
    uses_embedding = getattr(loss, "uses_embedding", False)
    net = (SmallCNN if model == "small_cnn" else ResNet32)(data.n_classes, cosine=cosine,
                                                           projection_dim=projection_dim if uses_embedding else None)
    history = fit(net, data.x_train, data.y_train, loss, epochs=epochs, batch_size=batch_size, lr=lr,
                  weight_decay=weight_decay, seed=seed, progress=progress, n_views=n_views, augment=crop_flip)
    cpu = torch.device("cpu")
    logits, feats = evaluate(net, data.x_test, cpu)
    return measure_run(net, history, data, logits, feats, evaluate(net, data.x_train, cpu)[1])


def margin_spread_simulation(noise: float, margin: float, n_train: int = 5, dim: int = 8, draws: int = 200,
                             n_test: int = 4000, seed: int = 0) -> dict[str, float]:
    """The margin/spread argument in one class: tail embeddings ``normalize(mu + noise * g)`` on the
    unit sphere in ``dim`` dimensions (``g`` standard normal / sqrt(dim)); a linear boundary facing
    the head is placed ``margin`` below the tail's lowest *training* point (a max-margin fit on
    ``n_train`` examples). Returns the tail's expected test error over ``draws`` training sets, and
    its measured spread (``1 - mean cos(z, class mean)``)."""
    if not (noise >= 0 and margin >= 0 and n_train >= 1):
        raise ValueError(f"need noise >= 0, margin >= 0 and n_train >= 1; got {noise}, {margin}, {n_train}.")
    rng = np.random.default_rng(seed)
    mu, w = np.eye(dim)[0], (np.eye(dim)[0] - np.eye(dim)[1]) / np.sqrt(2)   # tail mean; normal facing the head

    def sample(*shape):
        z = mu + noise * rng.normal(size=(*shape, dim)) / np.sqrt(dim)
        return z / np.linalg.norm(z, axis=-1, keepdims=True)
    test = sample(n_test)
    score_test = test @ w                                                   # (n_test,)
    bias = (sample(draws, n_train) @ w).min(1) - margin                    # (draws,): boundary offset
    error = float(np.mean(score_test[None, :] < bias[:, None]))
    centre = test.mean(0) / np.linalg.norm(test.mean(0))
    return {"error": error, "spread": float(1 - np.mean(test @ centre))}


RESULTS_URL = "https://raw.githubusercontent.com/elm-lite/elm_lite/main/data/results/{name}"


def load_results(name: str) -> dict:
    """A results file shipped in the repository's ``data/results/`` (measured runs), read from the
    checkout, or -- when the package was installed without it (Colab) -- from GitHub. A ``.json``
    file gives its object, a ``.npz`` file a dict of its arrays."""
    import io
    import json
    import pathlib
    import urllib.request

    local = pathlib.Path(__file__).resolve().parents[1] / "data" / "results" / name
    if local.is_file():
        raw = local.read_bytes()
    else:
        try:
            with urllib.request.urlopen(RESULTS_URL.format(name=name), timeout=20) as r:
                raw = r.read()
        except OSError as e:
            raise FileNotFoundError(f"results file {name!r} is neither at {local} nor reachable at "
                                    f"{RESULTS_URL.format(name=name)} ({e}).") from None
    if name.endswith(".npz"):
        with np.load(io.BytesIO(raw), allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    return json.loads(raw)
