"""The synthetic Human3.6M set's settings (params.yaml section `synthesize_h36m`) and the
Human3.6M names it writes (actions, frame rate)."""

from __future__ import annotations

from dataclasses import dataclass, field

FPS_H36M = 50  # Human3.6M's frame rate: frame_idx counts 50 Hz frames

# Human3.6M's actions in their published order: action_idx = position + 2 (the release numbers
# them 2-16; 1 is the unused "_ALL").
H36M_ACTIONS = ("Directions", "Discussion", "Eating", "Greeting", "Phoning", "Posing",
                "Purchases", "Sitting", "SittingDown", "Smoking", "Photo", "Waiting", "Walking",
                "WalkDog", "WalkTogether")
# The procedural motion (stdformer.data.motion styles) that stands in for each action.
ACTION_STYLE = {"Walking": "walk", "WalkDog": "walk", "WalkTogether": "walk",
                "Greeting": "walk_wave", "Sitting": "squat", "SittingDown": "squat",
                "Eating": "squat"}  # every other action: "wave" (standing, gesturing)


def action_index(name: str) -> int:
    """Human3.6M's action_idx (2-16) of an action name."""
    return H36M_ACTIONS.index(name) + 2


@dataclass
class SynthesizeH36MConfig:
    """params.yaml section `synthesize_h36m`."""

    seed: int = 0
    subjects: list[int] = field(default_factory=lambda: [1, 5, 6, 7, 8, 9, 11])
    actions: list[str] = field(default_factory=lambda: ["Directions", "Walking"])
    subactions: int = 2            # per action (the real set has 2)
    frames: int = 45               # 50 Hz frames per subaction (0.9 s)
    every: int = 5                 # images (and data.json entries) for frame_idx % every == 0
    size: int = 256                # frame side in pixels (the real frames are 1000 wide)
    unfitted_runs: int = 1         # subactions per subject whose last frames have no SMPL fit
    unfitted_frames: int = 7       # how many of the last frames of such a subaction
    joint_noise_mm: float = 3.0    # joint_3d = the body's joints + this much noise (fits: pseudo GT)
    jpeg_quality: int = 90

    def validate(self) -> None:
        if not self.subjects or len(set(self.subjects)) != len(self.subjects):
            raise ValueError(f"subjects must be a non-empty list without repeats, got "
                             f"{self.subjects}")
        if any(not 1 <= s <= 99 for s in self.subjects):
            raise ValueError(f"subjects must be in 1..99 (s_SS names), got {self.subjects}")
        unknown = [a for a in self.actions if a not in H36M_ACTIONS]
        if unknown or not self.actions or len(set(self.actions)) != len(self.actions):
            raise ValueError(f"actions must be distinct Human3.6M action names "
                             f"({', '.join(H36M_ACTIONS)}), got {self.actions}")
        if not 1 <= self.subactions <= 2:
            raise ValueError(f"subactions must be 1 or 2 (as in Human3.6M), got {self.subactions}")
        if not 1 <= self.frames <= 999_999:
            raise ValueError(f"frames must be in 1..999999 (_NNNNNN.jpg names), got {self.frames}")
        if not 1 <= self.every <= self.frames:
            raise ValueError(f"every must be in 1..frames, got {self.every}")
        if not 32 <= self.size <= 2048:
            raise ValueError(f"size must be in 32..2048, got {self.size}")
        if not 0 <= self.unfitted_runs <= len(self.actions) * self.subactions:
            raise ValueError(f"unfitted_runs must be in 0..actions x subactions, got "
                             f"{self.unfitted_runs}")
        if not 0 <= self.unfitted_frames < self.frames:
            raise ValueError(f"unfitted_frames must be in 0..frames-1, got {self.unfitted_frames}")
        if self.joint_noise_mm < 0:
            raise ValueError(f"joint_noise_mm must be >= 0, got {self.joint_noise_mm}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")

    @property
    def sampled_frames(self) -> list[int]:
        """frame_idx values that get an image and a data.json entry."""
        return list(range(0, self.frames, self.every))
