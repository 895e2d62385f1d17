"""The training run: AdamW + warm-up/cosine schedule, gradient clipping, bf16 autocast on GPU,
optional torch.compile, DDP under torchrun, exact resume from checkpoints, MLflow + DVC logs.

Exactness: on CPU a run killed at any point and resumed ends with the same weights, bit for bit,
as an uninterrupted one. What makes that work: the data order and augmentation are pure
functions of (seed, epoch, ...) (`stdformer.train.data`), so a resume replays the plan from the
saved (epoch, batches consumed); every RNG state is saved and restored; nothing else draws from
the global RNGs (loaders get their own generator, validation runs in eval mode).
"""

from __future__ import annotations

import dataclasses
import math
import random
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from stdformer import numerics
from stdformer.data.shard_index import ShardIndex, crop_protocol, index_shards, iter_targets
from stdformer.data.sources import source_dir, source_names
from stdformer.devices import resolve_device
from stdformer.io import DataError, file_digest
from stdformer.losses import LossConfig, MeshInfo
from stdformer.model.assets import BodyAssets, load_body_assets
from stdformer.model.inputs import InputProtocol
from stdformer.model.model_file import write_model_file
from stdformer.model.pretrained import load_init_checkpoint
from stdformer.model.stdformer import ModelConfig, STDFormer, count_parameters
from stdformer.progress import progress as progress_bar
from stdformer.scoring import BASELINE_NAME, MERGE_MODES
from stdformer.scoring.frames import mean_pose
from stdformer.scoring.predict import constant_predictor, model_predictor
from stdformer.scoring.run import EvaluationResult, evaluate_predictors
from stdformer.scoring.track_scores import summarize_rows
from stdformer.tracking import MlflowTracker, check_tracking, write_curve, write_metrics
from stdformer.train import checkpoint as ckpt_io
from stdformer.train.config import (
    TrainConfig,
    config_hash,
    resolve_precision,
    run_identity,
)
from stdformer.train.data import make_loader
from stdformer.train.distributed import (
    Dist,
    all_reduce_sum,
    barrier,
    distributed_env,
    gather_objects,
    setup_distributed,
    sync_buffers,
    wrap_ddp,
)
from stdformer.train.mix import MixStream, mix_weights
from stdformer.train.steps import batch_loss, loss_config_at, lr_factor, optimizer_step


@dataclass(frozen=True)
class TrainPaths:
    shards: Path                  # sources: <shards>/<source>/<split>/shard-*.tar (sources.py)
    body: Path                    # body model directory
    model: Path                   # final model file
    checkpoints: Path             # the variant's checkpoint root (one directory per config)
    metrics: Path                 # final metrics (json)
    curve: Path                   # learning curve (csv, for `dvc plots`)


@dataclass(frozen=True)
class Tracking:
    uri: str | None               # None: no MLflow (tests); else checked before training
    artifact_root: Path = Path("mlartifacts")
    run_name: str | None = None


@dataclass
class TrainResult:
    metrics: dict[str, Any]       # final metrics (the content of metrics/train.json)
    model: nn.Module              # the trained model on its device (this rank's replica)
    is_main: bool = True          # rank 0 (the one that wrote the files)


@dataclass
class RunState:
    """What a checkpoint restores besides model, optimizer, scheduler and RNG."""

    step: int = 0                 # batches consumed: the data position (train/mix.py)
    epoch: int = 0                # epoch and batches consumed of the last batch's source
    batch_in_epoch: int = 0       #   (for the log; resuming derives everything from `step`)
    curve: list[dict[str, Any]] = field(default_factory=list)
    run_id: str | None = None     # MLflow run to continue


@dataclass
class Session:
    cfg: TrainConfig
    model_cfg: ModelConfig
    loss_cfg: LossConfig
    paths: TrainPaths
    d: Dist
    autocast_dtype: torch.dtype | None
    assets: BodyAssets            # CPU copy (metrics, baseline)
    device_assets: BodyAssets
    mesh_info: MeshInfo
    train_sources: dict[str, ShardIndex]   # the sources read (mix weight > 0), mix order
    weights: dict[str, float]     # normalised mix weights of those sources
    val_dirs: dict[str, Path]     # source -> preprocess output, validated per source
    identity: dict[str, Any]      # run_identity: what the resume key hashes
    run_hash: str
    run_dir: Path                 # this configuration's checkpoint directory
    numerics: dict[str, Any]      # the numeric environment in effect (numerics.in_effect)
    raw_model: STDFormer
    model: nn.Module              # raw_model, maybe DDP-wrapped and compiled
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    state: RunState
    inputs: InputProtocol         # how the training clips were cropped (into the model file)
    tracker: MlflowTracker | None = None


