"""The datasets preprocess reads (params.yaml section `datasets:`, one entry per source).

    datasets:
      3dpw: {layout: 3dpw, root: data/raw/synthetic, splits: [train, validation, test]}
      h36m: {layout: h36m, root: data/raw/synthetic_h36m, subjects: {train: [1, 5, 6, 7],
             validation: [8], test: [9, 11]}, every: 5, cameras: [1, 2, 3, 4]}

The entry's key is the source's name everywhere (`data/shards/<name>/`, the manifest's `source`
column, each clip's meta, report.json). `layout` picks the reader (threedpw.py, h36m.py,
mpi_inf_3dhp.py); the other fields are the layout's. The crop settings every source shares
stay in `preprocess:`. docs/datasets.md describes the layouts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from stdformer.config import from_dict, section_config
from stdformer.data.preprocess_config import PreprocessConfig
from stdformer.io import DataError

# Keys `preprocess:` held before `datasets:` existed: a clear pointer instead of "unknown key".
MOVED_KEYS = {"dataset_root": "datasets.<name>.root", "source": "the <name> of datasets.<name>",
              "splits": "datasets.<name>.splits", "optional_splits":
              "datasets.<name>.optional_splits", "stride": "datasets.<name>.stride"}
H36M_SPLIT_NAMES = ("train", "validation", "test")


def _stride_problems(stride: dict[str, int], splits: list[str]) -> list[tuple[str, str]]:
    out = []
    for split, value in stride.items():
        if split not in splits:
            out.append((f"stride.{split}", f"not one of splits {splits}"))
        elif value < 1:
            out.append((f"stride.{split}", f"must be >= 1, got {value}"))
    return out


def _optional_problems(optional: list[str], splits: list[str]) -> list[tuple[str, str]]:
    return [("optional_splits", f"{s!r} is not one of splits {splits}")
            for s in optional if s not in splits]


@dataclass
class ThreeDPWDataset:
    """A 3DPW-layout root (`imageFiles/`, `sequenceFiles/<split>/*.pkl`): real 3DPW or the
    synthetic copy."""

    layout: Literal["3dpw"] = "3dpw"
    root: str = "data/raw/synthetic"
    splits: list[str] = field(default_factory=lambda: ["train", "validation", "test"])
    optional_splits: list[str] = field(default_factory=list)  # may have no clips (else an error)
    # Per split; a split not listed uses clip_len (non-overlapping). The last clip_len frames
    # of a track always form a clip too.
    stride: dict[str, int] = field(default_factory=dict)

    def problems(self) -> list[tuple[str, str]]:
        out = [] if self.splits else [("splits", "must name at least one split")]
        return out + _optional_problems(self.optional_splits, self.splits) + _stride_problems(
            self.stride, self.splits)

    def validate(self) -> None:
        problems = self.problems()
        if problems:
            name, problem = problems[0]
            raise ValueError(f"{name}: {problem}")


@dataclass
class H36MDataset:
    """A Human3.6M root in the NeuralAnnot / I2L-MeshNet layout (`images/`, `annotations/`).
    The subjects decide the split a sequence lands in; the field trains on S1, S5, S6, S7, S8
    and tests on S9, S11 (here S8 is carved out of the train subjects for validation)."""

    layout: Literal["h36m"] = "h36m"
    root: str = "data/raw/synthetic_h36m"
    subjects: dict[str, list[int]] = field(default_factory=lambda: {
        "train": [1, 5, 6, 7], "validation": [8], "test": [9, 11]})
    every: int = 5  # keep frames with frame_idx % every == 0 (the field's every 5th frame)
    cameras: list[int] = field(default_factory=lambda: [1, 2, 3, 4])  # cam_idx 1-4
    optional_splits: list[str] = field(default_factory=list)
    stride: dict[str, int] = field(default_factory=dict)  # per split, in sampled frames

    @property
    def splits(self) -> list[str]:
        return list(self.subjects)

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if not self.subjects:
            out.append(("subjects", "must name at least one split"))
        for split, subjects in self.subjects.items():
            if split not in H36M_SPLIT_NAMES:
                out.append((f"subjects.{split}", f"split must be one of {list(H36M_SPLIT_NAMES)}"))
            if any(s < 1 for s in subjects):
                out.append((f"subjects.{split}", f"subject numbers are >= 1, got {subjects}"))
        seen: dict[int, str] = {}
        for split, subjects in self.subjects.items():
            for s in subjects:
                if s in seen:
                    out.append((f"subjects.{split}", f"subject {s} is in {seen[s]!r} too"))
                seen[s] = split
        if self.every < 1:
            out.append(("every", f"must be >= 1, got {self.every}"))
        if not self.cameras or any(c < 1 for c in self.cameras):
            out.append(("cameras", f"must list camera numbers >= 1, got {self.cameras}"))
        return out + _optional_problems(self.optional_splits, self.splits) + _stride_problems(
            self.stride, self.splits)

    validate = ThreeDPWDataset.validate


def _numbers_problems(name: str, numbers: list[int], low: int) -> list[tuple[str, str]]:
    if any(n < low for n in numbers):
        return [(name, f"numbers are >= {low}, got {numbers}")]
    return []


@dataclass
class MPIINF3DHPDataset:
    """An MPI-INF-3DHP root (`S{1-8}/Seq{1,2}/annot.mat`, `mpi_inf_3dhp_test_set/TS{1-6}/
    annot_data.mat`): joints only, no SMPL fits (mpi_inf_3dhp.py). Splits come from the
    training recordings (`subjects`, each with its `sequences`) or from the test set
    (`test_sequences`: TS numbers)."""

    layout: Literal["mpi_inf_3dhp"] = "mpi_inf_3dhp"
    root: str = "data/raw/mpi_inf_3dhp"
    subjects: dict[str, list[int]] = field(default_factory=lambda: {
        "train": [1, 2, 3, 4, 5, 6, 7], "validation": [8]})
    sequences: list[int] = field(default_factory=lambda: [1, 2])  # Seq1, Seq2 of each subject
    test_sequences: dict[str, list[int]] = field(default_factory=lambda: {
        "test": [1, 2, 3, 4, 5, 6]})
    # The field's training cameras (SPIN, VIBE, TCMR, GLoT): video_0-2 and 4-8.
    cameras: list[int] = field(default_factory=lambda: [0, 1, 2, 4, 5, 6, 7, 8])
    every: int = 10       # training recordings: rows % every == 0 (SPIN keeps every 10th)
    test_every: int = 1   # the test set: every frame (its protocol scores them all)
    optional_splits: list[str] = field(default_factory=list)
    stride: dict[str, int] = field(default_factory=dict)  # per split, in sampled frames

    @property
    def splits(self) -> list[str]:
        return [*self.subjects, *self.test_sequences]

    def problems(self) -> list[tuple[str, str]]:
        out = [] if self.splits else [("subjects", "must name at least one split")]
        for section in ("subjects", "test_sequences"):
            for split, numbers in getattr(self, section).items():
                if split not in H36M_SPLIT_NAMES:
                    out.append((f"{section}.{split}",
                                f"split must be one of {list(H36M_SPLIT_NAMES)}"))
                out += _numbers_problems(f"{section}.{split}", numbers, 1)
        for split in self.test_sequences:
            if split in self.subjects:
                problem = "is in subjects too (a split comes from the recordings or the test set)"
                out.append((f"test_sequences.{split}", problem))
        out += _numbers_problems("sequences", self.sequences, 1)
        if not self.cameras:
            out.append(("cameras", "must list at least one camera"))
        out += _numbers_problems("cameras", self.cameras, 0)
        for name in ("every", "test_every"):
            if getattr(self, name) < 1:
                out.append((name, f"must be >= 1, got {getattr(self, name)}"))
        return out + _optional_problems(self.optional_splits, self.splits) + _stride_problems(
            self.stride, self.splits)

    validate = ThreeDPWDataset.validate


Dataset = ThreeDPWDataset | H36MDataset | MPIINF3DHPDataset
LAYOUTS: dict[str, type] = {"3dpw": ThreeDPWDataset, "h36m": H36MDataset,
                            "mpi_inf_3dhp": MPIINF3DHPDataset}


def stride_for(dataset: Dataset, split: str, clip_len: int) -> int:
    return dataset.stride.get(split, clip_len)


def dataset_config(params: dict, name: str, source: str | os.PathLike) -> Dataset:
    """`datasets.<name>` of already-read params as its layout's config (DataError naming the
    file and the field)."""
    entries = params.get("datasets")
    if not isinstance(entries, dict) or not entries:
        raise DataError(source, "missing section: one entry per dataset, e.g. "
                        "`datasets: {3dpw: {layout: 3dpw, root: data/raw/synthetic}}` "
                        "(docs/datasets.md)", field="datasets")
    if name not in entries:
        raise DataError(source, f"no dataset {name!r}; the section names {sorted(entries)}",
                        field="datasets")
    entry = entries[name]
    where = f"datasets.{name}"
    layout = entry.get("layout") if isinstance(entry, dict) else None
    if layout not in LAYOUTS:
        raise DataError(source, f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}",
                        field=f"{where}.layout")
    return from_dict(LAYOUTS[layout], entry, source=str(source), prefix=where)


def all_dataset_configs(params: dict, source: str | os.PathLike) -> dict[str, Dataset]:
    """Every entry of `datasets:` (checked), by name."""
    if not params.get("datasets"):
        dataset_config(params, "", source)  # the error naming the missing section
    return {name: dataset_config(params, name, source) for name in params["datasets"]}


def preprocess_section(params: dict, source: str | os.PathLike,
                       required: bool = True) -> PreprocessConfig:
    """The shared `preprocess:` settings; a params.yaml written before `datasets:` existed gets
    one line naming the new place of its first moved key."""
    section = params.get("preprocess") or {}
    for key, new in MOVED_KEYS.items():
        if isinstance(section, dict) and key in section:
            raise DataError(source, f"moved: each dataset is now an entry of `datasets:` "
                            f"({new}; docs/datasets.md)",
                            field=f"preprocess.{key}")
    return section_config(params, "preprocess", PreprocessConfig, source, required=required)
