"""Small, seeded experiments shared by the notebooks, the apps and the benchmarks: train a toy model with
a given loss and report what the course looks at (balanced accuracy, per-class embedding spread)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from . import calibration, losses, methods, metrics
from .data import ToyData, validation_sample
from .engine.augment import crop_flip
from .engine.many import fit_many
from .interfaces import EmbeddingLoss
from .methods import Method
from .models import MLP, image_model, toy_model
from .recipes import EMBEDDING_RECIPE, IMAGE_RECIPE, LOGIT_TOY
from .train import History, evaluate_features, fit, gaussian_jitter, predict_outputs, set_seed


@dataclass
class EmbeddingRun:
    """A trained embedding model and its measurements (test set unless named ``train_``)."""
    model: nn.Module
    history: History
    balanced_accuracy: float
    per_class_accuracy: np.ndarray
    spread: np.ndarray            # (C,) test-embedding spread per class
    train_spread: np.ndarray      # (C,) training-embedding spread per class
    margin: np.ndarray            # (C,) test embedding margin per class (metrics.embedding_margin)
    train_margin: np.ndarray      # (C,) training embedding margin per class
    z_test: np.ndarray            # (N, E) test embeddings
    val_balanced_accuracy: float = float("nan")    # on data.validation_sample (toy data), for choosing settings
    calibration_error: dict = field(default_factory=dict)  # test ECE of softmax(logits): overall, many, medium, few
    temperature: float = float("nan")              # fitted on the validation sample (calibration.fit_temperature)
    scaled_calibration_error: float = float("nan") # test ECE after that temperature scaling
    snapshots: list = field(default_factory=list)  # [(epoch, z_snapshot (M, E))] if requested


def embed(model: nn.Module, x) -> tuple[np.ndarray, np.ndarray]:
    """``(logits (N, C), embeddings (N, E))`` as NumPy arrays, model in eval mode."""
    logits, z = predict_outputs(model, x)
    return logits.numpy(), z.numpy()


def training_accuracy(model: nn.Module, data) -> np.ndarray:
    """Per-class accuracy of ``model`` on its own training set, ``(C,)``: 1.0 where it fits every
    training example of the class, 0.0 where it puts all of them in other classes."""
    logits, _ = embed(model, data.x_train)
    return metrics.per_class_accuracy(data.y_train, logits.argmax(1), data.n_classes)


def _recipe(defaults: dict, method: Method, overrides: dict) -> dict:
    """``defaults``, then the method's own entries, then the caller's; unknown keys are refused."""
    recipe = {**defaults, **method.recipe, **overrides}
    unknown = set(recipe) - set(defaults)
    if unknown:
        raise ValueError(f"unknown recipe entries {sorted(unknown)}; this recipe has {sorted(defaults)}.")
    return recipe


def _posthoc(method: Method, logits: np.ndarray, counts) -> np.ndarray:
    """The logits a method predicts with: post-hoc adjusted (tau = 1) for ``method.posthoc``."""
    return losses.posthoc_adjust(torch.as_tensor(logits), counts).numpy() if method.posthoc else logits


def train_logit_method(method: str, data: ToyData, tau: float = 1.0, seed: int = 0,
                       epochs: int = LOGIT_TOY["epochs"], lr: float = LOGIT_TOY["lr"],
                       weight_decay: float | None = None) -> tuple[nn.Module, nn.Module]:
    """Train the toy model with the registered method ``method`` (one of
    :data:`~elm_lite.methods.LOGIT_MARGIN_METHODS`); returns ``(model, loss)``.
    ``tau`` applies to the LA loss and to post-hoc LA (whose returned model predicts with adjusted
    logits). ``weight_decay=None`` takes the method's recipe (the hinge losses need some, as an SVM does)."""
    m = methods.get(method)
    weight_decay = {**LOGIT_TOY, **m.recipe}["weight_decay"] if weight_decay is None else weight_decay
    loss = m.build_loss(data.counts, epochs, **({"tau": tau} if method == "la" else {}))
    model = toy_model(data.kind, data.n_classes, seed, cosine=m.cosine)
    fit(model, data.x_train, data.y_train, loss, epochs=epochs, batch_size=None, lr=lr, weight_decay=weight_decay,
        seed=seed, sampling=m.sampling)
    m.finish(model, data.x_train, data.y_train, seed)
    if m.posthoc:
        return losses.PosthocAdjusted(model, data.counts, tau), losses.LogitAdjustedLoss(data.counts, tau)
    return model, loss


def _embedding_mlp(data: ToyData, recipe: dict, method: Method, seed: int) -> MLP:
    """The toy embedding model of ``recipe``, initialised under ``seed``."""
    set_seed(seed)
    return MLP(data.x_train.shape[1], data.n_classes, hidden=recipe["hidden"], depth=2,
               embed_dim=recipe["embed_dim"], normalize=True, cosine=method.cosine)


