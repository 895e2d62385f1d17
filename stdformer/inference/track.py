"""Person tracks from per-frame detections (ByteTrack from `supervision`), or from the ids of a
boxes file; small and static (false) tracks dropped, then short ones, the longest `max_people`
kept. Frames the detector skipped (it runs on every k-th frame) are bridged: the tracker steps
over them and they stay undetected in the track (people.person_track_boxes interpolates them)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stdformer.inference.config import TrackerConfig
from stdformer.inference.detect import BoxTable, Detections


@dataclass
class PersonTrack:
    """One person over the consecutive frames `first .. first + T - 1` (gaps included).

    xyxy (T, 4) full-body boxes in image pixels, NaN where the person was not detected;
    score (T,) detection scores (0 where not detected); detected (T,) bool.
    """

    track_id: int
    first: int
    xyxy: np.ndarray
    score: np.ndarray

    @property
    def detected(self) -> np.ndarray:
        return np.isfinite(self.xyxy).all(axis=1)

    @property
    def frames(self) -> np.ndarray:
        return np.arange(self.first, self.first + len(self.xyxy))

    def __len__(self) -> int:
        return len(self.xyxy)


def _assemble(frame: np.ndarray, ids: np.ndarray, xyxy: np.ndarray, score: np.ndarray
              ) -> dict[int, PersonTrack]:
    """Rows (frame, id, box, score) -> one PersonTrack per id."""
    tracks = {}
    for track_id in np.unique(ids):
        rows = np.flatnonzero(ids == track_id)
        first, last = int(frame[rows].min()), int(frame[rows].max())
        boxes = np.full((last - first + 1, 4), np.nan)
        scores = np.zeros(last - first + 1)
        boxes[frame[rows] - first] = xyxy[rows]
        scores[frame[rows] - first] = score[rows]
        tracks[int(track_id)] = PersonTrack(int(track_id), first, boxes, scores)
    return tracks


def track_detections(detections: Sequence[Detections | None], fps: float, cfg: TrackerConfig
                     ) -> list[PersonTrack]:
    """ByteTrack over the frames' detections (None: a frame the detector did not run on) ->
    tracks without the false ones (`drop_false_tracks`), ids renumbered by `order_tracks`."""
    import supervision as sv

    looked = [i for i, found in enumerate(detections) if found is not None]
    # The tracker counts its updates: at the rate it is updated, lost_frames keeps its meaning
    # in video frames.
    rate = fps * len(looked) / max(len(detections), 1)
    with warnings.catch_warnings():     # ByteTrack moved to another package after 0.30
        warnings.simplefilter("ignore", FutureWarning)
        tracker = sv.ByteTrack(track_activation_threshold=cfg.track_threshold,
                               lost_track_buffer=cfg.lost_frames,
                               minimum_matching_threshold=cfg.match_threshold, frame_rate=rate)
    rows = []
    for index in looked:
        found = detections[index]
        result = tracker.update_with_detections(sv.Detections(
            xyxy=np.asarray(found.xyxy, np.float32).reshape(-1, 4),
            confidence=np.asarray(found.score, np.float32).reshape(-1),
            class_id=np.zeros(len(found), int)))
        for box, score, track_id in zip(result.xyxy, result.confidence, result.tracker_id,
                                        strict=True):
            rows.append((index, int(track_id), *box, score))
    if not rows:
        return []
    table = np.array(rows, np.float64)
    tracks = _assemble(table[:, 0].astype(int), table[:, 1].astype(int), table[:, 2:6],
                       table[:, 6])
    return order_tracks(drop_false_tracks(tracks.values(), cfg))


def is_false_track(track: PersonTrack, cfg: TrackerConfig) -> bool:
    """Small (median box shorter than cfg.min_height px) or static (over at least
    cfg.static_frames detected frames, no edge of the box moves by more than cfg.static_motion
    x the median box height: a person's box breathes with the limbs even when they stand still;
    a detector's box on a fixed background pattern repeats itself)."""
    boxes = track.xyxy[track.detected]                                       # (D, 4)
    height = float(np.median(boxes[:, 3] - boxes[:, 1]))
    if height < cfg.min_height:
        return True
    if cfg.static_motion > 0 and len(boxes) >= cfg.static_frames:
        return float(np.ptp(boxes, axis=0).max()) < cfg.static_motion * height
    return False


def drop_false_tracks(tracks, cfg: TrackerConfig) -> list[PersonTrack]:
    return [t for t in tracks if not is_false_track(t, cfg)]


def tracks_from_ids(table: BoxTable) -> list[PersonTrack]:
    """The tracks a boxes file names by id (ids kept)."""
    tracks = _assemble(table.frame, table.track_id, table.xyxy, table.score)
    return sorted(tracks.values(), key=lambda t: t.track_id)


def order_tracks(tracks) -> list[PersonTrack]:
    """Renumber 0, 1, ... by first frame, then by the box's left edge there (deterministic)."""
    ordered = sorted(tracks, key=lambda t: (t.first, float(t.xyxy[0, 0])))
    for new_id, track in enumerate(ordered):
        track.track_id = new_id
    return ordered


def min_detections(min_frames: int, every: int) -> int:
    """Detections a track needs to cover `min_frames` frames when the detector ran on every
    `every`-th frame (min_track_frames counts video frames, whatever the detection rate)."""
    return max(1, math.ceil(min_frames / every))


def select_tracks(tracks: Sequence[PersonTrack], min_frames: int, max_people: int = 0
                  ) -> list[PersonTrack]:
    """Tracks with at least `min_frames` detected frames; with max_people > 0 the ones with the
    most detected frames (ties: the earlier id). Returned in id order."""
    kept = [t for t in tracks if int(t.detected.sum()) >= min_frames]
    if max_people > 0:
        kept = sorted(kept, key=lambda t: (-int(t.detected.sum()), t.track_id))[:max_people]
    return sorted(kept, key=lambda t: t.track_id)
