"""Temporal smoothing of per-frame predictions (a post-process; reference section 3 reports
STDFormer with and without it: smoother motion, lower Accel, slightly higher position errors)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d


@dataclass
class SmoothingConfig:
    """Gaussian smoothing over time of the merged predicted vertices, per track (a post-process;
    reported as extra rows "<model>_smooth")."""

    enabled: bool = False
    sigma: float = 1.5                 # standard deviation in frames
    models: list[str] | None = None    # which models get a smoothed row; None = every model

    def validate(self) -> None:
        if self.sigma <= 0:
            raise ValueError(f"smoothing.sigma must be > 0 frames, got {self.sigma}")


def gaussian_smooth(values: np.ndarray, weights: np.ndarray, sigma: float,
                    truncate: float = 4.0) -> np.ndarray:
    """Gaussian smoothing over time (axis 0) of ONE track, ignoring frames of weight 0.

    values (T, ...) (e.g. vertices (T, V, 3)), weights (T,) (bool valid mask or floats) ->
    (T, ...) float32. Normalised convolution: every output frame is the Gaussian-weighted mean
    of the weighted frames within `truncate * sigma`, so invalid frames (bad crops, frames no
    clip covers) never leak into their neighbours, and the track ends are not pulled towards
    zero. A frame with no weighted neighbour keeps its own value. Call it per track: smoothing
    across two tracks would mix people.
    """
    values = np.asarray(values, np.float32)
    w = np.asarray(weights, np.float32).reshape(-1)
    if w.shape[0] != values.shape[0]:
        raise ValueError(f"weights {w.shape} do not match values {values.shape} on axis 0")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    expand = (slice(None),) + (None,) * (values.ndim - 1)
    num = gaussian_filter1d(values * w[expand], sigma, axis=0, mode="constant",
                            truncate=truncate)
    den = gaussian_filter1d(w, sigma, mode="constant", truncate=truncate)
    out = values.copy()
    ok = den > 1e-6
    out[ok] = num[ok] / den[ok][expand]
    return out
