"""The method registry: every method of the course defined once.

A *method* is a loss with its constants, plus what training must do for it: how many views of each
example (two for the contrastive methods), a cosine classifier head (LDAM), deferred re-weighting
(LDAM-DRW, from :data:`~elm_lite.recipes.DRW_START` of the run), post-hoc adjustment of the
logits, and any recipe entries it changes. The CLI, the comparisons, the apps, the benchmarks and
the notebooks all build their losses here::

    method = methods.get("ldam-drw")
    loss = method.build_loss(counts, epochs=200)     # LDAMLoss(counts, drw_epoch=160)
    variant = methods.get("elm").variant("ELM, lambda 0.25", lam=0.25)
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import nn

from . import losses
from .balancing import balanced_classifier_stage
from .recipes import DECOUPLING, ELM_RECOMMENDED, MARGIN_SCHEDULE, WEIGHT_BALANCING, drw_epoch
from .train import retrain_classifier, tau_normalize


@dataclass(frozen=True)
class Method:
    """One method: ``loss(counts, **constants)`` trained with ``views`` views of each example."""
    name: str                      # registry key and CLI name, e.g. "ldam-drw"
    label: str                     # what tables and apps show, e.g. "LDAM-DRW"
    loss: type                     # a loss class from elm_lite.losses
    constants: Mapping = field(default_factory=dict)  # its constructor keywords
    views: int = 1                 # views per example (2: two augmentations, for the contrastive term)
    cosine: bool = False           # a cosine classifier head (logits in [-1, 1], as LDAM needs)
    drw: bool = False              # class-balanced re-weighting from recipes.drw_epoch(epochs)
    posthoc: bool = False          # predict with logits - tau * log(prior) (train plain CE)
    sampling: str = "uniform"      # batch order: "uniform" or "class_balanced" (re-sampling)
    decoupling: str = ""           # after training: "crt" (re-train the classifier), "tau-norm" or
                                   # "weight-balancing" (class-balanced classifier stage with MaxNorm)
    recipe: Mapping = field(default_factory=dict)     # recipe entries this method changes
    about: str = ""                # one line for learners

    def build_loss(self, counts, epochs: int | None = None, **overrides) -> nn.Module:
        """A fresh loss for training counts ``counts`` ``(C,)``; ``epochs`` places DRW (needed
        when ``self.drw``); ``overrides`` change constants."""
        kwargs = {**self.constants, **overrides}
        if self.drw:
            if epochs is None:
                raise ValueError(f"method {self.name!r} re-weights late in training: pass epochs= so "
                                 "that build_loss can place the switch.")
            kwargs["drw_epoch"] = drw_epoch(epochs)
        try:
            return self.loss(counts, **kwargs)
        except TypeError as e:  # an unknown keyword: say which method and what its loss takes
            raise ValueError(f"bad constants for method {self.name!r} ({self.loss.__name__}): {e}") from None

    def variant(self, label: str, *, views: int | None = None, recipe: Mapping | None = None,
                **constants) -> Method:
        """The same method with other constants, views or recipe entries (for sweeps and ablations)."""
        return dataclasses.replace(self, label=label, constants={**self.constants, **constants},
                                   views=self.views if views is None else views,
                                   recipe={**self.recipe, **(recipe or {})})

    def identity(self) -> dict:
        """Everything that changes what this method trains, as plain JSON values (run fingerprints;
        ``sampling`` and ``decoupling`` only where they are not the default)."""
        return {"method": self.name, "loss": self.loss.__name__, "constants": dict(self.constants),
                "views": self.views, "cosine": self.cosine, "drw": self.drw, "posthoc": self.posthoc,
                "recipe": dict(self.recipe), **({"sampling": self.sampling} if self.sampling != "uniform" else {}),
                **({"decoupling": self.decoupling} if self.decoupling else {})}

    def finish(self, model: nn.Module, x, y, seed: int = 0) -> None:
        """The method's second stage on a trained ``model`` (in place), if it has one: classifier
        re-training on ``(x, y)`` (cRT) or tau-normalisation, under :data:`~elm_lite.recipes.DECOUPLING`;
        weight balancing's class-balanced classifier stage (:mod:`elm_lite.balancing`)."""
        if self.decoupling == "crt":
            retrain_classifier(model, x, y, epochs=DECOUPLING["crt_epochs"], lr=DECOUPLING["crt_lr"],
                               batch_size=DECOUPLING["crt_batch_size"], seed=seed)
        elif self.decoupling == "tau-norm":
            tau_normalize(model, DECOUPLING["kappa"])
        elif self.decoupling == "weight-balancing":
            balanced_classifier_stage(model, x, y, weight_decay=self.recipe.get("weight_decay",
                                                                              WEIGHT_BALANCING["weight_decay"]))


