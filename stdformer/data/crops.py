"""Person boxes from 2D keypoints and square affine crops (the VIBE/TCMR protocol for 3DPW).

Boxes: per frame, keypoints with confidence > `conf_threshold` span an extent; the box centre is
the extent's midpoint and its side is `extent_scale` (1.1) x the larger extent. Frames with
`min_visible` (6) or fewer such keypoints have no box; their boxes are linearly interpolated
from neighbouring frames (held constant before the first / after the last box). The box track is
then median-filtered and Gaussian-smoothed over time, so the crop does not jitter with detection
noise.

Crops: `crop_person(image or JPEG bytes, centre, side, out_size, scale=...)` gives a crop and its
affine (preprocessing and video inference share it). `crop_affine` maps a square of side
`side * scale` around `center` onto an `out_size x out_size` image. Pixel coordinates follow the
pixel-centre convention (pixel i covers [i - 0.5, i + 0.5]), the one OpenCV's warpAffine samples
with: the box centre lands on the crop centre ((out_size - 1) / 2, (out_size - 1) / 2) and the
square's edges on -0.5 / out_size - 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg
from scipy import ndimage

# Defaults of the published protocol (VIBE's 3DPW preprocessing: vis 0.3, medfilt 11, sigma 8).
CONF_THRESHOLD = 0.3
MIN_VISIBLE = 6
EXTENT_SCALE = 1.1
MEDIAN_KERNEL = 11
GAUSSIAN_SIGMA = 8.0


@dataclass(frozen=True)
class BoxTrack:
    """Square boxes of one person track.

    centers (N,2) float64 pixel (x, y); sides (N,) float64 pixels; detected (N,) bool: the frame
    had more than `min_visible` confident keypoints (its box is measured, not interpolated).
    With no detected frame at all, centers and sides are NaN.
    """

    centers: np.ndarray
    sides: np.ndarray
    detected: np.ndarray


def visible_mask(keypoints: np.ndarray, conf_threshold: float = CONF_THRESHOLD) -> np.ndarray:
    """keypoints (N,K,3) (x, y, conf) -> (N,K) bool: confident and finite."""
    kp = np.asarray(keypoints, dtype=np.float64)
    return (kp[..., 2] > conf_threshold) & np.isfinite(kp[..., :2]).all(axis=-1)


def keypoint_boxes(keypoints: np.ndarray, conf_threshold: float = CONF_THRESHOLD,
                   min_visible: int = MIN_VISIBLE, extent_scale: float = EXTENT_SCALE
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw per-frame boxes.

    keypoints (N,K,3) -> centers (N,2), sides (N,), detected (N,) bool; undetected frames
    (<= min_visible confident keypoints) hold NaN.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 3 or kp.shape[-1] != 3:
        raise ValueError(f"keypoints must have shape (N,K,3), got {kp.shape}")
    vis = visible_mask(kp, conf_threshold)  # (N,K)
    detected = vis.sum(axis=1) > min_visible  # (N,)
    xy = np.where(vis[..., None], kp[..., :2], np.nan)  # (N,K,2)
    centers = np.full((len(kp), 2), np.nan)
    sides = np.full(len(kp), np.nan)
    if detected.any():
        lo = np.nanmin(xy[detected], axis=1)  # (M,2)
        hi = np.nanmax(xy[detected], axis=1)
        centers[detected] = (lo + hi) / 2
        sides[detected] = extent_scale * (hi - lo).max(axis=1)
    return centers, sides, detected


def interpolate_missing(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Fill rows where `known` is False by linear interpolation over the frame index.

    values (N,D), known (N,) bool -> (N,D). Rows before the first / after the last known row
    take its value (np.interp holds the edges). With nothing known the input is returned.
    """
    values = np.asarray(values, dtype=np.float64)
    known = np.asarray(known, dtype=bool)
    if known.all() or not known.any():
        return values.copy()
    t = np.arange(len(values))
    return np.stack([np.interp(t, t[known], values[known, d]) for d in range(values.shape[1])],
                    axis=1)


def smooth_track(values: np.ndarray, median_kernel: int = MEDIAN_KERNEL,
                 sigma: float = GAUSSIAN_SIGMA) -> np.ndarray:
    """Median filter then Gaussian filter each column over time. values (N,D) -> (N,D).

    Edges use 'nearest' padding (scipy.signal.medfilt pads with zeros, which drags boxes
    towards the image corner at the ends of a track).
    """
    values = np.asarray(values, dtype=np.float64)
    out = values
    if median_kernel > 1:
        out = ndimage.median_filter(out, size=(median_kernel, 1), mode="nearest")
    if sigma > 0:
        out = ndimage.gaussian_filter1d(out, sigma, axis=0, mode="nearest")
    return out


