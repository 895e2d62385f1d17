"""Preprocessing a (synthetic) 3DPW root into clip shards: targets, validity, determinism and
bad-input handling."""

import dataclasses
import json
import pickle
import shutil

import cv2
import numpy as np
import pytest
import torch
import webdataset as wds

from stdformer.body import BodyModel
from stdformer.config import from_dict
from stdformer.data import crops, executors, shards
from stdformer.data import manifest as mf
from stdformer.data.datasets import ThreeDPWDataset, stride_for
from stdformer.data.preprocess import preprocess
from stdformer.data.preprocess_config import PreprocessConfig, clip_starts
from stdformer.data.sequence_clips import SequenceTask, process_sequence
from stdformer.data.threedpw import iter_tracks
from stdformer.io import DataError, load_npz
from stdformer.safe_loading import safe_load_pickle

CROP = 48
CONTEXT = 60  # 48 px crops with the default 1.25 context: 6 px more on each side


def _cfg(**kw):
    base = dict(crop_size=CROP, clip_len=8, samples_per_shard=2, workers=1, executor="local")
    return PreprocessConfig(**{**base, **kw})


def _ds(root, **kw):
    return ThreeDPWDataset(root=str(root), **{"stride": {"test": 4}, **kw})


def _samples(out_dir):
    for shard in sorted(out_dir.glob("*/shard-*.tar")):
        yield from wds.WebDataset(str(shard), shardshuffle=False)