def _toy_views(n_views: int, jitter: float) -> list:
    """The views of a toy run: ``n_views`` Gaussian-jittered copies (std ``jitter``) for a contrastive
    method; one view, the batch itself, otherwise."""
    return n_views * [gaussian_jitter(jitter)] if n_views > 1 else []


def train_embedding_model(data: ToyData, method: Method, *, seed: int = 0, snapshot_every: int = 0,
                          snapshot_points: int = 60, **recipe) -> EmbeddingRun:
    """Train an :class:`~elm_lite.models.MLP` with a normalised embedding on ``data`` with ``method``
    under :data:`~elm_lite.recipes.EMBEDDING_RECIPE` (entries overridable as keywords).

    A method with two views sees two Gaussian-jittered copies of each batch (std ``jitter``).
    ``snapshot_every``: record the test embeddings of the first ``snapshot_points`` test points
    per class every that many epochs (for animations).
    """
    r = _recipe(EMBEDDING_RECIPE, method, recipe)
    model = _embedding_mlp(data, r, method, seed)
    keep = np.concatenate([np.flatnonzero(data.y_test == c)[:snapshot_points] for c in range(data.n_classes)])
    snapshots = []

    def snapshot(epoch, m, _history):
        if snapshot_every and (epoch == 1 or epoch % snapshot_every == 0):
            snapshots.append((epoch, embed(m, data.x_test[keep])[1]))

    history = fit(model, data.x_train, data.y_train, method.build_loss(data.counts, r["epochs"]),
                  epochs=r["epochs"], batch_size=r["batch_size"], lr=r["lr"], weight_decay=r["weight_decay"], seed=seed,
                  views=_toy_views(method.views, r["jitter"]), sampling=method.sampling, on_epoch_end=snapshot)
    return _finish_and_measure(method, seed, model, history, data, _sample(data), snapshots)


def train_embedding_models(data: ToyData, jobs: list[tuple[Method, int]], *, progress: bool = False,
                           **recipe) -> list[EmbeddingRun]:
    """:func:`train_embedding_model` for every ``(method, seed)`` of ``jobs``, the runs that share
    views, head, sampling and recipe trained together (:func:`elm_lite.engine.many.fit_many`): the same runs,
    in one pass per group. Returns the runs in job order."""
    groups: dict[tuple, list[int]] = {}
    settings = [_recipe(EMBEDDING_RECIPE, method, recipe) for method, _ in jobs]
    for i, ((method, _), r) in enumerate(zip(jobs, settings)):
        groups.setdefault((method.views, method.cosine, method.sampling, tuple(sorted(r.items()))), []).append(i)
    runs: list = [None] * len(jobs)
    sample = _sample(data)
    for members in groups.values():
        r, (views, sampling) = settings[members[0]], (jobs[members[0]][0].views, jobs[members[0]][0].sampling)
        models = [_embedding_mlp(data, r, *jobs[i]) for i in members]
        histories = fit_many(models, data.x_train, data.y_train,
                             [jobs[i][0].build_loss(data.counts, r["epochs"]) for i in members],
                             [jobs[i][1] for i in members], epochs=r["epochs"], batch_size=r["batch_size"],
                             lr=r["lr"], n_views=views, augment=gaussian_jitter(r["jitter"]) if views > 1 else None,
                             progress=progress, sampling=sampling, weight_decay=r["weight_decay"])
        for i, model, history in zip(members, models, histories):
            runs[i] = _finish_and_measure(*jobs[i], model, history, data, sample)
    return runs


def _finish_and_measure(method: Method, seed: int, model: nn.Module, history: History, data: ToyData, sample,
                        snapshots: list | None = None) -> EmbeddingRun:
    """A trained toy run's last stage (:meth:`~elm_lite.methods.Method.finish`) and its measurements."""
    method.finish(model, data.x_train, data.y_train, seed)
    logits, z_test = embed(model, data.x_test)
    return measure_run(model, history, data, _posthoc(method, logits, data.counts), z_test,
                       embed(model, data.x_train)[1], snapshots, _validation(method, model, data, sample))


def _sample(data) -> tuple[np.ndarray, np.ndarray] | None:
    """The toy problem's validation sample ``(x, y)`` (:func:`~elm_lite.data.validation_sample`);
    None for other data."""
    return validation_sample(data) if isinstance(data, ToyData) else None


def _validation(method: Method, model: nn.Module, data, sample) -> tuple[np.ndarray, np.ndarray] | None:
    """``(labels, the logits the method predicts with)`` on the validation ``sample`` (None without one)."""
    if sample is None:
        return None
    return sample[1], method_logits(method, model, sample[0], data.counts)