def track_boxes(keypoints: np.ndarray, conf_threshold: float = CONF_THRESHOLD,
                min_visible: int = MIN_VISIBLE, extent_scale: float = EXTENT_SCALE,
                median_kernel: int = MEDIAN_KERNEL, sigma: float = GAUSSIAN_SIGMA) -> BoxTrack:
    """The full protocol: raw boxes -> interpolate missing -> median -> Gaussian.

    keypoints (N,K,3) (x, y, conf) in image pixels -> BoxTrack with (N,2) centres, (N,) sides.
    """
    centers, sides, detected = keypoint_boxes(keypoints, conf_threshold, min_visible,
                                              extent_scale)
    return smooth_boxes(centers, sides, detected, median_kernel, sigma)


def smooth_boxes(centers: np.ndarray, sides: np.ndarray, detected: np.ndarray,
                 median_kernel: int = MEDIAN_KERNEL, sigma: float = GAUSSIAN_SIGMA) -> BoxTrack:
    """Raw square boxes of one track -> interpolate missing -> median -> Gaussian.

    centers (N,2), sides (N,), detected (N,) bool (other rows are ignored) -> BoxTrack. The one
    box path for keypoint boxes (preprocess) and detector boxes (`stdformer predict`).
    """
    centers = np.asarray(centers, np.float64)
    sides = np.asarray(sides, np.float64)
    detected = np.asarray(detected, bool)
    if not detected.any():
        return BoxTrack(centers, sides, detected)
    params = interpolate_missing(np.column_stack([centers, sides]), detected)  # (N,3)
    params = smooth_track(params, median_kernel, sigma)
    return BoxTrack(params[:, :2], params[:, 2], detected)


# --------------------------------------------------------------------------------------------
# Affine crops


def crop_affine(center, side, scale: float, out_size: int,
                rotation_deg: float = 0.0) -> np.ndarray:
    """(2,3) float64 matrix mapping image pixels to crop pixels.

    The square of side `side * scale` centred on `center` (x, y) fills the `out_size` crop; an
    optional rotation (degrees, counter-clockwise in the image) turns it about the centre.
    Batched: centers (..., 2) and sides (...) give (..., 2, 3).
    """
    center = np.asarray(center, dtype=np.float64)
    zoom = out_size / (np.asarray(side, dtype=np.float64) * scale)
    theta = np.deg2rad(rotation_deg)
    # Image y points down, so a visually counter-clockwise turn is a clockwise matrix.
    rot = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
    linear = zoom[..., None, None] * rot
    mid = (out_size - 1) / 2.0
    offset = mid - linear @ center[..., :, None]
    return np.concatenate([linear, offset], axis=-1)