def _tree_bytes(directory):
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def shard_dir(synth_root, synth_body_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "shards"
    report = preprocess(_ds(synth_root), synth_body_dir, out, _cfg(), progress=False)
    assert report["frames_per_s"] > 0
    return out


# --------------------------------------------------------------------------------------------
# Small pieces


def test_clip_windows_cover_every_frame_with_a_tail_clip():
    assert clip_starts(20, 8, 8) == [0, 8, 12]  # non-overlapping plus the last 8 frames
    assert clip_starts(16, 8, 8) == [0, 8]  # no duplicate tail when it already fits
    assert clip_starts(20, 8, 4) == [0, 4, 8, 12]
    assert clip_starts(7, 8, 8) == []


def test_config_from_params_names_bad_fields():
    cfg = from_dict(PreprocessConfig, {"crop_size": 224}, source="params.yaml",
                    prefix="preprocess")
    dataset = from_dict(ThreeDPWDataset, {"stride": {"test": 1}}, source="params.yaml",
                        prefix="datasets.3dpw")
    assert stride_for(dataset, "test", cfg.clip_len) == 1
    assert stride_for(dataset, "train", cfg.clip_len) == cfg.clip_len
    with pytest.raises(DataError, match=r"params.yaml: preprocess.on_error: must be one of"):
        from_dict(PreprocessConfig, {"on_error": "ignore"}, source="params.yaml",
                  prefix="preprocess")
    with pytest.raises(DataError, match=r"stride.val: not one of splits"):
        from_dict(ThreeDPWDataset, {"stride": {"val": 2}}, source="params.yaml",
                  prefix="datasets.3dpw")


def test_unknown_on_error_in_code_built_config_names_the_field(synth_root, synth_body_dir,
                                                               tmp_path):
    with pytest.raises(DataError) as err:
        preprocess(_ds(synth_root), synth_body_dir, tmp_path / "out", _cfg(on_error="ignore"),
                   progress=False)
    assert err.value.field == "on_error" and "'fail' or 'skip'" in str(err.value)
    assert not (tmp_path / "out").exists()


class _FakeFuture:
    def __init__(self, value):
        self.value, self.cancelled = value, False

    def result(self):
        return self.value

    def cancel(self):
        self.cancelled = True


class _FakeDaskClient:
    """The two calls DaskExecutor makes on a distributed.Client."""

    def __init__(self):
        self.submitted = []

    def submit(self, fn, item, pure=True):
        assert pure is False
        self.submitted.append(item)
        return _FakeFuture(fn(item))


def test_executors_return_results_in_input_order():
    items = list(range(10))
    assert list(executors.make_executor("local", 1).map_ordered(abs, [-i for i in items])) \
        == items
    client = _FakeDaskClient()
    dask = executors.DaskExecutor(client=client, prefetch=3)
    assert list(dask.map_ordered(str, items)) == [str(i) for i in items]
    assert client.submitted == items
    with pytest.raises(ValueError, match="unknown executor"):
        executors.make_executor("ray", 2)


# --------------------------------------------------------------------------------------------
# End to end on the synthetic data set


def test_outputs_follow_the_contract_and_manifest_matches_shards(shard_dir, synth_root):
    report = json.loads((shard_dir / "report.json").read_text())
    manifest = mf.read_manifest(shard_dir)
    tracks = {s: list(iter_tracks(synth_root, s)) for s in ("train", "validation", "test")}
    for split, split_tracks in tracks.items():
        r = report["splits"][split]
        assert r["tracks"] == len(split_tracks)
        assert r["frames"] == sum(len(t) for t in split_tracks)
        assert r["clips"] == sum(len(clip_starts(len(t), 8, 4 if split == "test" else 8))
                                 for t in split_tracks)
        assert r["skipped_frames"]["campose_invalid"] == sum(
            int((~t.campose_valid).sum()) for t in split_tracks)
        assert r["shards"] == len(list((shard_dir / split).glob("shard-*.tar")))
    assert len(manifest["key"]) == report["totals"]["clips"]
    by_track = {(s, t.sequence, t.actor): t for s, ts in tracks.items() for t in ts}

    seen = {}
    for sample in _samples(shard_dir):
        shard = "/".join(sample["__url__"].split("/")[-2:])
        seen[sample["__key__"]] = (shard, sample)
    assert sorted(seen) == sorted(manifest["key"])
    for i, key in enumerate(manifest["key"]):
        shard, sample = seen[key]
        assert manifest["shard"][i] == shard and shard.startswith(manifest["split"][i] + "/")
        clip = shards.decode_clip(sample)
        assert clip["frames"].shape == (8, 3, CROP, CROP)
        assert int(clip["targets"]["valid"].sum()) == manifest["num_valid"][i]
        assert clip["targets"]["valid"].tolist() == manifest["valid"][i]
        assert clip["meta"]["context_size"] == manifest["context_size"][i] == CONTEXT
        assert shards.decode_clip(sample, context=True)["frames"].shape == (8, 3, CONTEXT,
                                                                            CONTEXT)
        assert clip["meta"]["clip_start"] == manifest["frame_start"][i]
        assert manifest["frame_end"][i] - manifest["frame_start"][i] == 8
        # valid = camera pose valid & more than 6 confident keypoints (all images are fine).
        track = by_track[(manifest["split"][i], clip["meta"]["sequence"], clip["meta"]["actor"])]
        frames = slice(clip["meta"]["clip_start"], clip["meta"]["clip_start"] + 8)
        expected = track.campose_valid[frames] & (
            (track.poses2d[frames, :, 2] > 0.3).sum(axis=1) > 6)
        assert clip["targets"]["valid"].numpy().tolist() == expected.tolist()
        assert clip["meta"]["frame_ids"] == track.img_frame_ids[frames].tolist()
        assert clip["meta"]["split"] == manifest["split"][i]
        assert clip["meta"]["source"] == manifest["source"][i] == "3dpw"
        assert clip["meta"]["camera"] == manifest["camera"][i] == 0


def test_targets_are_camera_frame_root_relative_and_project_into_the_crop(
        shard_dir, synth_body_dir):
    body = BodyModel.from_dir(synth_body_dir)
    j_reg = torch.from_numpy(load_npz(synth_body_dir / "regressors.npz")["J_regressor"]).float()
    inside, kp_dist, num_valid = [], [], 0
    # COCO-18 -> H36M-17 pairs of the same anatomical joint (ankles, knees, wrists, elbows).
    pairs = [(10, 3), (9, 2), (13, 6), (12, 5), (4, 16), (3, 15), (7, 13), (6, 12)]
    for sample in _samples(shard_dir):
        clip = shards.decode_clip(sample)
        t = clip["targets"]
        assert clip["meta"]["body_model_id"] == body.body_model_id
        assert "vertices" not in t                  # posed from pose and betas where used
        mesh = body.shard_mesh(t["pose"], t["betas"])
        assert mesh.shape == (8, body.num_vertices, 3)
        # Pelvis at the origin: exactly for the joints; the pelvis regressed from the posed
        # mesh is off by the skinning deformation only (millimetres, not a camera offset).
        assert t["joints3d"][:, 0].abs().max() < 1e-6
        assert (j_reg @ mesh)[:, 0].abs().max() < 0.02
        # The stored H36M joints are the ones the mesh of the stored pose gives.
        assert (body.regress_h36m(mesh) - t["joints_h36m"]).abs().max() < 1e-4
        valid = t["valid"]
        num_valid += int(valid.sum())
        j2d = t["joints2d"][valid]
        assert (j2d[..., 2] == 1).all() and (t["joints2d"][~valid][..., 2] == 0).all()
        inside.append(((j2d[..., :2] >= -0.5) & (j2d[..., :2] <= CROP - 0.5)).all(-1).ravel())
        kp = t["keypoints2d"][valid]
        for coco, h36m in pairs:
            seen = kp[:, coco, 2] > 0.3
            kp_dist.append((j2d[seen, h36m, :2] - kp[seen, coco, :2]).norm(dim=-1))
    assert num_valid > 20
    assert torch.cat(inside).float().mean() > 0.9
    assert torch.cat(kp_dist).median() < 2.0  # crop pixels: projection + affine chain agree


def test_two_runs_give_identical_bytes_whatever_the_worker_count(shard_dir, synth_root,
                                                                  synth_body_dir, tmp_path):
    out = tmp_path / "again"
    preprocess(_ds(synth_root), synth_body_dir, out, _cfg(workers=2), progress=False)
    assert _tree_bytes(out) == _tree_bytes(shard_dir)


@pytest.fixture()
def dataset_copy(synth_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(synth_root, root)
    # A frame of a one-actor sequence (so exactly one track sees it).
    track = next(t for t in iter_tracks(root, "train") if t.num_actors == 1)
    return root, track, 3


def test_corrupt_jpeg_fails_naming_the_file(dataset_copy, synth_body_dir, tmp_path):
    root, track, frame = dataset_copy
    image = track.image_paths[frame]
    image.write_bytes(image.read_bytes()[:200])  # truncated
    with pytest.raises(DataError, match=image.name) as err:  # raised in a worker process
        preprocess(_ds(root), synth_body_dir, tmp_path / "out", _cfg(workers=2), progress=False)
    assert "corrupt or truncated" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_corrupt_and_missing_jpegs_are_skipped_and_counted(dataset_copy, synth_body_dir,
                                                           tmp_path):
    root, track, frame = dataset_copy
    track.image_paths[frame].write_bytes(b"\xff\xd8 definitely not a jpeg")
    track.image_paths[frame + 1].unlink()
    out = tmp_path / "out"
    preprocess(_ds(root), synth_body_dir, out, _cfg(on_error="skip"), progress=False)
    report = json.loads((out / "report.json").read_text())
    assert report["splits"]["train"]["skipped_frames"]["corrupt_image"] == 1
    assert report["splits"]["train"]["skipped_frames"]["missing_image"] == 1
    assert report["splits"]["validation"]["skipped_frames"]["corrupt_image"] == 0
    key = shards.clip_key(track.sequence, track.actor, 0)
    sample = next(s for s in _samples(out) if s["__key__"] == key)
    clip = shards.decode_clip(sample, frames_dtype="uint8")
    assert not clip["targets"]["valid"][frame] and not clip["targets"]["valid"][frame + 1]
    assert clip["frames"][frame].max() == 0 and clip["frames"][frame + 2].max() > 0
    assert (out / "manifest.parquet").is_file()


def test_missing_jpeg_with_fail_names_the_file(dataset_copy, synth_body_dir, tmp_path):
    root, track, frame = dataset_copy
    track.image_paths[frame].unlink()
    with pytest.raises(DataError, match=track.image_paths[frame].name):
        preprocess(_ds(root), synth_body_dir, tmp_path / "out", _cfg(), progress=False)


def test_nan_pose_names_the_pickle_and_field(dataset_copy, synth_body_dir, tmp_path):
    root, track, _ = dataset_copy
    pkl = root / "sequenceFiles" / "train" / f"{track.sequence}.pkl"
    data = safe_load_pickle(pkl)
    data["poses"][0][2, 5] = np.nan
    pkl.write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(DataError, match=rf"{pkl.name}: poses\[0\]"):
        preprocess(_ds(root), synth_body_dir, tmp_path / "out", _cfg(), progress=False)


def test_existing_output_is_replaced_only_when_a_run_succeeds(shard_dir, dataset_copy,
                                                             synth_body_dir, tmp_path):
    root, track, frame = dataset_copy
    out = tmp_path / "out"
    shutil.copytree(shard_dir, out)
    before = _tree_bytes(out)
    track.image_paths[frame].write_bytes(b"garbage")
    with pytest.raises(DataError):
        preprocess(_ds(root), synth_body_dir, out, _cfg(), progress=False)
    assert _tree_bytes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "root"]  # no temp left over


def test_track_arrays_are_checked_again_before_use(synth_root, synth_body_dir):
    """Tracks built in code (not read from a pickle) get the same field-naming errors."""
    track = next(iter_tracks(synth_root, "train"))
    poses = track.poses.copy()
    poses[1, 7] = np.inf
    task = SequenceTask([dataclasses.replace(track, poses=poses)], "seq.pkl",
                        str(synth_body_dir), _cfg(), "3dpw", 8)
    with pytest.raises(DataError, match=r"seq.pkl: poses\[0\]: contains NaN or inf"):
        process_sequence(task)
    short = dataclasses.replace(track, trans=track.trans[:-1])
    with pytest.raises(DataError, match=r"trans\[0\]: expected shape"):
        process_sequence(SequenceTask([short], "seq.pkl", str(synth_body_dir), _cfg(), "3dpw",
                                      8))


# --------------------------------------------------------------------------------------------
# Empty splits, corrupt data inside a JPEG, counts, context crops, the documented loader


def test_a_split_without_clips_is_an_error_unless_optional(dataset_copy, synth_body_dir,
                                                          tmp_path):
    """Issue 10 item 6: an empty sequenceFiles/test fails preprocess naming the split and the
    directory; `optional_splits` allows it."""
    root, _, _ = dataset_copy
    folder = root / "sequenceFiles" / "test"
    for pkl in folder.glob("*.pkl"):
        pkl.unlink()
    with pytest.raises(DataError, match=r"sequenceFiles/test: splits: split 'test' has no "
                       r"sequences"):
        preprocess(_ds(root), synth_body_dir, tmp_path / "out", _cfg(), progress=False)
    assert not (tmp_path / "out").exists()
    report = preprocess(_ds(root, optional_splits=["test"]), synth_body_dir, tmp_path / "out",
                        _cfg(), progress=False)
    assert report["splits"]["test"]["clips"] == 0 and report["splits"]["train"]["clips"] > 0
    with pytest.raises(DataError, match=r"sequenceFiles/train: splits: split 'train' has no "
                       r"clips: its \d+ track\(s\) are shorter than clip_len 40"):
        preprocess(_ds(root, optional_splits=["test"]), synth_body_dir, tmp_path / "out2",
                   _cfg(clip_len=40), progress=False)
    with pytest.raises(DataError, match="optional_splits"):
        from_dict(ThreeDPWDataset, {"optional_splits": ["val"]}, source="params.yaml",
                  prefix="datasets.3dpw")


def _garbage_in_the_middle(path):
    """Overwrite 256 bytes in the middle of a real JPEG's entropy-coded data with garbage that
    holds no 0xFF (so no marker): the markers (SOI, SOS, EOI) stay intact, OpenCV still decodes
    an image (and only prints "Corrupt JPEG data" on stderr)."""
    data = bytearray(path.read_bytes())
    start = data.index(b"\xff\xda")                      # start of scan
    middle = start + (len(data) - start) // 2
    data[middle:middle + 256] = np.random.default_rng(0).integers(0, 255, 256, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    assert cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_COLOR) is not None


def test_jpeg_with_garbage_in_the_middle_is_an_unreadable_frame(dataset_copy, synth_body_dir,
                                                               tmp_path):
    """Issue 10 item 10: such a frame is not counted valid: on_error fail names the file,
    skip marks it invalid and counts it."""
    root, track, frame = dataset_copy
    image = track.image_paths[frame]
    _garbage_in_the_middle(image)
    with pytest.raises(crops.UnreadableImageError, match="Corrupt JPEG data"):
        crops.decode_jpeg(image.read_bytes(), 4)
    with pytest.raises(DataError, match=rf"{image.name}: not a readable JPEG \(corrupt"):
        preprocess(_ds(root), synth_body_dir, tmp_path / "out", _cfg(), progress=False)
    out = tmp_path / "skip"
    preprocess(_ds(root), synth_body_dir, out, _cfg(on_error="skip"), progress=False)
    report = json.loads((out / "report.json").read_text())
    assert report["splits"]["train"]["skipped_frames"]["corrupt_image"] == 1
    key = shards.clip_key(track.sequence, track.actor, 0)
    sample = next(s for s in _samples(out) if s["__key__"] == key)
    assert not shards.decode_clip(sample)["targets"]["valid"][frame]


def test_every_count_is_of_unique_frames(shard_dir, synth_root, capsys):
    """Issue 15 item 5: overlapping windows (test stride 4, and every last clip) do not count a
    frame twice: `stdformer shards info`, report.json and the frames that truly are valid."""
    from stdformer.cli import main

    assert main(["shards", "info", str(shard_dir), "--verify"]) == 0
    info = json.loads(capsys.readouterr().out)
    report = json.loads((shard_dir / "report.json").read_text())
    manifest = mf.read_manifest(shard_dir)
    for split in ("train", "validation", "test"):
        truth = sum(int((t.campose_valid & ((t.poses2d[..., 2] > 0.3).sum(-1) > 6)).sum())
                    for t in iter_tracks(synth_root, split) if len(t) >= 8)
        assert info[split]["valid_frames"] == report["splits"][split]["valid_frames"] == truth
        assert info[split]["verified"] and info[split]["clips"] == report["splits"][split]["clips"]
    test_rows = [v for s, v in zip(manifest["split"], manifest["num_valid"]) if s == "test"]
    assert sum(test_rows) > info["test"]["valid_frames"]      # the windows do overlap


def test_stored_context_keeps_the_centre_crop_as_before(synth_root):
    """Issue 9 item 7: the stored crop is the crop with real surroundings; its centre is the
    crop the model always got (same pixels before JPEG)."""
    track = next(iter_tracks(synth_root, "train"))
    boxes = crops.track_boxes(track.poses2d)
    cfg = _cfg()
    data = track.image_paths[2].read_bytes()
    centre, side = boxes.centers[2], boxes.sides[2]
    crop, affine = crops.crop_person(data, centre, side, CROP, scale=cfg.crop_scale)
    stored, _ = crops.crop_person(data, centre, side, cfg.context_size,
                                  scale=cfg.crop_scale * cfg.context_size / CROP)
    assert cfg.context_size == CONTEXT and stored.shape == (CONTEXT, CONTEXT, 3)
    m = (CONTEXT - CROP) // 2
    assert np.abs(stored[m:m + CROP, m:m + CROP].astype(int) - crop).max() <= 1
    np.testing.assert_allclose(affine, crops.crop_affine(centre, side, cfg.crop_scale, CROP))


DOCS_SNIPPET = "make_clip_loader("


def test_documented_loader_snippet_runs_as_pasted(shard_dir, tmp_path):
    """Issue 15 item 6: the loader snippet of docs/pipeline.md (Shard contract), pasted into a
    script (no __main__ guard), runs with loader workers and gives the served model's input."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    page = (Path(__file__).parents[1] / "docs" / "pipeline.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    snippet = next(b for b in blocks if DOCS_SNIPPET in b)
    (tmp_path / "data" / "shards").mkdir(parents=True)
    (tmp_path / "data" / "shards" / "3dpw").symlink_to(shard_dir)    # the pipeline's layout
    (tmp_path / "snippet.py").write_text(snippet)
    env = {**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    run = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert re.search(r"\(\d+, 8, 48, 48, 3\) uint8", run.stdout), run.stdout