def method_logits(method: Method, model: nn.Module, x, counts) -> np.ndarray:
    """The logits ``(N, C)`` that ``method``'s trained ``model`` predicts with on ``x``: post-hoc adjusted
    (tau = 1) for ``method.posthoc``."""
    return _posthoc(method, embed(model, x)[0], counts)


def measure_run(model: nn.Module, history: History, data, logits: np.ndarray, z_test: np.ndarray,
                z_train: np.ndarray, snapshots: list | None = None,
                validation: tuple[np.ndarray, np.ndarray] | None = None) -> EmbeddingRun:
    """Package a trained model with its test accuracy, its test / training embedding spread and
    margin, its calibration error (ECE of ``softmax(logits)``, overall and many / medium / few), and (given
    ``validation = (labels, logits)``) its balanced accuracy on the validation sample, the temperature
    fitted there and the test ECE after temperature scaling."""
    y_pred = logits.argmax(1)
    val = (metrics.balanced_accuracy(validation[0], validation[1].argmax(1), data.n_classes)
           if validation is not None else float("nan"))
    temperature = calibration.fit_temperature(validation[1], validation[0]) if validation is not None else float("nan")
    return EmbeddingRun(model, history,
                        balanced_accuracy=metrics.balanced_accuracy(data.y_test, y_pred, data.n_classes),
                        per_class_accuracy=metrics.per_class_accuracy(data.y_test, y_pred, data.n_classes),
                        spread=metrics.embedding_spread(z_test, data.y_test, data.n_classes),
                        train_spread=metrics.embedding_spread(z_train, data.y_train, data.n_classes),
                        margin=metrics.embedding_margin(z_test, data.y_test, data.n_classes),
                        train_margin=metrics.embedding_margin(z_train, data.y_train, data.n_classes),
                        z_test=z_test, val_balanced_accuracy=val, snapshots=snapshots or [],
                        calibration_error=metrics.shot_calibration_error(data.y_test, calibration.probabilities(logits),
                                                                         data.counts),
                        temperature=temperature, scaled_calibration_error=metrics.expected_calibration_error(
                            data.y_test, calibration.probabilities(logits, temperature))
                        if validation is not None else float("nan"))


def run_summary(run: EmbeddingRun, counts, many: int = 100, few: int = 20) -> dict[str, float]:
    """Balanced accuracy, many / medium / few accuracy, spread, and calibration error (``ece``, ``ece_many``, ...,
    ``ece_scaled`` after temperature scaling) of one run (flat dict)."""
    split = metrics.shot_split(counts, many, few)
    acc = {f"acc_{k}": float(np.nanmean(run.per_class_accuracy[split == k])) if np.any(split == k) else float("nan")
           for k in metrics.SPLITS}
    spread = metrics.spread_summary(run.spread, counts, many, few)
    return {"balanced_accuracy": run.balanced_accuracy, "val_balanced_accuracy": run.val_balanced_accuracy, **acc,
            "spread_many": spread["many"], "spread_medium": spread["medium"], "spread_few": spread["few"],
            "train_spread_few": metrics.spread_summary(run.train_spread, counts, many, few)["few"],
            "margin_few": metrics.spread_summary(run.margin, counts, many, few)["few"],
            "train_margin_few": metrics.spread_summary(run.train_margin, counts, many, few)["few"],
            **{f"ece_{k}" if k != "overall" else "ece": v for k, v in run.calibration_error.items()},
            "ece_scaled": run.scaled_calibration_error, "temperature": run.temperature}


def compare(methods: dict, data, seeds=(0, 1, 2), progress: bool = False, train=None, done=(),
            on_row=None, **recipe) -> list[dict]:
    """Train every method on the same data and seeds under one recipe.

    ``methods``: label -> :class:`~elm_lite.methods.Method` (e.g. :func:`elm_lite.methods.by_label`).
    ``train``: ``None`` trains toy runs together (:func:`train_embedding_models`, all at once);
    :func:`train_embedding_model` or :func:`train_image_model` train them one by one;
    ``recipe`` entries override that function's recipe.
    ``done``: rows of an earlier, interrupted call -- their (method, seed) are not trained again;
    ``on_row(rows)`` is called after every new row (after all of them when trained together),
    e.g. to save progress.
    Returns one row per (method, seed): ``{"method", "seed", **run_summary}``, in job order.
    """
    from tqdm.auto import tqdm
    finished = {(r["method"], r["seed"]): r for r in done}
    jobs = [(name, seed) for name in methods for seed in seeds]
    todo = [job for job in jobs if job not in finished]
    if train is None:  # all toy runs at once
        runs = train_embedding_models(data, [(methods[name], seed) for name, seed in todo], progress=progress, **recipe)
        new = {job: {"method": job[0], "seed": job[1], **run_summary(run, data.counts)} for job, run in zip(todo, runs)}
        if on_row is not None and todo:
            on_row([finished.get(job) or new[job] for job in jobs])
    else:
        new = {}
        for name, seed in tqdm(todo, desc="comparison", disable=not progress):
            run = train(data, methods[name], seed=seed, **recipe)
            new[(name, seed)] = {"method": name, "seed": seed, **run_summary(run, data.counts)}
            if on_row is not None:
                on_row([finished.get(job) or new[job] for job in jobs if job in finished or job in new])
    return [finished.get(job) or new[job] for job in jobs]