def build_model(model_cfg: ModelConfig, assets: BodyAssets, say=None) -> STDFormer:
    """The model on the body's hierarchy, with the body's template when model.template_head,
    initialised from model.init_checkpoint when set (its load report goes to `say`)."""
    model = STDFormer.from_hierarchy(model_cfg, assets.hierarchy)
    if model_cfg.template_head:
        model.set_template(*assets.camera_template())
    if model_cfg.init_checkpoint is not None:
        report = load_init_checkpoint(model, model_cfg.init_checkpoint, assets.meta,
                                      assets.body_model_id, assets.body_dir)
        for line in report.lines():
            (say or print)(line)
    return model


def _digest_or_none(path: str | None) -> str | None:
    """sha256 of a file the run starts from (a replaced checkpoint must not resume a run)."""
    return file_digest(path) if path is not None and Path(path).is_file() else None


def _say(d: Dist, message: str) -> None:
    if d.main:
        tqdm.write(f"train: {message}", file=sys.stderr)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------
# Entry point


def train(cfg: TrainConfig, model_cfg: ModelConfig, loss_cfg: LossConfig, paths: TrainPaths,
          tracking: Tracking, progress: bool = True) -> TrainResult:
    """Train (or resume), validate, write the model/metrics/curve files. Every rank returns the
    final metrics and its model replica; only rank 0 writes files and talks to MLflow."""
    rank, _, local_rank = distributed_env()
    # Before torch runs anything here (see stdformer/numerics.py); the stage pins even earlier.
    effect = numerics.apply(cfg.threads, resolve_device(cfg.device, local_rank).type)
    if rank == 0 and tracking.uri is not None:
        check_tracking(tracking.uri)          # before anything expensive: fail fast
    d, created_group = setup_distributed(cfg)
    try:
        s = _open_session(cfg, model_cfg, loss_cfg, paths, tracking, d, effect)
        try:
            _fit(s, progress)
            return _finish(s)
        except BaseException as e:
            if s.tracker is not None:
                s.tracker.finish("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
            raise
    finally:
        if created_group:
            dist.destroy_process_group()


def _open_session(cfg: TrainConfig, model_cfg: ModelConfig, loss_cfg: LossConfig,
                  paths: TrainPaths, tracking: Tracking, d: Dist,
                  effect: dict[str, Any]) -> Session:
    """Data index, model, optimizer; state from a matching checkpoint or fresh; MLflow run."""
    autocast_dtype = resolve_precision(cfg, d.device)
    assets = load_body_assets(paths.body)
    weights = mix_weights(cfg.mix, list(cfg.mix) or source_names(paths.shards))
    val_dirs = {name: source_dir(paths.shards, name) for name in weights}   # weight 0: unread
    train_sources = {name: index_shards(where, "train") for name, where in val_dirs.items()}
    for where in val_dirs.values():
        index_shards(where, "validation")     # checked before training, not at the first val
    inputs = InputProtocol(**shared_crop_protocol(val_dirs), clip_len=model_cfg.clip_len)
    identity = run_identity(cfg, model_cfg, loss_cfg, world_size=d.world_size,
                            body_model_id=assets.body_model_id,
                            train_data={n: i.fingerprint() for n, i in train_sources.items()},
                            init_checkpoint=_digest_or_none(model_cfg.init_checkpoint))
    run_hash = config_hash(identity)
    run_dir = ckpt_io.config_dir(paths.checkpoints, run_hash)

    _seed_everything(cfg.seed)                # same initial weights on every rank
    raw_model = build_model(model_cfg, assets, say=lambda line: _say(d, line)).to(d.device)
    if d.device.type == "cuda" and cfg.channels_last:
        raw_model = raw_model.to(memory_format=torch.channels_last)
    _seed_everything(cfg.seed + 1 + d.rank)   # then per-rank streams (dropout)
    optimizer = torch.optim.AdamW(raw_model.parameters(), lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))

    state = RunState()
    resumed = _resume_or_start(cfg, paths.checkpoints, run_hash, d)
    if resumed is not None:
        raw_model.load_state_dict(resumed.model)
        optimizer.load_state_dict(resumed.optimizer)
        scheduler.load_state_dict(resumed.scheduler)
        ckpt_io.restore_rng(resumed.rng[d.rank])
        state = RunState(resumed.step, resumed.epoch, resumed.batches_in_epoch,
                         list(resumed.curve), resumed.run_id)
        _say(d, f"resuming from {resumed.path} (step {state.step}, epoch {state.epoch}, "
                f"batch {state.batch_in_epoch})")

    model = wrap_ddp(raw_model, d)
    if cfg.compile:
        model = torch.compile(model)
    device_assets = assets.to(d.device)
    s = Session(cfg, model_cfg, loss_cfg, paths, d, autocast_dtype, assets, device_assets,
                device_assets.mesh_info, train_sources, weights, val_dirs, identity, run_hash,
                run_dir,
                effect, raw_model, model, optimizer, scheduler, state, inputs)
    if d.main and tracking.uri is not None:
        s.tracker = MlflowTracker(
            tracking.uri, cfg.experiment, tracking.artifact_root, run_id=state.run_id,
            run_name=tracking.run_name, params={
                "train": dataclasses.asdict(cfg), "model": dataclasses.asdict(model_cfg),
                "loss": dataclasses.asdict(loss_cfg), "world_size": d.world_size,
                "config_hash": run_hash, "body_model_id": assets.body_model_id,
                "parameters": count_parameters(raw_model), "numerics": effect})
        state.run_id = s.tracker.run_id
    mix = ", ".join(f"{n} {w:.0%} ({train_sources[n].num_clips} train clips)"
                    for n, w in weights.items())
    _say(d, f"{count_parameters(raw_model):,} parameters; mix {mix}; "
            f"{d.world_size} rank(s) on {d.device}, "
            f"{'bf16 autocast' if autocast_dtype else 'fp32'}; {effect['threads']} thread(s), "
            f"ATen {effect['aten_cpu_capability']}, oneDNN <= {effect['onednn_max_cpu_isa']}, "
            f"MKL_CBWR {effect['mkl_cbwr']}")
    if d.device.type == "cpu" and numerics.pinned_too_late(effect):
        _say(d, "warning: torch ran before the numeric environment was pinned (ATen uses "
                f"{effect['aten_cpu_capability']}): the weights may differ on other CPUs; call "
                "stdformer.numerics.pin_environment() first, as stages/__init__.py does")
    return s


