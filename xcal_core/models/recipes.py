"""Training recipes shared by the notebooks: one cached model serves every notebook that uses it.

A recipe fixes everything about training except the data and the seed: architecture and its
options, epochs, optimizer, learning rate, batch size. Notebooks that load the same data split
(e.g. Fashion-MNIST with the same ``n_train`` / ``n_cal`` and split seed) and train the same recipe
with the same seed hit the same checkpoint in the model cache (:func:`train_classifier` keys it by
the train and cal splits, the configuration and the seed), so a workshop trains each model once.

The workshop recipes and what they give on Fashion-MNIST (20 000 training images, test accuracy,
ECE with 15 bins, seconds per epoch on 2 CPU cores) are measured by
``benchmarks/bench_fashion_mnist_models.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .._validation import check_int
from .training import TrainResult, train_classifier

__all__ = ["Recipe", "RECIPES", "train_recipe"]


@dataclass(frozen=True)
class Recipe:
    """How to train one model (everything but the data and the seed).

    Attributes:
        model: a :func:`~xcal_core.models.build_model` name.
        epochs, lr, batch_size, weight_decay, optimizer, lr_schedule: as in :func:`train_classifier`.
        model_kwargs: architecture options (``normalization`` comes from the dataset).
        about: one line on what the recipe is for and what it gives.
    """

    model: str
    epochs: int
    lr: float = 2e-3
    batch_size: int = 128
    weight_decay: float = 0.0
    optimizer: str = "adam"
    lr_schedule: str = "constant"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    about: str = ""


RECIPES: dict[str, Recipe] = {
    "small_cnn": Recipe(
        "small_cnn", epochs=8,
        about="the workshop CNN (3 blocks of 2 convolutions, widths 16-32-64, BatchNorm, global average "
              "pooling; 0.07 M weights)"),
    "resnet20": Recipe(
        "resnet20", epochs=4, lr_schedule="cosine",
        about="the small ResNet (He et al. ResNet-20, width 16; 0.27 M weights)"),
    "small_cnn_overconfident": Recipe(
        "small_cnn", epochs=30, lr_schedule="cosine",
        about="the workshop CNN trained to convergence (30 epochs, cosine schedule) without any "
              "regularization: it fits the training images and is over-confident on held-out ones, the "
              "setting calibration is meant to fix"),
}
"""The named recipes. ``small_cnn`` and ``resnet20`` are the workshop's Fashion-MNIST models."""


def train_recipe(
    recipe: str | Recipe,
    dataset: Any,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    epochs: int | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train (or load from the cache) the model of a recipe on ``dataset``.

    Args:
        recipe: a name in :data:`RECIPES` or a :class:`Recipe`.
        dataset: an ``xcal_core.data.Dataset`` (its ``train`` split trains, ``cal`` monitors).
        seed: training seed.
        device: training device.
        cache_dir: the model cache folder (a notebook's ``run.cache_dir``); None disables caching.
        epochs: override the recipe's epochs (e.g. 1 for a smoke test); None keeps them.
        progress: show a progress bar.

    Returns:
        :class:`~xcal_core.models.TrainResult`; ``result.config`` records the recipe.
    """
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise ValueError(f"unknown `recipe` {recipe!r}; expected one of {list(RECIPES)}")
        recipe = RECIPES[recipe]
    if not isinstance(recipe, Recipe):
        raise TypeError(f"`recipe` must be a recipe name or a Recipe, got {type(recipe).__name__}")
    if epochs is not None:
        recipe = replace(recipe, epochs=check_int(epochs, "epochs", low=0))
    return train_classifier(
        recipe.model, dataset, epochs=recipe.epochs, lr=recipe.lr, batch_size=recipe.batch_size,
        weight_decay=recipe.weight_decay, optimizer=recipe.optimizer, lr_schedule=recipe.lr_schedule,
        seed=seed, device=device, cache_dir=cache_dir, model_kwargs=dict(recipe.model_kwargs), progress=progress,
    )
