"""elm_lite: a small library behind the ELM (Embedding and Logit Margins) long-tail course.

Data flows ``data -> models -> losses -> train -> metrics -> plots / widgets``.
"""
from .data import ToyData, batch_class_stats, longtail_counts, make_toy
from .metrics import balanced_accuracy, confusion_matrix, per_class_accuracy, shot_accuracy, shot_split
from .models import MLP, LinearModel, toy_model
from .source import show_source
from .train import History, fit, predict, predict_logits, set_seed, track_balanced_accuracy

__version__ = "0.1.0"

__all__ = [
    "ToyData", "batch_class_stats", "longtail_counts", "make_toy",
    "balanced_accuracy", "confusion_matrix", "per_class_accuracy", "shot_accuracy", "shot_split",
    "MLP", "LinearModel", "toy_model",
    "History", "fit", "predict", "predict_logits", "set_seed", "track_balanced_accuracy",
    "show_source",
]