_SUPCON_LA = {**ELM_RECOMMENDED, "delta_max": 0.0, "placement": "positive"}  # SupCon's L_out

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("ce", "CE", losses.LogitAdjustedLoss, {"tau": 0.0},
           about="plain cross-entropy (empirical risk minimisation)"),
    Method("posthoc-la", "CE + post-hoc LA", losses.LogitAdjustedLoss, {"tau": 0.0}, posthoc=True,
           about="train plain CE, predict with logits - tau * log(prior)"),
    Method("reweight-inverse", "CE, re-weighted 1/n", losses.ReweightedLoss, {"scheme": "inverse"},
           about="cross-entropy with class weights 1/n_y: every class counts as much as in balanced data"),
    Method("reweight-effective", "CE, re-weighted (effective number)", losses.ReweightedLoss,
           {"scheme": "effective_number"}, about="class weights (1 - beta) / (1 - beta^n_y) (Cui et al. 2019)"),
    Method("cb-sampling", "CE, class-balanced sampling", losses.LogitAdjustedLoss, {"tau": 0.0},
           sampling="class_balanced", about="plain CE on batches that draw every class equally often"),
    Method("crt", "CE + classifier re-training", losses.LogitAdjustedLoss, {"tau": 0.0}, decoupling="crt",
           about="train with CE, then re-train the classifier alone with class-balanced sampling (Kang et al. 2020)"),
    Method("tau-norm", "CE + tau-normalised classifier", losses.LogitAdjustedLoss, {"tau": 0.0},
           decoupling="tau-norm", about="train with CE, then rescale each class's weights to unit length"),
    Method("focal", "focal loss", losses.FocalLoss, {"gamma": 2.0},
           about="cross-entropy that down-weights well-classified examples, (1 - p)^gamma (Lin et al. 2017)"),
    Method("weight-balancing", "weight balancing", losses.LogitAdjustedLoss, {"tau": 0.0},
           decoupling="weight-balancing", recipe={"weight_decay": WEIGHT_BALANCING["weight_decay"]},
           about="CE with weight decay chosen on validation, then the classifier re-trained with the class-"
                 "balanced loss, weight decay and a per-class weight-norm cap (Alshammari et al. 2022)"),
    Method("la", "LA", losses.LogitAdjustedLoss, {"tau": 1.0},
           about="logit-adjusted cross-entropy (Menon et al. 2021)"),
    Method("balanced-softmax", "Balanced Softmax", losses.BalancedSoftmaxLoss,
           about="cross-entropy on logits + log n_y (Ren et al. 2020)"),
    Method("ldam", "LDAM", losses.LDAMLoss, cosine=True,
           about="margins n_y^(-1/4) on cosine logits (Cao et al. 2019)"),
    Method("ldam-drw", "LDAM-DRW", losses.LDAMLoss, cosine=True, drw=True,
           about="LDAM with class-balanced re-weighting late in training"),
    Method("hinge-equal", "hinge, equal margins", losses.MulticlassHingeLoss, {"schedule": "equal"},
           recipe={"weight_decay": 1e-3}, about="multiclass SVM: every class needs the same margin"),
    Method("hinge-n14", "hinge, n^-1/4 margins", losses.MulticlassHingeLoss, {"schedule": MARGIN_SCHEDULE},
           recipe={"weight_decay": 1e-3}, about="multiclass SVM with LDAM's margins n_y^(-1/4)"),
    Method("supcon-la", "SupCon + LA", losses.ELMLoss, _SUPCON_LA, views=2,
           about="LA plus a supervised contrastive term without embedding margins"),
    Method("elm", "ELM", losses.ELMLoss, dict(ELM_RECOMMENDED), views=2,
           about="LA plus a class-dependent margin between each embedding and its class centre"),
    Method("elm-positive", "ELM (margin on positives)", losses.ELMLoss,
           {**ELM_RECOMMENDED, "placement": "positive"}, views=2,
           about="the course's first ELM form: SupCon with the margin on the positives (inert, see "
                 "docs/margin_study.md)"),
)}

# The methods of notebook 02's logit-margin app (toy, linear/MLP models, one view).
LOGIT_MARGIN_METHODS = ("ce", "posthoc-la", "la", "balanced-softmax", "ldam", "ldam-drw", "hinge-equal", "hinge-n14")
# The baselines every student asks about: re-weighting, re-sampling, decoupled training.
BASELINES = ("reweight-inverse", "reweight-effective", "cb-sampling", "crt", "tau-norm")
# What practitioners also reach for (notebook 07): a loss that ignores the prior, and weight balancing.
PRACTITIONER_METHODS = ("focal", "weight-balancing")
# The methods a full-scale run or table can train (CLI choices). Weight balancing at full scale: stage 1
# trains with the recipe's weight decay (--weight-decay; choose it on validation, balancing.choose_weight_decay),
# stage 2 with recipes.WEIGHT_BALANCING's (the toy's choice) -- no real-image run of it is shipped yet.
FULLSCALE_METHODS = ("ce", "la", "ldam", "ldam-drw", "supcon-la", "elm", "elm-positive", *BASELINES,
                     *PRACTITIONER_METHODS)
# The comparison every scale shows: ERM, a logit margin, LDAM-DRW, the contrastive term, ELM.
COMPARISON = ("ce", "la", "ldam-drw", "supcon-la", "elm")


def get(name: str) -> Method:
    """The registered method ``name`` (a key of :data:`METHODS`)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}.")
    return METHODS[name]


def by_label(names=COMPARISON) -> dict[str, Method]:
    """``{label: method}`` for the named methods, in order (the shape :func:`~elm_lite.experiments.compare` takes)."""
    return {get(n).label: get(n) for n in names}
