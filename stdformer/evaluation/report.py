"""Evaluation outputs: metrics json, per-frame parquet, csvs for DVC plots, matplotlib charts and
the markdown table printed by the stage. Everything is built as bytes/text here (deterministic:
sorted rows, fixed formats, no timestamps in PNGs) and written atomically by the caller."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stdformer.scoring.diagnostics import DIAGNOSTICS
from stdformer.scoring.track_scores import METRICS

PER_FRAME_SCHEMA = pa.schema([
    ("dataset", pa.string()), ("model", pa.string()), ("sequence", pa.string()), ("actor", pa.int32()),
    ("frame", pa.int32()), ("image_frame", pa.int32()),
    ("mpjpe", pa.float64()), ("pa_mpjpe", pa.float64()), ("mpvpe", pa.float64()),
    ("accel", pa.float64()),          # null where the frame carries no acceleration term
    *((name, pa.float64()) for name in DIAGNOSTICS),   # yaw (deg), ratios, part errors (mm)
])
PER_SEQUENCE_COLUMNS = ("dataset", "sequence", "model", *METRICS, "frames")
OVER_TIME_COLUMNS = ("dataset", "sequence", "actor", "model", "frame", "mpjpe", "accel")
PSEUDO_MPVPE = "mpvpe_pseudo"   # MPVPE against fitted meshes (pseudo ground truth), e.g. H36M
PSEUDO_NOTE = ("MPVPE against SMPL fits to the mocap (pseudo ground truth), not a measured "
               "mesh")
UNITS = {"mpjpe": "mm", "pa_mpjpe": "mm", "mpvpe": "mm", "accel": "mm/frame^2"}
TITLES = {"mpjpe": "MPJPE", "pa_mpjpe": "PA-MPJPE", "mpvpe": "MPVPE", "accel": "Accel"}


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _round(value, digits: int = 4):
    value = _finite_or_none(value)
    return round(value, digits) if isinstance(value, float) else value


# --------------------------------------------------------------------------------------------
# Metrics json, parquet, csv


def eval_json(tables: Mapping[str, Mapping[str, Mapping]],
              notes: Mapping[str, Mapping] | None = None) -> str:
    """The overall results per dataset, {"datasets": {dataset: {model: {mpjpe, pa_mpjpe, mpvpe,
    accel, yaw_median, frames}}}, "notes": {dataset: {source, camera, mpvpe}}}, as JSON text
    (what the registry reads); NaN -> null. Per-sequence results are in the per-sequence csv,
    per-frame ones in the parquet file."""
    doc = {"datasets": {d: {m: {k: _round(v, 2) for k, v in s.items()} for m, s in t.items()}
                        for d, t in tables.items()},
           "notes": dict(notes or {})}
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


HEADLINE = ("mpjpe", "pa_mpjpe", "mpvpe", "accel", "yaw_median")


def model_metrics_json(summary: Mapping[str, float], pseudo_mesh: bool = False) -> str:
    """One model's headline numbers on one dataset, {mpjpe, pa_mpjpe, mpvpe, accel,
    yaw_median}: one file per (dataset, model), so `dvc metrics show` lists them as rows with
    these columns. With `pseudo_mesh` (the dataset's meshes are fits), MPVPE is named
    PSEUDO_MPVPE: its own column, never compared with a measured one."""
    doc = {(PSEUDO_MPVPE if pseudo_mesh and k == "mpvpe" else k): _round(summary[k], 2)
           for k in HEADLINE if k in summary}
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def diagnostics_json(diagnostics: Mapping[str, Mapping[str, Mapping]]) -> str:
    """{dataset: {model: {yaw_median, yaw_mean, yaw_over_90, height/width/depth_ratio,
    part_*}}}: why the meshes are wrong (diagnostics.py); NaN -> null."""
    doc = {d: {m: {k: _round(v) for k, v in s.items()} for m, s in t.items()}
           for d, t in diagnostics.items()}
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def per_frame_parquet(rows: Mapping[str, np.ndarray]) -> bytes:
    """The per-frame rows (FrameTable.columns()) as parquet bytes (PER_FRAME_SCHEMA); a
    diagnostic the rows lack is null."""
    arrays = {}
    for f in PER_FRAME_SCHEMA:
        values = rows.get(f.name, np.full(len(rows["model"]), np.nan))
        if pa.types.is_floating(f.type):
            values = np.asarray(values, np.float64)
            arrays[f.name] = pa.array(values, type=f.type, mask=np.isnan(values))
        elif pa.types.is_string(f.type):
            arrays[f.name] = pa.array([str(v) for v in values], type=f.type)
        else:
            arrays[f.name] = pa.array(np.asarray(values), type=f.type)
    table = pa.table(arrays, schema=PER_FRAME_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", write_statistics=False)
    return sink.getvalue().to_pybytes()


def _csv_text(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else (f"{v:.4f}" if isinstance(v, float) else v)
                         for v in (_finite_or_none(x) for x in row)])
    return buf.getvalue()


def per_sequence_csv(per_sequence: Mapping[str, Mapping[str, Mapping[str, Mapping]]]) -> str:
    """Long format, one row per (dataset, sequence, model): dataset, sequence, model, mpjpe,
    pa_mpjpe, mpvpe, accel, frames (datasets in their order, then sorted by sequence, then the
    model order). `per_sequence`: {dataset: {model: {sequence: summary}}}. A sequence is named
    `<dataset>/<sequence>`, so that the chart keeps e.g. one sequence's P1 and P2 rows apart."""
    rows = []
    for dataset, table in per_sequence.items():
        sequences = sorted({seq for seqs in table.values() for seq in seqs})
        rows += [[dataset, f"{dataset}/{seq}", model, *(float(s[m]) for m in METRICS),
                  int(s["frames"])]
                 for seq in sequences for model, seqs in table.items()
                 if (s := seqs.get(seq)) is not None]
    return _csv_text(PER_SEQUENCE_COLUMNS, rows)


def worst_sequences(per_sequence: Mapping[str, Mapping[str, Mapping]], model: str, count: int
                    ) -> list[str]:
    """The `count` sequences with the highest mean MPJPE of `model` (ties: by name)."""
    seqs = per_sequence.get(model, {})
    ranked = sorted(seqs, key=lambda s: (-np.nan_to_num(seqs[s]["mpjpe"], nan=-np.inf), s))
    return ranked[:count]


def over_time_selection(rows: Mapping[str, np.ndarray], sequences: Sequence[str]) -> np.ndarray:
    return np.isin(rows["sequence"].astype(str), list(sequences))


def error_over_time_csv(rows: Mapping[str, Mapping[str, np.ndarray]],
                        sequences: Mapping[str, Sequence[str]]) -> str:
    """Long format for the chosen sequences of each dataset ({dataset: per-frame rows},
    {dataset: sequences}): dataset, sequence, actor, model, frame, mpjpe, accel (accel empty
    where the frame has no term; sequences named `<dataset>/<sequence>` as in per_sequence_csv);
    rows in the per-frame order."""
    out = []
    for dataset, table in rows.items():
        pick = np.flatnonzero(over_time_selection(table, sequences.get(dataset, ())))
        out += [[dataset, f"{dataset}/{table['sequence'][i]}", int(table["actor"][i]),
                 str(table["model"][i]), int(table["frame"][i]), float(table["mpjpe"][i]),
                 float(table["accel"][i])] for i in pick]
    return _csv_text(OVER_TIME_COLUMNS, out)


def markdown_table(tables: Mapping[str, Mapping[str, Mapping]],
                   pseudo_mesh: Sequence[str] = ()) -> str:
    """| dataset | model | MPJPE | PA-MPJPE | MPVPE | Accel | frames | (the published tables'
    units), one row per (dataset, model); MPVPE of the `pseudo_mesh` datasets is starred and
    explained under the table."""
    head = ["dataset", "model", *(f"{TITLES[m]} ({UNITS[m]})" for m in METRICS), "frames"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for dataset, overall in tables.items():
        for model, s in overall.items():
            cells = [f"{s[m]:.1f}" if math.isfinite(s[m]) else "-" for m in METRICS]
            if dataset in pseudo_mesh:
                cells[METRICS.index("mpvpe")] += "*"
            lines.append("| " + " | ".join([dataset, model, *cells, str(int(s["frames"]))])
                         + " |")
    if any(d in tables for d in pseudo_mesh):
        lines.append(f"\n\\* {PSEUDO_NOTE}.")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Charts (matplotlib, Agg)


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def per_sequence_png(per_sequence: Mapping[str, Mapping[str, Mapping]],
                     metrics: Sequence[str] = ("mpjpe", "accel")) -> bytes:
    """Grouped horizontal bars: one panel per metric side by side, sequences down the y axis
    (the figure grows with their number), one bar per model."""
    plt = _pyplot()
    models = list(per_sequence)
    sequences = sorted({seq for seqs in per_sequence.values() for seq in seqs})
    height = max(3.0, 0.09 * len(sequences) * max(len(models), 1) + 1.2)
    fig, axes = plt.subplots(1, len(metrics), squeeze=False, sharey=True,
                             figsize=(4.5 * len(metrics) + 2.5, height))
    y = np.arange(len(sequences))
    width = 0.8 / max(len(models), 1)
    for ax, metric in zip(axes[0], metrics):
        for k, model in enumerate(models):
            values = [per_sequence[model].get(seq, {}).get(metric, np.nan) for seq in sequences]
            values = [np.nan if v is None else v for v in values]
            ax.barh(y + (k - (len(models) - 1) / 2) * width, values, width, label=model)
        ax.set_yticks(y, sequences, fontsize=7)
        ax.set_ylim(len(sequences) - 0.5, -0.5)                  # first sequence on top
        ax.set_xlabel(f"{TITLES[metric]} ({UNITS[metric]})")
        ax.set_title(f"{TITLES[metric]} per sequence (frame averages)", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    _legend_outside(fig, axes[0, 0])
    return _figure_png(fig)


def error_over_time_png(rows: Mapping[str, np.ndarray], sequences: Sequence[str],
                        models: Sequence[str], metric: str = "mpjpe") -> bytes:
    """One panel per (sequence, actor) of the chosen sequences, one line per model; invalid
    frames (no row) are gaps."""
    plt = _pyplot()
    pick = over_time_selection(rows, sequences)
    tracks = sorted({(str(s), int(a)) for s, a in zip(rows["sequence"][pick],
                                                       rows["actor"][pick])})
    fig, axes = plt.subplots(max(len(tracks), 1), 1, squeeze=False,
                             figsize=(8.0, 2.4 * max(len(tracks), 1)))
    for ax, (seq, actor) in zip(axes[:, 0], tracks):
        mine = pick & (rows["sequence"].astype(str) == seq) & (rows["actor"] == actor)
        for model in models:
            sel = mine & (rows["model"] == model)
            frames, values = rows["frame"][sel], rows[metric][sel]
            if not len(frames):
                continue
            full = np.full(int(frames.max()) + 1, np.nan)        # gaps where frames are missing
            full[frames] = values
            ax.plot(np.arange(len(full)), full, label=model, linewidth=1.0, marker=".",
                    markersize=3)                       # markers: isolated frames stay visible
        ax.set_title(f"{seq} / actor {actor}", fontsize=9)
        ax.set_ylabel(f"{TITLES[metric]} ({UNITS[metric]})", fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)   # frame numbers, never 2.5
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("frame")
    if tracks:
        _legend_outside(fig, axes[0, 0])
    else:
        fig.tight_layout()
    return _figure_png(fig)


def yaw_histogram_png(rows: Mapping[str, np.ndarray], models: Sequence[str],
                      bin_deg: float = 10.0) -> bytes:
    """Histogram of the per-frame yaw error (degrees, 0-180) of each model: the share of frames
    where the predicted body faces the right way (left) or the opposite way (right)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10.0, 3.6))
    bins = np.arange(0.0, 180.0 + bin_deg, bin_deg)
    for model in models:
        yaw = np.asarray(rows["yaw"], np.float64)[rows["model"] == model]
        yaw = yaw[np.isfinite(yaw)]
        if not len(yaw):
            continue
        ax.hist(yaw, bins=bins, weights=np.full(len(yaw), 100.0 / len(yaw)), histtype="step",
                linewidth=1.6, label=f"{model} (median {np.median(yaw):.0f} deg)")
    ax.set_xlim(0, 180)
    ax.set_xticks(np.arange(0, 181, 30))
    ax.set_xlabel("yaw error of the predicted body (degrees; 0 = facing the right way)")
    ax.set_ylabel("frames (%)")
    ax.set_title("Facing direction: predicted vs ground-truth left-right axis")
    ax.grid(alpha=0.3)
    _legend_outside(fig, ax, right=0.7)
    return _figure_png(fig)


def _legend_outside(fig, ax, right: float = 0.8) -> None:
    """One legend to the right of the plots (which end at `right`, a fraction of the figure
    width), so it covers no bar or line."""
    handles, labels = ax.get_legend_handles_labels()
    fig.tight_layout(rect=(0.0, 0.0, right, 1.0))
    if handles:
        fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(right, 0.98), fontsize=8,
                   frameon=False)
