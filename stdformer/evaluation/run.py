"""The evaluation run: every model (plus the mean-pose baseline and smoothed variants) on the same
frames of one split of each dataset (a source, maybe one camera of it: `evaluate.datasets`),
then the metrics files, csvs, charts and overlays, per dataset.

    result = evaluate(cfg, EvaluatePaths(shards=..., body=..., metrics=..., ...))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stdformer.data.manifest import read_manifest
from stdformer.data.shard_index import crop_protocol
from stdformer.data.sources import source_dir, source_names
from stdformer.devices import resolve_device
from stdformer.evaluation import overlays as ov
from stdformer.evaluation import report
from stdformer.evaluation.config import DatasetSpec, EvaluateConfig
from stdformer.io import DataError, atomic_output, read_json, write_bytes_atomic, write_text_atomic
from stdformer.model.assets import load_body_assets
from stdformer.model.pretrained import load_model_or_checkpoint
from stdformer.scoring import BASELINE_NAME, SMOOTH_SUFFIX
from stdformer.scoring.predict import Predictor, constant_predictor, model_predictor
from stdformer.scoring.run import (
    EvaluationResult,
    camera_clips,
    clip_length,
    evaluate_predictors,
    mean_pose_vertices,
)


@dataclass(frozen=True)
class EvaluatePaths:
    shards: Path                                       # sources (stdformer/data/sources.py)
    body: Path                                         # body model directory
    metrics: Path                                      # overall results (eval.json)
    model_metrics: Path                                # directory: <model>.json each
    diagnostics: Path
    per_frame: Path                                    # parquet
    per_sequence_csv: Path
    over_time_csv: Path
    plots: Path                                        # directory, replaced as a whole


@dataclass
class EvaluationRun:
    """What `evaluate` scored: dataset -> its result, and dataset -> notes (source, camera, and
    `mpvpe` where its meshes are pseudo ground truth)."""

    results: dict[str, EvaluationResult]
    notes: dict[str, dict]

    def markdown(self) -> str:
        return report.markdown_table({d: r.overall for d, r in self.results.items()},
                                     [d for d, n in self.notes.items() if "mpvpe" in n])


# --------------------------------------------------------------------------------------------
# Datasets and predictors from the configuration


PSEUDO_MESH_LAYOUTS = ("h36m",)   # layouts whose meshes are SMPL fits to mocap, not measured


def dataset_specs(cfg: EvaluateConfig, shards: Path) -> dict[str, DatasetSpec]:
    """name -> DatasetSpec: the configured datasets, else one per source under `shards`."""
    return dict(cfg.datasets) or {name: DatasetSpec(name) for name in source_names(shards)}


def mesh_is_pseudo(source: Path) -> bool:
    """Whether the source's ground-truth meshes are fits (its report.json `layout`)."""
    report_file = source / "report.json"
    layout = read_json(report_file).get("layout") if report_file.is_file() else None
    return layout in PSEUDO_MESH_LAYOUTS


def load_models(cfg: EvaluateConfig, sources: Mapping[str, Path], body_dir: Path,
                clip_len: int, device: torch.device) -> dict[str, Predictor]:
    """name -> predictor for every configured model file. A model whose clip length differs
    from the shards' is refused (its windows would not be the clips the manifest describes),
    and so is one whose recorded input protocol crops otherwise than any scored source was
    cropped (its scores would measure another input)."""
    predictors: dict[str, Predictor] = {}
    for name, path in cfg.model_files().items():
        model, inputs = load_model_or_checkpoint(path, body_dir, clip_len=clip_len)
        if model.cfg.clip_len != clip_len:
            raise DataError(path, f"model clip_len {model.cfg.clip_len} differs from the "
                            f"{clip_len}-frame clips in {', '.join(map(str, sources.values()))}",
                            field="model_config.clip_len")
        for where in sources.values():
            if inputs is None:
                break
            differs = [f"{k} {getattr(inputs, k)} vs {v}" for k, v in crop_protocol(where).items()
                       if v is not None and getattr(inputs, k) is not None
                       and getattr(inputs, k) != v]
            if differs:
                raise DataError(path, f"trained on crops other than those in {where} "
                                f"({', '.join(differs)}): rerun preprocess with the model's "
                                "settings", field="inputs")
        predictors[name] = model_predictor(model, device, inputs)
    return predictors


# --------------------------------------------------------------------------------------------
# Outputs


