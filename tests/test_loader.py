"""The training loader's batches: built in place from the shards, they hold what decoding each
clip on its own gives (frames, augmentation, targets); the uint8 frames normalised on the
device equal the float frames of the per-clip path; loader workers reuse their batch buffers
once (and only once) the consumer has let go of a batch; the shard reader reads what webdataset
reads and names a truncated shard."""

import tarfile

import pytest
import torch
import webdataset as wds

from stdformer.data import shards
from stdformer.data.preprocess import preprocess
from stdformer.data.datasets import ThreeDPWDataset
from stdformer.data.preprocess_config import PreprocessConfig
from stdformer.io import DataError
from stdformer.model.assets import load_body_assets
from stdformer.train.augment import ClipAugmenter
from stdformer.train.config import AugmentConfig
from stdformer.train import data as train_data
from stdformer.train.buffers import SLOT_KEY
from stdformer.data.shard_index import index_shards
from stdformer.train.data import ARENAS_PER_WORKER, TrainStream, assemble_batch, make_loader
from stdformer.model.inputs import IMAGENET_MEAN, IMAGENET_STD, normalize_frames

CROP = 32


@pytest.fixture(scope="module")
def shard_dir(synth_root, synth_body_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("loader") / "shards"
    preprocess(ThreeDPWDataset(root=str(synth_root), stride={"test": 4}), synth_body_dir, out,
               PreprocessConfig(crop_size=CROP, samples_per_shard=3, workers=1), progress=False)
    return out


def _samples(shard_dir, count=5):
    urls = index_shards(shard_dir, "train").shards
    return list(wds.WebDataset(list(urls), shardshuffle=False))[:count]


@pytest.mark.parametrize("augment", [False, True])
def test_batch_holds_what_decoding_each_clip_gives(shard_dir, synth_body_dir, augment):
    samples = _samples(shard_dir)
    perms = load_body_assets(synth_body_dir).perms
    cfg = AugmentConfig(enabled=augment, flip_prob=0.5, color_noise=0.3, reverse_prob=0.5,
                        rotation_zero_prob=0.2)
    augmenter = ClipAugmenter(cfg, perms, seed=5, epoch=1)
    if augment:  # the draws cover flips, turns and reversals
        drawn = [augmenter.params_for(s["__key__"]) for s in samples]
        assert any(p.flip for p in drawn) and any(p.rotation_deg for p in drawn)
    batch = assemble_batch(samples, augmenter)
    clips = [augmenter(shards.decode_clip(s, frames_dtype="uint8", context=True))
             for s in samples]
    expected = shards.collate_clips(clips)
    assert batch["key"] == expected["key"]
    assert batch["frames"].shape == (len(samples), 8, 3, CROP, CROP)
    assert batch["frames"].dtype == torch.uint8
    assert torch.equal(batch["frames"], expected["frames"])
    assert set(batch["targets"]) == set(shards.BATCH_TARGETS)   # the mesh flag too
    for name, value in batch["targets"].items():
        assert value.dtype == expected["targets"][name].dtype, name
        assert torch.equal(value, expected["targets"][name]), name


def test_uint8_batch_normalised_on_the_device_equals_the_float_path(shard_dir):
    samples = _samples(shard_dir, 3)
    batch = assemble_batch(samples)                          # centre crops, no augmenter
    floats = torch.stack([shards.decode_clip(s)["frames"] for s in samples])  # [0, 1]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)
    torch.testing.assert_close(normalize_frames(batch["frames"]), (floats - mean) / std,
                               rtol=0, atol=1e-6)


def _stream(shard_dir, synth_body_dir):
    return TrainStream(index_shards(shard_dir, "train"), seed=3, batch_size=2, rank=0,
                       world_size=1, shuffle_window=4, augment=AugmentConfig(enabled=True),
                       perms=load_body_assets(synth_body_dir).perms)


def _same(batch, expected):
    return (batch["key"] == expected["key"] and torch.equal(batch["frames"], expected["frames"])
            and all(torch.equal(v, expected["targets"][k]) for k, v in batch["targets"].items()))


@pytest.mark.parametrize("start", ["fork", "forkserver"])
def test_worker_reuses_a_batch_buffer_once_the_consumer_drops_the_batch(shard_dir,
                                                                         synth_body_dir, start,
                                                                         monkeypatch):
    stream, count = _stream(shard_dir, synth_body_dir), 4 * ARENAS_PER_WORKER
    in_process = make_loader(stream, 0, seed=0)
    expected = [next(in_process) for _ in range(count)]
    # How workers start (forked, or spawned from a forkserver when the process runs threads)
    # decides how the release board reaches them: inherited memory, or a shared handle.
    monkeypatch.setattr(train_data, "worker_context", lambda workers: start)
    loader = make_loader(stream, 1, seed=0)
    uses = {}
    for got, want in zip(loader, expected):                 # one batch held at a time
        assert _same(got, want), got["key"]
        worker, slot, use = got[SLOT_KEY]
        uses[slot] = max(use, uses.get(slot, 0))
    # At most ARENAS_PER_WORKER batches are alive at once (how many depends on timing), so
    # every batch finds a released slot: `count` batches in that few slots means reuse.
    assert set(uses) <= set(range(ARENAS_PER_WORKER))
    assert sum(uses.values()) == count


def test_batches_the_consumer_keeps_are_never_overwritten(shard_dir, synth_body_dir):
    stream, count = _stream(shard_dir, synth_body_dir), 3 * ARENAS_PER_WORKER
    in_process = make_loader(stream, 0, seed=0)
    expected = [next(in_process) for _ in range(count)]
    loader = make_loader(stream, 1, seed=0)
    kept = [next(loader) for _ in range(count)]             # all held until the end
    del loader
    assert all(_same(got, want) for got, want in zip(kept, expected))
    slots = [got[SLOT_KEY][1] for got in kept if SLOT_KEY in got]
    assert sorted(slots) == list(range(ARENAS_PER_WORKER))  # each slot used once; then fresh


def test_shard_reader_reads_what_webdataset_reads(shard_dir):
    url = index_shards(shard_dir, "train").shards[0]
    ours = list(shards.read_shard(url))
    theirs = list(wds.WebDataset(url, shardshuffle=False))
    assert [s["__key__"] for s in ours] == [s["__key__"] for s in theirs]
    for a, b in zip(ours, theirs):
        assert {k: v for k, v in a.items() if k != "__url__"} == \
            {k: v for k, v in b.items() if not k.startswith("__")} | {"__key__": b["__key__"]}
    only = list(shards.read_shard(url, select=lambda name: name.endswith(".json")))
    assert [sorted(s) for s in only] == [["__key__", "__url__", "json"]] * len(ours)


def test_truncated_shard_is_a_data_error_naming_it(shard_dir, tmp_path):
    url = index_shards(shard_dir, "train").shards[0]
    data = open(url, "rb").read()
    with tarfile.open(url) as tar:
        members_end = max(m.offset_data + -(-m.size // 512) * 512 for m in tar.getmembers())
    for cut in (len(data) // 2, members_end - 100, members_end):  # in members; no end marker
        bad = tmp_path / f"cut{cut}.tar"
        bad.write_bytes(data[:cut])
        with pytest.raises(DataError, match=rf"{bad}: not a readable tar shard \(truncated"):
            list(shards.read_shard(str(bad)))