def shared_crop_protocol(sources: Mapping[str, Path]) -> dict[str, Any]:
    """The crop protocol every source was preprocessed with (one model has one input); a
    DataError naming two sources that differ."""
    protocols = {name: crop_protocol(where) for name, where in sources.items()}
    (first, want), *others = protocols.items()
    for name, got in others:
        if got != want:
            raise DataError(sources[name] / "report.json", f"cropped otherwise than source "
                            f"{first!r} ({got} vs {want}): preprocess every source with the same "
                            "crop_size, crop_scale and context", field="settings")
    return want


def _resume_or_start(cfg: TrainConfig, root: Path, run_hash: str, d: Dist
                     ) -> ckpt_io.TrainingCheckpoint | None:
    """The newest checkpoint of this configuration's directory under `root` (resume: auto),
    else None. Other configurations' directories are never touched: the log says they are
    there and how to remove them. `resume: never` restarts this configuration (its old steps
    are removed, so a later resume cannot pick one of them)."""
    run_dir = ckpt_io.config_dir(root, run_hash)
    found, notes = (ckpt_io.find_resumable(run_dir, run_hash) if cfg.resume == "auto"
                    else (None, []))
    for note in notes:
        _say(d, note)
    barrier(d)                                # everyone has read before rank 0 deletes
    if found is not None or not d.main:
        return found
    if cfg.resume == "never" and ckpt_io.list_checkpoints(run_dir):
        removed = ckpt_io.clear_checkpoints(run_dir)
        _say(d, f"resume: never; removed {len(removed)} checkpoint(s) of this configuration "
                f"in {run_dir}")
    others = [c for c in ckpt_io.list_configs(root) if c.directory != run_dir and c.steps]
    message = f"starting fresh in {run_dir}"
    if others:
        size = sum(c.bytes for c in others) / 1e6
        message += (f"; kept {len(others)} other configuration(s) in {root} ({size:.1f} MB): "
                    f"`stdformer checkpoint list {root}` shows them, "
                    f"`stdformer checkpoint prune {root}` removes all but the newest")
    _say(d, message)
    return found


# --------------------------------------------------------------------------------------------
# Training steps


