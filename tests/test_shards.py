"""The clip shard contract: deterministic writing, plain-webdataset readability, manifest (and
readers that read only what it lists, verified), crops with context, the served model's input,
and a reader that splits clips disjointly across ranks and workers."""

import hashlib
import io
import json
import tarfile
import warnings

import cv2
import numpy as np
import pytest
import torch
import webdataset as wds

from stdformer.data import manifest as mf
from stdformer.data import shards
from stdformer.io import DataError

S, CROP = 4, 24


def _clip(seq: str, actor: int, start: int):
    """A small clip whose pixel values and targets encode (start) so decoding can be checked."""
    rng = np.random.default_rng([actor, start])
    frames = [cv2.imencode(".jpg", np.full((CROP, CROP, 3), (start + 10 * i) % 250, np.uint8))[1]
              .tobytes() for i in range(S)]
    targets = {
        "joints3d": rng.normal(size=(S, 24, 3)),
        "joints_h36m": rng.normal(size=(S, 17, 3)), "joints2d": rng.uniform(0, CROP, (S, 17, 3)),
        "keypoints2d": rng.uniform(0, CROP, (S, 18, 3)), "pose": rng.normal(size=(S, 72)),
        "betas": np.zeros((S, 10)), "valid": np.arange(S) % 2 == 0,
    }
    meta = {"sequence": seq, "actor": actor, "split": "train", "source": "unit",
            "clip_start": start, "frame_ids": list(range(start, start + S)), "crop_size": CROP,
            "context_size": CROP, "body_model_id": "test-body"}
    return shards.encode_clip(shards.clip_key(seq, actor, start), frames, targets, meta)


def _samples(num_clips=10):
    return [_clip(f"seq{k % 3}", k % 2, 4 * k) for k in range(num_clips)]


def _rows(placed, split="train"):
    return [{"key": key, "split": split, "shard": f"{split}/{shard}", "sequence": "s",
             "actor": 0, "frame_start": 0, "frame_end": S, "num_frames": S, "num_valid": 2,
             "valid": [True, False] * (S // 2), "source": "unit", "camera": 0, "crop_size": CROP,
             "context_size": CROP} for key, shard in placed]


def _write(directory, num_clips=10, per_shard=3):
    placed = shards.write_shards(directory, _samples(num_clips), per_shard)
    return placed, _rows(placed)


def _write_split(root, num_clips=10, per_shard=3):
    """A preprocess-like output: root/train/shard-*.tar and root/manifest.parquet."""
    placed, rows = _write(root / "train", num_clips, per_shard)
    mf.write_manifest(root, rows)
    return placed


def test_shard_bytes_and_manifest_are_deterministic(tmp_path):
    placed_a, rows_a = _write(tmp_path / "a")
    placed_b, rows_b = _write(tmp_path / "b")
    assert placed_a == placed_b
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar",
                     "shard-000003.tar"]  # 10 clips, 3 per shard, no temp files left
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    digests = {"shard_bytes": 1, "shard_sha256": "0" * 64}
    assert mf.manifest_bytes([{**r, **digests} for r in rows_a]) == \
        mf.manifest_bytes([{**r, **digests} for r in rows_b])
    with tarfile.open(tmp_path / "a" / names[0]) as tar:
        members = tar.getmembers()
    assert {(m.mtime, m.uid, m.gid, m.uname) for m in members} == {(0, 0, 0, "")}
    assert [m.name for m in members] == sorted(m.name for m in members)


def test_shards_are_the_tars_webdataset_writes_and_are_hashed_as_written(tmp_path):
    """The writer puts members straight into the file (no tarfile stream) and hashes them on
    the way: the bytes are webdataset.TarWriter's, the digests those of the files."""
    samples = _samples(5)
    with shards.ShardSeriesWriter(tmp_path, 3) as writer:
        for sample in samples:
            writer.write(sample)
    assert writer.shards == ["shard-000000.tar", "shard-000001.tar"]
    for i, name in enumerate(writer.shards):
        expected = io.BytesIO()
        tar = wds.TarWriter(expected, user="", group="", mode=0o444, mtime=0, encoder=False)
        for sample in samples[3 * i:3 * i + 3]:
            tar.write(dict(sample))
        tar.close()
        data = (tmp_path / name).read_bytes()
        assert data == expected.getvalue()
        assert writer.digests[name] == (len(data), hashlib.sha256(data).hexdigest())


