"""The synthetic data set's settings (params.yaml section `synthesize`) and its frame rate."""

from __future__ import annotations

from dataclasses import dataclass

FPS = 30  # image and annotation rate; motion is generated at 2 x FPS for the *_60Hz keys


@dataclass
class SynthesizeConfig:
    """params.yaml section `synthesize`."""

    seed: int = 0
    train_sequences: int = 6
    validation_sequences: int = 2
    test_sequences: int = 3
    min_frames: int = 48
    max_frames: int = 64
    width: int = 320
    height: int = 240
    two_actor_fraction: float = 0.35  # of the sequences of each split (rounded, >= 1 if > 0)
    distractors: int = 1  # unannotated people per sequence
    occluders: int = 1  # boxes / poles per sequence
    invalid_campose_fraction: float = 0.06  # frames per sequence with campose_valid False
    jpeg_quality: int = 90
    texture_size: int = 64  # side of the placeholder texture_maps
    side_cues: bool = True  # left limbs warm, right limbs cool: which way a person faces shows

    def validate(self) -> None:
        for name in ("train_sequences", "validation_sequences", "test_sequences",
                     "distractors", "occluders"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if sum(self.sequences_per_split.values()) == 0:
            raise ValueError("at least one sequence is needed")
        if not 3 <= self.min_frames <= self.max_frames:
            raise ValueError(f"need 3 <= min_frames <= max_frames, got {self.min_frames}, "
                             f"{self.max_frames}")
        if self.max_frames > 99999:
            raise ValueError("max_frames must be < 100000 (image_%05d.jpg names)")
        if not (32 <= self.width <= 4096 and 32 <= self.height <= 4096):
            raise ValueError(f"width/height must be in 32..4096, got {self.width}x{self.height}")
        for name in ("two_actor_fraction", "invalid_campose_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.invalid_campose_fraction > 0.5:
            raise ValueError("invalid_campose_fraction above 0.5 leaves too few usable frames")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if not 4 <= self.texture_size <= 1024:
            raise ValueError(f"texture_size must be in 4..1024, got {self.texture_size}")

    @property
    def sequences_per_split(self) -> dict[str, int]:
        return {"train": self.train_sequences, "validation": self.validation_sequences,
                "test": self.test_sequences}