def write_outputs(results: Mapping[str, EvaluationResult], paths: EvaluatePaths,
                  faces: np.ndarray, primary: str | None, worst: int = 3,
                  overlay_size: int = 160, overlay_frames: int = 4,
                  notes: Mapping[str, Mapping] | None = None) -> dict[str, list[str]]:
    """Write every output atomically, per dataset (`results`: dataset -> its result; `notes`:
    dataset -> {source, camera, mpvpe}, an `mpvpe` note marking pseudo ground truth); returns
    each dataset's worst sequences (by `primary`'s MPJPE)."""
    notes = dict(notes or {})
    pseudo = [d for d, n in notes.items() if "mpvpe" in n]
    sequences = {d: report.worst_sequences(r.per_sequence, primary, worst) if primary else []
                 for d, r in results.items()}
    write_text_atomic(paths.metrics, report.eval_json(
        {d: r.overall for d, r in results.items()}, notes))
    with atomic_output(paths.model_metrics, directory=True) as tmp:
        for dataset, result in results.items():
            (tmp / dataset).mkdir()
            for model, summary in result.overall.items():
                (tmp / dataset / f"{model}.json").write_text(
                    report.model_metrics_json(summary, pseudo_mesh=dataset in pseudo))
    write_text_atomic(paths.diagnostics, report.diagnostics_json(
        {d: r.diagnostics for d, r in results.items()}))
    write_bytes_atomic(paths.per_frame, report.per_frame_parquet(pooled_rows(results)))
    write_text_atomic(paths.per_sequence_csv, report.per_sequence_csv(
        {d: r.per_sequence for d, r in results.items()}))
    write_text_atomic(paths.over_time_csv, report.error_over_time_csv(
        {d: r.rows for d, r in results.items()}, sequences))
    with atomic_output(paths.plots, directory=True) as tmp:
        for dataset, result in results.items():
            _write_plots(result, tmp / dataset, sequences[dataset], faces, overlay_size,
                         overlay_frames)
    return sequences


def pooled_rows(results: Mapping[str, EvaluationResult]) -> dict[str, np.ndarray]:
    """Every dataset's per-frame rows in one table, with a `dataset` column."""
    tables = [{"dataset": np.full(len(r.rows["model"]), d, object), **r.rows}
              for d, r in results.items()]
    names = [n for n in tables[0] if all(n in t for t in tables)]
    return {n: np.concatenate([t[n] for t in tables]) for n in names}


def _write_plots(result: EvaluationResult, out: Path, sequences: list[str], faces: np.ndarray,
                 overlay_size: int, overlay_frames: int) -> None:
    out.mkdir()
    (out / "per_sequence.png").write_bytes(report.per_sequence_png(result.per_sequence))
    (out / "error_over_time.png").write_bytes(
        report.error_over_time_png(result.rows, sequences, result.models))
    if "yaw" in result.rows:
        unsmoothed = [m for m in result.models if not m.endswith(SMOOTH_SUFFIX)]
        (out / "yaw_error.png").write_bytes(report.yaw_histogram_png(result.rows, unsmoothed))
    if result.overlay_clips:
        (out / "overlays").mkdir()
    for clip in result.overlay_clips:
        image = ov.render_overlay(clip, faces, overlay_size, overlay_frames)
        (out / "overlays" / f"{clip.key}.png").write_bytes(ov.png_bytes(image))


def evaluate(cfg: EvaluateConfig, paths: EvaluatePaths, progress: bool = True
             ) -> EvaluationRun:
    """The `evaluate` stage: load models and body, score every dataset, write every output."""
    assets = load_body_assets(paths.body)
    body = assets.body
    specs = dataset_specs(cfg, paths.shards)
    sources = {spec.source: source_dir(paths.shards, spec.source) for spec in specs.values()}
    manifests = {name: read_manifest(where) for name, where in sources.items()}
    lengths = {clip_length(manifests[n], cfg.split, w / "manifest.parquet")
               for n, w in sources.items()}
    if len(lengths) != 1:
        raise DataError(paths.shards, f"sources with clips of different lengths "
                        f"{sorted(lengths)}: one model reads one clip length", field="num_frames")
    try:
        device = resolve_device(cfg.device)
    except ValueError as e:
        raise DataError("evaluate", str(e), field="device") from e
    models = load_models(cfg, sources, paths.body, lengths.pop(), device)
    baselines = {name: constant_predictor(mean_pose_vertices(where, cfg.baseline_split, body))
                 for name, where in sources.items()} if cfg.baseline else {}
    results, notes = {}, {}
    for dataset, spec in specs.items():
        where = sources[spec.source]
        predictors = {**models, **({BASELINE_NAME: baselines[spec.source]} if baselines else {})}
        manifest = camera_clips(manifests[spec.source], spec.camera, where / "manifest.parquet")
        overlay_keys = ov.select_overlay_keys(manifest, cfg.split, cfg.overlays) if models \
            else []
        collector = ov.OverlayCollector(overlay_keys)
        result = evaluate_predictors(
            predictors, where, cfg.split, body, camera=spec.camera, merge=cfg.merge,
            smoothed=cfg.smoothed_models(), sigma=cfg.smoothing.sigma,
            batch_size=cfg.batch_size, num_workers=cfg.num_workers, observers=[collector],
            body_model_id=assets.body_model_id, part_labels=body.part_labels.cpu().numpy(),
            progress=progress)
        result.overlay_clips = collector.ordered()
        results[dataset] = result
        notes[dataset] = {"source": spec.source, "camera": spec.camera}
        if mesh_is_pseudo(where):
            notes[dataset]["mpvpe"] = report.PSEUDO_NOTE
    first = next(iter(results.values()))
    primary = first.models[0] if first.models else None
    faces = np.asarray(assets.hierarchy.faces[0], np.int64)        # the full mesh
    write_outputs(results, paths, faces, primary, cfg.worst_sequences, cfg.overlay_size,
                  cfg.overlay_frames, notes)
    return EvaluationRun(results, notes)
