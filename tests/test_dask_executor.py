"""Preprocessing on a real Dask cluster (2 local worker processes) gives the same bytes as the
local process pool. Needs the optional extra: `pip install -e .[dask]` (skipped without it)."""

import math
import tarfile
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

from stdformer.data.executors import DaskExecutor  # noqa: E402
from stdformer.data.preprocess import preprocess  # noqa: E402
from stdformer.data.datasets import ThreeDPWDataset  # noqa: E402
from stdformer.data.preprocess_config import PreprocessConfig  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                                  dashboard_address=None) as local_cluster:
        yield local_cluster


def shard_members(out_dir: Path) -> dict[str, list[tuple[str, bytes]]]:
    """{shard path: [(member name, member bytes), ...] in archive order}."""
    shards = {}
    for path in sorted(out_dir.glob("*/shard-*.tar")):
        with tarfile.open(path) as tar:
            shards[str(path.relative_to(out_dir))] = [
                (member.name, tar.extractfile(member).read()) for member in tar.getmembers()]
    return shards


def test_dask_cluster_writes_the_same_shards_and_manifest_as_the_local_pool(
        tmp_path, synth_root, synth_body_dir, cluster):
    # Small shards so the comparison spans several shards per split.
    common = dict(crop_size=32, samples_per_shard=3, workers=2)
    local = preprocess(ThreeDPWDataset(root=str(synth_root)), synth_body_dir, tmp_path / "local",
                       PreprocessConfig(executor="local", **common), progress=False)
    # The way users configure it: executor dask + the scheduler's address.
    dask = preprocess(ThreeDPWDataset(root=str(synth_root)), synth_body_dir, tmp_path / "dask",
                      PreprocessConfig(executor="dask", executor_address=cluster.scheduler_address,
                                       **common), progress=False)

    assert local["totals"]["clips"] > 0 and local["totals"]["shards"] > 2
    assert dask["totals"] == local["totals"]
    local_shards = shard_members(tmp_path / "local")
    assert local_shards and shard_members(tmp_path / "dask") == local_shards
    for name in ("manifest.parquet", "report.json"):
        assert (tmp_path / "dask" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()


def test_dask_executor_keeps_input_order_and_raises_worker_errors(cluster):
    with distributed.Client(cluster) as client:
        executor = DaskExecutor(client=client, prefetch=2)  # fewer in flight than items
        assert list(executor.map_ordered(math.sqrt, [16, 9, 4, 1, 0])) == [4, 3, 2, 1, 0]
        results = executor.map_ordered(math.sqrt, [4, -1, 9])
        assert next(results) == 2
        with pytest.raises(ValueError, match="math domain error"):
            next(results)