def summarize(rows: list[dict], columns=("balanced_accuracy", "acc_few", "spread_few", "spread_many")) -> str:
    """A text table: mean ± sample standard deviation over seeds (:func:`~elm_lite.metrics.mean_sd`)
    of each column, one line per method (first-seen order), and the number of seeds n."""
    names = list(dict.fromkeys(r["method"] for r in rows))
    width = max(len(n) for n in names) + 2
    lines = [f"{'method':{width}s}" + "".join(f"{c:>22s}" for c in columns) + "   n (seeds)"]
    for name in names:
        mine = [r for r in rows if r["method"] == name]
        cells = []
        for c in columns:
            mean, sd, n = metrics.mean_sd([r[c] for r in mine])
            cells.append(f"{'n/a':>22s}" if not n else f"{mean:>14.3f} ± {sd:.3f}" if n > 1 else f"{mean:>22.3f}")
        lines.append(f"{name:{width}s}" + "".join(cells) + f"   {len(mine)}")
    lines.append("(± is the sample standard deviation over seeds, ddof = 1)")
    return "\n".join(lines)


def paired_differences(rows: list[dict], method: str, reference: str, column: str = "balanced_accuracy") -> list:
    """``method`` minus ``reference`` in ``column``, seed by seed (the same seed is the same data order and
    initialisation), for the seeds both have, in seed order."""
    by = {(r["method"], r["seed"]): r[column] for r in rows}
    seeds = sorted(s for (m, s) in by if m == method and (reference, s) in by)
    if not seeds:
        raise ValueError(f"no seed has both {method!r} and {reference!r}; the rows hold {sorted({m for m, _ in by})}.")
    return [by[(method, s)] - by[(reference, s)] for s in seeds]


def paired_summary(rows: list[dict], reference: str, column: str = "balanced_accuracy") -> str:
    """A text table of each method's difference from ``reference`` in ``column``, seed by seed (the
    same seed is the same data order and initialisation): mean ± sample standard deviation of the
    differences, and on how many of the n seeds the method was higher -- which differences exceed the
    seed-to-seed spread, and which do not."""
    names = [n for n in dict.fromkeys(r["method"] for r in rows) if n != reference]
    width = max(len(n) for n in names) + 2
    lines = [f"{'method':{width}s}{'minus ' + reference:>22s}   higher on"]
    for name in names:
        diffs = paired_differences(rows, name, reference, column)
        mean, sd, n = metrics.mean_sd(diffs)
        lines.append(f"{name:{width}s}{mean:>+14.3f} ± {sd:.3f}   {sum(d > 0 for d in diffs)} of {n} seeds")
    lines.append(f"({column}; ± is the sample standard deviation of the per-seed differences, ddof = 1)")
    return "\n".join(lines)


def train_image_model(data, method: Method, *, seed: int = 0, **recipe) -> EmbeddingRun:
    """Train a CIFAR model (crop+flip augmentation, Adam) on an :class:`~elm_lite.engine.cifar.ImageData` on
    the CPU with ``method`` under :data:`~elm_lite.recipes.IMAGE_RECIPE` (entries overridable as
    keywords); spread is measured on the backbone features the classifier reads."""
    r = _recipe(IMAGE_RECIPE, method, recipe)
    set_seed(seed)
    loss = method.build_loss(data.counts, r["epochs"])
    net = image_model(r["model"], data.n_classes, method.cosine,
                      r["projection_dim"] if isinstance(loss, EmbeddingLoss) else None)
    history = fit(net, data.x_train, data.y_train, loss, epochs=r["epochs"], batch_size=r["batch_size"], lr=r["lr"],
                  weight_decay=r["weight_decay"], seed=seed, views=method.views * [crop_flip], sampling=method.sampling)
    method.finish(net, data.x_train, data.y_train, seed)
    cpu = torch.device("cpu")
    logits, feats, _ = evaluate_features(net, data.x_test, cpu)
    return measure_run(net, history, data, _posthoc(method, logits, data.counts), feats,
                       evaluate_features(net, data.x_train, cpu)[1])


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