def apply_affine(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """points (...,2) -> (...,2) through a (2,3) affine (or (N,2,3) with points (N,...,2))."""
    points = np.asarray(points, dtype=np.float64)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.ndim == 2:
        return points @ affine[:, :2].T + affine[:, 2]
    # Batched: one affine per leading index.
    lead = points.reshape(len(affine), -1, 2)
    out = np.einsum("nij,npj->npi", affine[:, :, :2], lead) + affine[:, None, :, 2]
    return out.reshape(points.shape)


def affine_zoom(affine: np.ndarray) -> float:
    """Crop pixels per image pixel (geometric mean over both axes)."""
    (a, b, _), (c, d, _) = np.asarray(affine, dtype=np.float64).tolist()
    return abs(a * d - b * c) ** 0.5


def crop_frame(image: np.ndarray, affine: np.ndarray, out_size: int) -> np.ndarray:
    """Warp image (H,W,C) uint8 into an (out_size, out_size, C) crop; outside pixels are 0.

    When the crop shrinks the image by more than 2x, the covered region is first area-resized
    (anti-aliasing; bilinear warping alone would skip pixels and alias).
    """
    affine = np.asarray(affine, dtype=np.float64)
    zoom = affine_zoom(affine)
    if zoom < 0.5:
        image, affine = _area_downscale_roi(image, affine, out_size, zoom)
    return cv2.warpAffine(image, affine, (out_size, out_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _area_downscale_roi(image: np.ndarray, affine: np.ndarray, out_size: int, zoom: float
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Cut the image region the crop covers and area-resize it to ~crop resolution.

    Returns the smaller image and the affine from its pixels to the crop.
    """
    h, w = image.shape[:2]
    corners = np.array([[-0.5, -0.5], [out_size - 0.5, -0.5], [-0.5, out_size - 0.5],
                        [out_size - 0.5, out_size - 0.5]])
    inverse = cv2.invertAffineTransform(affine)
    src = apply_affine(corners, inverse)  # (4,2) crop corners in the image
    x0 = int(np.clip(np.floor(src[:, 0].min()) - 1, 0, w))
    x1 = int(np.clip(np.ceil(src[:, 0].max()) + 2, 0, w))
    y0 = int(np.clip(np.floor(src[:, 1].min()) - 1, 0, h))
    y1 = int(np.clip(np.ceil(src[:, 1].max()) + 2, 0, h))
    if x1 - x0 < 2 or y1 - y0 < 2:  # crop entirely outside the image
        return image, affine
    roi = image[y0:y1, x0:x1]
    new_w = max(1, int(round((x1 - x0) * zoom)))
    new_h = max(1, int(round((y1 - y0) * zoom)))
    small = cv2.resize(roi, (new_w, new_h), interpolation=cv2.INTER_AREA)
    fx, fy = new_w / (x1 - x0), new_h / (y1 - y0)
    # Resized pixel u sits at ROI pixel (u + 0.5) / f - 0.5, i.e. image pixel x0 + that.
    to_image = np.array([[1 / fx, 0, x0 + 0.5 / fx - 0.5], [0, 1 / fy, y0 + 0.5 / fy - 0.5]])
    return small, compose_affine(affine, to_image)


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """(2,3) affine equal to applying `inner` first, then `outer`."""
    outer3 = np.vstack([outer, [0, 0, 1]])
    inner3 = np.vstack([inner, [0, 0, 1]])
    return (outer3 @ inner3)[:2]


def jpeg_reduction(affine: np.ndarray, max_factor: int = 8) -> int:
    """Largest JPEG decode reduction (1, 2, 4 or 8) that keeps at least crop resolution.

    libjpeg decodes at 1/2, 1/4, 1/8 size almost for free (DCT scaling), so a 224 crop of a
    person 800 px tall in a 1080p frame needs only a quarter-size decode.
    """
    zoom = affine_zoom(affine)
    factor = 1
    while factor * 2 <= max_factor and zoom * factor * 2 <= 1.0:
        factor *= 2
    return factor


def reduced_affine(affine: np.ndarray, factor: int) -> np.ndarray:
    """Affine from a 1/factor decoded image to the crop (reduced pixel u covers full pixels
    [u*f, (u+1)*f), centre u*f + (f-1)/2)."""
    (a, b, c), (d, e, f) = np.asarray(affine, dtype=np.float64).tolist()  # floats: per frame
    half = (factor - 1) / 2
    return np.array([[a * factor, b * factor, c + (a + b) * half],
                     [d * factor, e * factor, f + (d + e) * half]])


class UnreadableImageError(ValueError):
    """JPEG bytes the decoder refuses or warns about: not a JPEG, truncated, or corrupt data in
    the middle (bytes that do not decode as a valid entropy-coded stream)."""


def decode_jpeg(data: bytes, factor: int = 1) -> np.ndarray:
    """JPEG bytes -> (ceil(H/f), ceil(W/f), 3) uint8 BGR (as cv2.imread), f in 1, 2, 4, 8.

    Decoded by libjpeg-turbo (simplejpeg) in strict mode: a warning of the decoder ("Corrupt
    JPEG data: ...", "Premature end of JPEG file") is an UnreadableImageError with its text,
    not a silently grey or garbled image as OpenCV gives. Garbage that happens to decode as a
    valid stream cannot be told from image content by any decoder.
    """
    try:
        height, width = simplejpeg.decode_jpeg_header(data)[:2]
        return simplejpeg.decode_jpeg(data, colorspace="BGR", strict=True,
                                      min_height=-(-height // factor),
                                      min_width=-(-width // factor))
    except (ValueError, TypeError) as e:   # simplejpeg reports every decoder problem so
        raise UnreadableImageError(str(e) or type(e).__name__) from e


def crop_people(data: bytes, affines: list[np.ndarray], out_size: int) -> list[np.ndarray]:
    """Crops of several people in one JPEG image: decoded once, at the cheapest reduction that
    keeps every crop at full resolution. affines: (2, 3) image -> crop (`crop_affine`) each;
    returns (out_size, out_size, 3) uint8 BGR crops (UnreadableImageError when corrupt)."""
    factor = min(jpeg_reduction(a) for a in affines)
    image = decode_jpeg(bytes(data), factor)
    return [crop_frame(image, reduced_affine(a, factor), out_size) for a in affines]


def crop_person(image: np.ndarray | bytes, center, side: float, out_size: int, *,
                scale: float = 1.2, rotation_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The square person crop of one frame and its affine.

    image: (H, W, 3) uint8 (channel order kept), or JPEG bytes (decoded at the cheapest
    sufficient reduction, BGR; UnreadableImageError when corrupt). center (x, y) and side: the
    person box in image pixels (`track_boxes`); the crop shows side * scale around the centre,
    turned by rotation_deg (counter-clockwise). Returns (crop (out_size, out_size, 3) uint8,
    affine (2, 3) float64 mapping image pixels to crop pixels); outside the image is black.
    """
    affine = crop_affine(center, side, scale, out_size, rotation_deg)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return crop_people(image, [affine], out_size)[0], affine
    return crop_frame(np.asarray(image), affine, out_size), affine