def test_manifest_is_written_without_importing_pandas(tmp_path):
    """pyarrow imports pandas (a second of every preprocess run) when a table is built from
    Python lists; the manifest is built without."""
    import subprocess
    import sys

    code = ("import sys; from stdformer.data import manifest as mf; "
            "row = {f.name: (['x'] if f.name == 'valid' else 1) for f in mf.MANIFEST_SCHEMA}; "
            "row.update({n: 'x' for n in ('key', 'split', 'shard', 'sequence', 'source', "
            "'shard_sha256')}, valid=[True, False]); "
            "data = mf.manifest_bytes([row]); assert 'pandas' not in sys.modules, 'pandas'; "
            "print(len(data))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


def test_plain_webdataset_reads_every_member_of_the_contract(tmp_path):
    _write(tmp_path)
    url = str(tmp_path / "shard-000000.tar")
    samples = list(wds.WebDataset(url, shardshuffle=False))
    assert [s["__key__"] for s in samples] == [s["__key__"] for s in _samples()[:3]]
    sample = samples[0]
    assert {"json", "targets.npz"} | {f"f{i:02d}.jpg" for i in range(S)} <= set(sample)
    with np.load(io.BytesIO(sample["targets.npz"])) as z:
        arrays = {k: z[k] for k in z.files}
    expected = {"joints3d": ((S, 24, 3), np.float32),
                "joints_h36m": ((S, 17, 3), np.float32), "joints2d": ((S, 17, 3), np.float32),
                "keypoints2d": ((S, 18, 3), np.float32), "pose": ((S, 72), np.float32),
                "betas": ((S, 10), np.float32), "valid": ((S,), np.bool_)}
    for name, (shape, dtype) in expected.items():
        assert arrays[name].shape == shape and arrays[name].dtype == dtype, name

    clip = shards.decode_clip(sample)
    assert clip["frames"].shape == (S, 3, CROP, CROP) and clip["frames"].dtype == torch.float32
    assert clip["frames"].max() <= 1.0
    np.testing.assert_allclose(clip["frames"][1].mean().item(), 10 / 255, atol=2 / 255)
    assert clip["targets"]["valid"].tolist() == [True, False, True, False]
    assert clip["meta"]["key"] == sample["__key__"] and clip["meta"]["num_frames"] == S
    assert clip["meta"]["frame_ids"] == [0, 1, 2, 3]
    uint8 = shards.decode_clip(sample, frames_dtype="uint8")["frames"]
    assert uint8.dtype == torch.uint8 and uint8.shape == (S, 3, CROP, CROP)


def test_manifest_roundtrip_matches_shard_contents(tmp_path):
    placed = _write_split(tmp_path)
    manifest = mf.read_manifest(tmp_path)  # a directory works too
    assert manifest["key"] == [k for k, _ in placed]
    shard = tmp_path / manifest["shard"][0]
    assert manifest["shard_bytes"][0] == shard.stat().st_size
    assert manifest["shard_sha256"][0] == hashlib.sha256(shard.read_bytes()).hexdigest()
    for shard in sorted(set(manifest["shard"])):
        keys = [s["__key__"] for s in wds.WebDataset(str(tmp_path / shard), shardshuffle=False)]
        assert keys == [k for k, sh in zip(manifest["key"], manifest["shard"], strict=True)
                        if sh == shard]


def test_wrong_target_shape_names_the_field():
    sample = _clip("s", 0, 0)
    bad = {"joints3d": np.zeros((S, 23, 3))}
    with pytest.raises(DataError, match="joints3d"):
        shards.encode_clip("k", [sample["f00.jpg"]] * S, {**bad, **{
            k: np.zeros(shape) for k, shape in [("joints_h36m", (S, 17, 3)),
                                                ("joints2d", (S, 17, 3)),
                                                ("keypoints2d", (S, 18, 3)), ("pose", (S, 72)),
                                                ("betas", (S, 10)), ("valid", (S,))]}},
            {"sequence": "s", "actor": 0, "split": "train", "source": "x", "clip_start": 0,
             "frame_ids": [0] * S, "crop_size": CROP, "context_size": CROP,
             "body_model_id": "b"})


@pytest.mark.parametrize("name", ["a", "seq__a0__00000.f07.jpg", "x" * 100, "é.json",
                                  "d/" + "y" * 100])
@pytest.mark.parametrize("size", [0, 1, 511, 512, 123_456, 8 ** 11])
def test_member_headers_are_the_bytes_tarfile_writes(name, size):
    from stdformer.data.tarfiles import ustar_header

    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = size, 0, 0o444, "", ""
    if size >= 8 ** 11:   # past USTAR's size field: tarfile's own refusal, unchanged
        with pytest.raises(ValueError):
            ustar_header(name, size)
        return
    assert ustar_header(name, size) == info.tobuf(tarfile.USTAR_FORMAT, tarfile.ENCODING,
                                                  "surrogateescape")


def test_shards_with_stored_vertices_are_refused_with_a_rerun_hint():
    """Shards from before the mesh left the contract (a float16 `vertices` array per clip) are
    a clear DataError naming the clip and the field, not silently read without their mesh."""
    from stdformer.io import npz_arrays, npz_bytes

    sample = _clip("s", 0, 0)
    arrays = npz_arrays(sample["targets.npz"])
    old = {**sample, "targets.npz": npz_bytes(
        {**arrays, "vertices": np.zeros((S, 30, 3), np.float16)}, compress=False)}
    with pytest.raises(DataError, match=r"s__a0__00000.*vertices.*rerun preprocess"):
        shards.decode_clip(old)


def test_clip_keys_sort_and_never_contain_webdataset_separators():
    assert shards.clip_key("down.town/walk", 1, 42) == "down-town-walk__a1__00042"
    keys = [shards.clip_key("seq", a, s) for a in (0, 1) for s in (0, 8, 16, 100)]
    assert keys == sorted(keys)


def test_aborted_writer_leaves_no_partial_shard(tmp_path):
    with pytest.raises(RuntimeError):
        with shards.ShardSeriesWriter(tmp_path, 3) as writer:
            for sample in _samples(4):
                writer.write(sample)
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-000000.tar"]


def _loader_keys(directory, **kw):
    loader = shards.make_clip_loader(directory, batch_size=2, **kw)
    return [k for batch in loader for k in batch["key"]]


def test_reader_splits_clips_disjointly_across_ranks_and_workers(tmp_path):
    _write(tmp_path, num_clips=13, per_shard=2)  # 7 shards
    every = [s["__key__"] for s in _samples(13)]
    assert sorted(_loader_keys(tmp_path)) == sorted(every)

    for shuffle in (False, True):
        per_rank = [_loader_keys(tmp_path, rank=r, world_size=2, shuffle=shuffle, seed=5)
                    for r in range(2)]
        assert not set(per_rank[0]) & set(per_rank[1])
        assert sorted(per_rank[0] + per_rank[1]) == sorted(every)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        workers = _loader_keys(tmp_path, num_workers=2)
    assert len(workers) == len(set(workers)) and sorted(workers) == sorted(every)
    ranks_and_workers = [k for r in range(2)
                         for k in _loader_keys(tmp_path, rank=r, world_size=2, num_workers=2)]
    assert sorted(ranks_and_workers) == sorted(every)


def test_shuffle_is_seeded_per_epoch(tmp_path):
    _write(tmp_path, num_clips=13, per_shard=2)
    a = _loader_keys(tmp_path, shuffle=True, seed=1)
    assert a == _loader_keys(tmp_path, shuffle=True, seed=1)
    assert a != _loader_keys(tmp_path, shuffle=True, seed=1, epoch=1)
    assert a != _loader_keys(tmp_path)


def test_batches_stack_clips(tmp_path):
    _write(tmp_path, num_clips=5, per_shard=5)
    batch = next(iter(shards.make_clip_loader(tmp_path, batch_size=4, frames_dtype="uint8")))
    assert batch["frames"].shape == (4, S, 3, CROP, CROP)
    assert batch["targets"]["pose"].shape == (4, S, 72)
    assert batch["targets"]["valid"].dtype == torch.bool and len(batch["meta"]) == 4


def test_too_few_shards_for_ranks_and_missing_shards_are_reported(tmp_path):
    _write(tmp_path, num_clips=2, per_shard=5)  # 1 shard
    with pytest.raises(ValueError, match="1 shards cannot feed 2 ranks"):
        shards.make_clip_loader(tmp_path, rank=0, world_size=2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no shards"):
        shards.list_shards(tmp_path / "empty")
    out = tmp_path / "out"
    _write_split(out, num_clips=2)
    with pytest.raises(DataError, match="lists no clips of split 'validation'"):
        shards.list_shards(out, "validation")


# --------------------------------------------------------------------------------------------
# Readers read what the manifest lists, verified


def _member_offsets(path):
    """Byte offset of the header of every tar member."""
    with tarfile.open(path) as tar:
        return [m.offset for m in tar.getmembers()]


def test_readers_refuse_stray_truncated_and_rewritten_shards(tmp_path):
    """Issue 10 item 4: a test shard copied into train/, a shard truncated at a member boundary
    (a readable tar holding fewer clips) and a same-size rewrite are refused, naming the file,
    by both readers (evaluation's list_shards and training's index_shards)."""
    from stdformer.data.shard_index import index_shards

    _write_split(tmp_path, num_clips=10, per_shard=3)   # train/shard-000000..3.tar
    assert len(shards.list_shards(tmp_path, "train")) == 4
    assert index_shards(tmp_path, "train").num_clips == 10
    readers = (lambda: shards.list_shards(tmp_path, "train"),
               lambda: index_shards(tmp_path, "train"))

    stray = tmp_path / "train" / "shard-000099.tar"
    stray.write_bytes((tmp_path / "train" / "shard-000001.tar").read_bytes())
    for read in readers:
        with pytest.raises(DataError, match=r"shard-000099\.tar: not a shard .* lists"):
            read()
    stray.unlink()

    shard = tmp_path / "train" / "shard-000000.tar"
    original = shard.read_bytes()
    second_clip = _member_offsets(shard)[S + 2]                  # json + S frames + npz each
    shard.write_bytes(original[:second_clip])
    assert len(list(wds.WebDataset(str(shard), shardshuffle=False))) == 1   # reads "fine"
    for read in readers:
        with pytest.raises(DataError, match=r"shard-000000\.tar: \d+ bytes, the manifest lists"):
            read()

    rewritten = bytearray(original)
    rewritten[_member_offsets(shard)[1] + 600] ^= 0xFF            # same size, other content
    shard.write_bytes(bytes(rewritten))
    for read in readers:
        with pytest.raises(DataError, match=r"shard-000000\.tar: content differs from the "
                           "sha256"):
            read()


def test_unreadable_shard_is_a_data_error_naming_it(tmp_path):
    """A shard that breaks while being read (here passed without a manifest) is a DataError
    naming it, not a raw tarfile.ReadError."""
    _write(tmp_path, num_clips=3, per_shard=3)
    shard = tmp_path / "shard-000000.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[:_member_offsets(shard)[2] + 700])    # cut inside a member
    for workers in (0, 1):          # raised in a loader worker, it arrives as the same line
        with pytest.raises(DataError, match=r"shard-000000\.tar: not a readable tar shard") as e:
            list(shards.make_clip_loader([str(shard)], batch_size=2, num_workers=workers))
        assert len(str(e.value).splitlines()) == 1 and e.value.path == str(shard)


def _context_clip(crop=16, margin=4):
    """A clip stored with `margin` pixels of context: a bright centre square, dark context."""
    size = crop + 2 * margin
    image = np.full((size, size, 3), 20, np.uint8)
    image[margin:margin + crop, margin:margin + crop] = 200
    frames = [cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes()] * S
    sample = _clip("ctx", 0, 0)
    meta = {**json.loads(sample["json"]), "crop_size": crop, "context_size": size}
    targets = np.load(io.BytesIO(sample["targets.npz"]))
    return shards.encode_clip(sample["__key__"], frames, dict(targets), meta)


def test_decode_gives_the_centre_crop_and_the_context_on_request():
    sample = _context_clip(crop=16, margin=4)
    clip = shards.decode_clip(sample, frames_dtype="uint8")
    assert clip["frames"].shape == (S, 3, 16, 16)
    assert clip["frames"][:, :, 1:-1, 1:-1].min() > 180           # only the centre
    full = shards.decode_clip(sample, frames_dtype="uint8", context=True)["frames"]
    assert full.shape == (S, 3, 24, 24) and full[:, :, :2].max() < 40
    assert torch.equal(full[:, :, 4:20, 4:20], clip["frames"])
    assert shards.context_margin(clip["meta"]) == 4


def test_model_input_turns_clips_into_the_served_models_input():
    """Issue 15 item 6: decode_clip's float frames -> uint8 (B, S, H, W, 3) RGB, the pyfunc's
    input."""
    sample = _clip("s", 0, 40)
    clip = shards.decode_clip(sample)                              # float32 (S, 3, H, W)
    frames = shards.model_input(clip)
    assert frames.shape == (1, S, CROP, CROP, 3) and frames.dtype == np.uint8
    raw = cv2.imdecode(np.frombuffer(sample["f01.jpg"], np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(frames[0, 1], cv2.cvtColor(raw, cv2.COLOR_BGR2RGB))
    batch = shards.collate_clips([clip, shards.decode_clip(sample, frames_dtype="uint8")])
    assert shards.model_input(batch).shape == (2, S, CROP, CROP, 3)
