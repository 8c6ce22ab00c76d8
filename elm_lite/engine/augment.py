"""The image augmentations of CIFAR runs, on whatever device the batch is on: the standard crop +
flip (:func:`crop_flip`) and SimCLR-style views for contrastive methods (:func:`strong_augment`).

Each takes ``(x, generator)`` like :func:`~elm_lite.train.gaussian_jitter`; ``generator`` may also be a
list of streams, one per equal share of the batch (:func:`draw`), so that K runs trained together
(:func:`~elm_lite.engine.many.fit_many`) are augmented in one call, each share exactly as it would be alone.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.nn import functional as F


def draw(sample: Callable[[int, torch.Generator | None], torch.Tensor], n: int, generator) -> torch.Tensor:
    """``sample(n, generator)``: random values for ``n`` images. ``generator`` may also be a list of
    streams, one per equal share of the images: each share then draws from its own stream exactly what
    it would draw alone, and the costly image operations run once for all of them. Augmentations built
    on it say so with ``augment.stream_lists = True``."""
    if not isinstance(generator, (list, tuple)):
        return sample(n, generator)
    if n % len(generator):
        raise ValueError(f"{n} images cannot be split into {len(generator)} equal shares, one per stream.")
    return torch.cat([sample(n // len(generator), g) for g in generator])


def crop_flip(x: torch.Tensor, generator: torch.Generator | None = None, pad: int = 4) -> torch.Tensor:
    """The standard CIFAR augmentation on a batch ``(B, H, W, C)`` or ``(B, C, H, W)`` tensor:
    a random ``H x W`` crop of the zero-padded image and a random horizontal flip, per image,
    on whatever device the batch is on (``generator``: a stream on that device, or one per share of
    the batch, :func:`draw`)."""
    channels_last = x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3)
    img = x.permute(0, 3, 1, 2) if channels_last else x
    b, _, h, w = img.shape
    padded = F.pad(img, (pad, pad, pad, pad))
    offsets = lambda m, g: torch.randint(0, 2 * pad + 1, (m,), device=x.device, generator=g)  # noqa: E731
    dy, dx = draw(offsets, b, generator), draw(offsets, b, generator)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]   # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]   # (B, 1, 1, W)
    flip = draw(lambda m, g: torch.rand(m, device=x.device, generator=g), b, generator) < 0.5
    cols = torch.where(flip[:, None, None, None], 2 * dx[:, None, None, None] + w - 1 - cols, cols)
    out = padded[torch.arange(b, device=x.device)[:, None, None, None],
                 torch.arange(img.shape[1], device=x.device)[None, :, None, None], rows, cols]
    return out.permute(0, 2, 3, 1) if channels_last else out


def strong_augment(x: torch.Tensor, generator: torch.Generator | None = None, max_value: float = 255.0,
                   min_scale: float = 0.2, aspect: tuple = (3 / 4, 4 / 3), jitter: float = 0.4,
                   jitter_p: float = 0.8, grey_p: float = 0.2) -> torch.Tensor:
    """SimCLR-style augmentation for contrastive views, per image, on the batch's device: a random
    resized crop (area ``min_scale``-1 of the image, aspect ratio in ``aspect``, bilinear) with a random
    horizontal flip; with probability ``jitter_p`` a colour jitter (brightness, contrast and
    saturation factors in ``1 +- jitter``, in that order; no hue); with probability ``grey_p``
    greyscale. Pixels are floats in ``[0, max_value]``; ``x`` is ``(B, H, W, C)`` or
    ``(B, C, H, W)`` with C = 3 and comes back in its layout; ``generator`` as in :func:`draw`."""
    channels_last = x.shape[-1] == 3 and x.shape[1] != 3
    img = (x.permute(0, 3, 1, 2) if channels_last else x).float()
    b, dev = img.shape[0], x.device

    def uniform(low, high):
        return low + (high - low) * draw(lambda m, g: torch.rand(m, device=dev, generator=g), b, generator)
    area, ratio = uniform(min_scale, 1.0), torch.exp(uniform(math.log(aspect[0]), math.log(aspect[1])))
    crop_h, crop_w = (area / ratio).sqrt().clamp(max=1.0), (area * ratio).sqrt().clamp(max=1.0)
    top, left = uniform(0.0, 1.0) * (1 - crop_h), uniform(0.0, 1.0) * (1 - crop_w)
    flip = torch.where(uniform(0.0, 1.0) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev)                    # output [-1, 1] -> input coordinates
    theta[:, 0, 0], theta[:, 0, 2] = crop_w * flip, 2 * left + crop_w - 1
    theta[:, 1, 1], theta[:, 1, 2] = crop_h, 2 * top + crop_h - 1
    grid = F.affine_grid(theta, list(img.shape), align_corners=False)
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def grey(t):  # (B, 1, H, W) luminance
        return (t * torch.tensor([0.299, 0.587, 0.114], device=dev).view(1, 3, 1, 1)).sum(1, keepdim=True)
    on = (uniform(0.0, 1.0) < jitter_p).float()
    factors = [1 + on * uniform(-jitter, jitter) for _ in range(3)]   # brightness, contrast, saturation
    out = (out * factors[0].view(b, 1, 1, 1)).clamp(0, max_value)
    mean = grey(out).mean((2, 3), keepdim=True)
    out = ((out - mean) * factors[1].view(b, 1, 1, 1) + mean).clamp(0, max_value)
    out = ((out - grey(out)) * factors[2].view(b, 1, 1, 1) + grey(out)).clamp(0, max_value)
    to_grey = (uniform(0.0, 1.0) < grey_p).view(b, 1, 1, 1)
    out = torch.where(to_grey, grey(out).expand_as(out), out)
    return out.permute(0, 2, 3, 1) if channels_last else out


crop_flip.stream_lists = strong_augment.stream_lists = True   # they take a list of streams (draw)
VIEW_AUGMENTATIONS = {"crop_flip": crop_flip, "strong": strong_augment}


def view_augmentation(name: str, views: int) -> Callable:
    """The augmentation a full-scale run applies: ``crop_flip`` for one view; for two or more views
    (contrastive methods) the recipe's ``view_augment`` (``"crop_flip"`` or ``"strong"``)."""
    if name not in VIEW_AUGMENTATIONS:
        raise ValueError(f"view_augment must be one of {sorted(VIEW_AUGMENTATIONS)}, got {name!r}.")
    return VIEW_AUGMENTATIONS[name] if views > 1 else crop_flip