def _fit(s: Session, progress: bool) -> None:
    cfg, d, state = s.cfg, s.d, s.state
    if state.step >= cfg.steps:
        return
    stream = MixStream(s.train_sources, list(s.weights.values()), seed=cfg.seed,
                       batch_size=cfg.batch_size, rank=d.rank, world_size=d.world_size,
                       shuffle_window=cfg.shuffle_buffer, augment=cfg.augment,
                       perms=s.assets.perms, start_step=state.step, end_step=cfg.steps)
    stream.positions()  # a source too small for the batch size fails here, not in a worker
    batches = iter(make_loader(stream, cfg.num_workers, cfg.seed,
                               pin_memory=d.device.type == "cuda"))
    bar = progress_bar(total=cfg.steps, initial=state.step, desc="train", unit="step",
                       disable=not (progress and d.main))
    parameters = list(s.raw_model.parameters())
    clips_per_s, tick = float("nan"), time.perf_counter()
    s.raw_model.train()
    try:
        while state.step < cfg.steps:
            batch = next(batches)
            if batch["frames"].shape[1] != s.model_cfg.clip_len:
                raise DataError(s.paths.shards, f"clips hold {batch['frames'].shape[1]} frames "
                                f"but model.clip_len is {s.model_cfg.clip_len}",
                                field="clip_len")
            loss, terms = batch_loss(s.model, batch, s.device_assets, s.mesh_info,
                                     loss_config_at(state.step, cfg, s.loss_cfg), d.device,
                                     s.autocast_dtype)
            grad_norm = optimizer_step(loss, parameters, s.optimizer, s.scheduler,
                                       cfg.grad_clip)
            assert int(batch["step"]) == state.step, "the stream lost its place"
            state.step += 1
            state.epoch, state.batch_in_epoch = int(batch["epoch"]), int(batch["batch"]) + 1

            now = time.perf_counter()
            rate = cfg.batch_size * d.world_size / max(now - tick, 1e-9)
            clips_per_s = rate if math.isnan(clips_per_s) else 0.9 * clips_per_s + 0.1 * rate
            tick = now
            bar.set_postfix(loss=f"{terms['total']:.3f}", clips_s=f"{clips_per_s:.2f}",
                            refresh=False)
            bar.update(1)
            _log_step(s, terms, grad_norm, clips_per_s)
            if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
                _save_checkpoint(s)
    finally:
        bar.close()
        del batches                           # stops loader workers


def _log_step(s: Session, terms: Mapping[str, float], grad_norm: float,
              clips_per_s: float) -> None:
    """Learning-curve row (+ MLflow) on log steps; validation on validation steps (the last
    step's validation is the final one, on the whole split)."""
    cfg, state = s.cfg, s.state
    row: dict[str, Any] = {}
    if state.step % cfg.log_every == 0 or state.step == cfg.steps:
        names = sorted(terms)
        values = torch.tensor([terms[n] for n in names], dtype=torch.float64)
        values = all_reduce_sum(values, s.d) / s.d.world_size
        row = {f"loss/{n}": float(v) for n, v in zip(names, values)}
        row["lr"] = s.scheduler.get_last_lr()[0]
        row["epoch"] = state.epoch
        if s.tracker is not None:
            s.tracker.log_metrics(state.step, {**row, "grad_norm": grad_norm,
                                               "clips_per_s": clips_per_s})
    if cfg.val_every and state.step % cfg.val_every == 0 and state.step != cfg.steps:
        val = _validate(s)
        row.update(val)
        if s.tracker is not None:
            s.tracker.log_metrics(state.step, val)
        _say(s.d, f"step {state.step}: " + ", ".join(f"{k} {v:.1f}" for k, v in val.items()
                                                     if not k.endswith("frames")))
    if row:
        state.curve.append({"step": state.step, **row})


VAL_METRICS = ("mpjpe", "pa_mpjpe", "mpvpe", "accel", "frames")


def pooled_summary(results: Mapping[str, EvaluationResult], row: str) -> dict[str, float]:
    """`row`'s summary over the frames of every source together (each frame counts once, as
    if the sources were one split)."""
    rows = [r.rows for r in results.values()]
    pooled = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    return summarize_rows(pooled, pooled["model"] == row)


def validation_metrics(results: Mapping[str, EvaluationResult], row: str, prefix: str
                       ) -> dict[str, float]:
    """`<prefix>_<metric>` over all sources' frames together, and `<prefix>/<source>/<metric>`
    per source (metrics/train/<variant>.json, the curve csv, MLflow)."""
    metrics = {f"{prefix}_{m}": pooled_summary(results, row)[m] for m in VAL_METRICS}
    for name, result in results.items():
        metrics |= {f"{prefix}/{name}/{m}": result.overall[row][m] for m in VAL_METRICS}
    return metrics


