"""Draws docs/img/results.png, the README's picture, from the committed metrics of the default run
(metrics/train/stdformer_curve.csv, metrics/train/stdformer.json, metrics/eval_per_sequence.csv).

    python docs/readme_figure.py        # after `dvc repro` changed those files
"""

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed; the same bytes on any machine with the pinned build
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "img" / "results.png"
# (curve column, label): validation per source of the mix
VAL_METRICS = (("val/3dpw/mpjpe", "3DPW MPJPE"), ("val/3dpw/pa_mpjpe", "3DPW PA-MPJPE"),
               ("val/h36m/mpjpe", "Human3.6M MPJPE"), ("val/h36m/pa_mpjpe", "Human3.6M PA-MPJPE"))
TEST_DATASET = "3dpw"      # the registry's dataset: the right panel's sequences


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def validation_points(curve: list[dict[str, str]]) -> dict[str, tuple[list[int], list[float]]]:
    """{metric: (steps, values)} of the rows where training validated (the others are blank)."""
    points = {}
    for key, _ in VAL_METRICS:
        rows = [r for r in curve if r[key]]
        points[key] = ([int(r["step"]) for r in rows], [float(r[key]) for r in rows])
    return points


def per_sequence_mpjpe(rows: list[dict[str, str]], model: str) -> dict[str, float]:
    return {r["sequence"].removeprefix(f"{TEST_DATASET}/"): float(r["mpjpe"]) for r in rows
            if r["model"] == model and r["dataset"] == TEST_DATASET}


def draw(curve, train_summary, per_sequence) -> plt.Figure:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=100,
                                      gridspec_kw={"width_ratios": [1, 1.3]})
    colours = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    for (key, label), colour in zip(VAL_METRICS, colours):
        steps, values = validation_points(curve)[key]
        left.plot(steps, values, "o-", color=colour, label=f"stdformer {label}")
        left.axhline(train_summary[f"baseline_{key}"], color=colour, ls="--", lw=1)
    left.set(title="Validation error while training (dashed: mean pose)", xlabel="training step",
             ylabel="mm")
    left.legend(fontsize=8, loc="lower right", bbox_to_anchor=(1, 0.18))  # between the lines

    model, baseline = per_sequence_mpjpe(per_sequence, "stdformer"), \
        per_sequence_mpjpe(per_sequence, "mean_pose")
    order = sorted(model, key=model.get)
    y = range(len(order))
    right.barh([i + 0.2 for i in y], [baseline[s] for s in order], height=0.4, color="0.75",
               label="mean pose")
    right.barh([i - 0.2 for i in y], [model[s] for s in order], height=0.4, color="tab:blue",
               label="stdformer")
    right.set_yticks(list(y), [s.removeprefix("synth_") for s in order], fontsize=6)
    right.set(title=f"3DPW-layout test MPJPE per sequence ({len(order)} sequences)", xlabel="mm",
              xlim=(0, 1.3 * max(baseline.values())))  # room for the legend beside short bars
    right.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def main() -> None:
    curve = read_rows(REPO / "metrics" / "train" / "stdformer_curve.csv")
    train_summary = json.loads((REPO / "metrics" / "train" / "stdformer.json").read_text())
    per_sequence = read_rows(REPO / "metrics" / "eval_per_sequence.csv")
    fig = draw(curve, train_summary, per_sequence)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_name(f".{OUT.name}.tmp")
    fig.savefig(tmp, format="png", metadata={"Software": None})  # no version stamp in the bytes
    tmp.replace(OUT)
    print(f"wrote {OUT.relative_to(REPO)} ({OUT.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