def _validate(s: Session, baselines: Mapping[str, torch.Tensor] | None = None
              ) -> dict[str, float]:
    """Validation metrics exactly as `evaluate` computes them on its split, per source and over
    all sources' frames: every clip predicted in fp32, overlapping windows merged into one
    prediction per frame (`evaluate.merge`'s default, mean), each valid frame counted once.
    With `baselines` (source -> its mean training mesh (V, 3)), the mean-pose rows too. Every
    rank scores the whole split (the same numbers, no waiting at a collective); the global RNG
    states are left as they were, so validating more or less often does not change the
    weights."""
    sync_buffers(s.raw_model, s.d)
    rng = ckpt_io.capture_rng()
    results: dict[str, EvaluationResult] = {}
    try:
        for name, where in s.val_dirs.items():
            predictors = {"model": model_predictor(s.raw_model, s.d.device)}
            if baselines is not None:
                predictors[BASELINE_NAME] = constant_predictor(baselines[name])
            results[name] = evaluate_predictors(predictors, where, "validation", s.assets.body,
                                                merge=MERGE_MODES[0],
                                                batch_size=s.cfg.batch_size,
                                                num_workers=s.cfg.num_workers)
    finally:
        s.raw_model.train()
        ckpt_io.restore_rng(rng)
    metrics = validation_metrics(results, "model", "val")
    if baselines is not None:
        metrics |= {k: v for k, v in validation_metrics(results, BASELINE_NAME,
                                                        "baseline_val").items()
                    if not k.endswith("frames")}
    return metrics


def _save_checkpoint(s: Session) -> None:
    rng = gather_objects(ckpt_io.capture_rng(), s.d)     # every rank's streams
    if s.d.main:
        st = s.state
        ckpt_io.save_checkpoint(s.run_dir, ckpt_io.TrainingCheckpoint(
            step=st.step, epoch=st.epoch, batches_in_epoch=st.batch_in_epoch,
            config_hash=s.run_hash, model=s.raw_model.state_dict(),
            optimizer=s.optimizer.state_dict(), scheduler=s.scheduler.state_dict(), rng=rng,
            curve=list(st.curve), run_id=st.run_id), keep=s.cfg.keep_checkpoints,
            identity=s.identity)
    barrier(s.d)


# --------------------------------------------------------------------------------------------
# Final validation, baseline and outputs


def _finish(s: Session) -> TrainResult:
    """Validate on the whole split with the mean-pose baseline (every rank); rank 0 writes the
    model, metrics and curve files."""
    d, state = s.d, s.state
    names = ("pose", "betas", "joints_h36m", "valid")
    baselines, train_frames = {}, 0
    for name, index in s.train_sources.items():       # each source's own mean pose
        baselines[name], frames = mean_pose(iter_targets(index, names), s.assets.body)
        train_frames += frames
    final = _validate(s, baselines=baselines)
    barrier(d)
    metrics: dict[str, Any] = {"steps": state.step, **final,
                               "baseline_train_frames": train_frames}
    losses = [row["loss/total"] for row in state.curve if "loss/total" in row]
    if losses:
        metrics["train_loss"] = losses[-1]
    if not d.main:
        return TrainResult(metrics, s.raw_model, False)

    curve = state.curve
    row = {k: v for k, v in final.items() if k.startswith("val")}
    if curve and curve[-1]["step"] == state.step:
        curve[-1].update(row)
    else:
        curve.append({"step": state.step, **row})
    write_model_file(s.paths.model, s.raw_model, s.model_cfg, s.assets.body_model_id,
                     dataclasses.asdict(s.cfg), dataclasses.asdict(s.loss_cfg), metrics,
                     s.inputs, s.numerics)
    write_metrics(s.paths.metrics, metrics)
    write_curve(s.paths.curve, curve)
    if s.tracker is not None:
        s.tracker.log_metrics(state.step, {k: v for k, v in metrics.items()
                                           if isinstance(v, (int, float))})
        for path in (s.paths.metrics, s.paths.curve):
            s.tracker.log_artifact(path)
        s.tracker.finish()
    m = metrics
    _say(d, f"validation ({m['val_frames']} frames) MPJPE {m['val_mpjpe']:.1f} mm "
            f"(PA {m['val_pa_mpjpe']:.1f}, MPVPE {m['val_mpvpe']:.1f}); mean-pose baseline "
            f"MPJPE {m['baseline_val_mpjpe']:.1f} mm (PA {m['baseline_val_pa_mpjpe']:.1f}, "
            f"MPVPE {m['baseline_val_mpvpe']:.1f})")
    return TrainResult(metrics, s.raw_model, True)
