"""Shared helpers: atomic outputs, restricted unpickling, deterministic npz, params validation."""

import os
import pickle
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from stdformer.config import from_dict, load_section
from stdformer.io import DataError, atomic_output, load_npz, npz_bytes, write_text_atomic
from stdformer.safe_loading import NUMPY_GLOBALS, UnsafePickleError, safe_load_pickle


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_atomic_file_keeps_old_content_when_writer_fails(tmp_path):
    target = tmp_path / "out.json"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_directory_replaces_whole_tree(tmp_path):
    target = tmp_path / "shards"
    with atomic_output(target, directory=True) as tmp:
        (tmp / "a.tar").write_text("1")
    with atomic_output(target, directory=True) as tmp:
        (tmp / "b.tar").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.tar"]
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target, directory=True) as tmp:
            (tmp / "c.tar").write_text("3")
            raise KeyboardInterrupt
    assert sorted(p.name for p in target.iterdir()) == ["b.tar"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]


_WRITER = """
import os, signal, sys
from stdformer.io import atomic_output
with atomic_output(sys.argv[1], directory=True) as tmp:
    (tmp / "part.bin").write_bytes(b"x" * 1000)
    print(tmp, flush=True)
    if sys.argv[2] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)     # a killed stage: no cleanup runs
    sys.stdin.read()                             # a live writer: holds its temp until told
"""


def _start_writer(target, mode):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.Popen([sys.executable, "-c", _WRITER, str(target), mode], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_next_writer_removes_temporaries_of_killed_writers_only(tmp_path):
    """Issue 10 item 8: a killed writer's temp dir is removed by the next write of the same
    output; a temp a live concurrent writer still fills is left alone."""
    target = tmp_path / "shards"
    killed = _start_writer(target, "kill")
    killed_tmp = Path(killed.stdout.readline().strip())
    assert killed.wait() == -9 and (killed_tmp / "part.bin").is_file()   # left behind
    live = _start_writer(target, "wait")
    try:
        live_tmp = Path(live.stdout.readline().strip())
        with atomic_output(target, directory=True) as tmp:
            (tmp / "done").write_text("1")
        assert not killed_tmp.exists()
        assert (live_tmp / "part.bin").is_file()
        with atomic_output(tmp_path / "other.json") as tmp:      # other outputs: untouched
            tmp.write_text("{}")
        assert (live_tmp / "part.bin").is_file()
    finally:
        live.communicate("")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.json", "shards"]


def test_restricted_unpickler_loads_numpy_and_refuses_code(tmp_path):
    ok = tmp_path / "ok.pkl"
    ok.write_bytes(pickle.dumps({"poses": np.ones((2, 72)), "name": "seq"}, protocol=2))
    data = safe_load_pickle(ok, NUMPY_GLOBALS)
    assert data["poses"].shape == (2, 72) and data["name"] == "seq"

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl.*(posix|os)\.system"):
        safe_load_pickle(evil, NUMPY_GLOBALS)


def test_truncated_pickle_names_the_file(tmp_path):
    bad = tmp_path / "cut.pkl"
    bad.write_bytes(pickle.dumps({"poses": np.ones((50, 72))}, protocol=2)[:100])
    with pytest.raises(DataError, match=r"cut\.pkl.*truncated or corrupt"):
        safe_load_pickle(bad, NUMPY_GLOBALS)


def test_npz_bytes_are_deterministic_and_loadable(tmp_path):
    arrays = {"vertices": np.arange(12, dtype=np.float16).reshape(1, 4, 3),
              "valid": np.array([True])}
    first = npz_bytes(arrays)
    assert first == npz_bytes(arrays)
    path = tmp_path / "t.npz"
    path.write_bytes(first)
    loaded = load_npz(path, required=("vertices", "valid"))
    np.testing.assert_array_equal(loaded["vertices"], arrays["vertices"])
    with pytest.raises(DataError, match=r"t\.npz: betas: missing"):
        load_npz(path, required=("betas",))


@pytest.mark.parametrize("array", [
    np.arange(24, dtype=np.float16).reshape(2, 4, 3), np.asfortranarray(np.ones((3, 5))),
    np.arange(20.0).reshape(4, 5)[:, ::2], np.float32(2.5), np.array(7), np.zeros((0, 3)),
    np.arange(3, dtype=">i4"), np.zeros(2, dtype=[("a", "<i4"), ("b", ">f8")]),
    np.array(["ab", "c"])], ids=lambda a: f"{a.dtype}{np.shape(a)}")
def test_npy_bytes_are_what_numpy_writes(array):
    """The reused headers change nothing: each member is what np.lib.format.write_array
    writes (C order), whatever the dtype, shape and memory layout, first call or later."""
    import io

    from stdformer.io import npy_bytes

    expected = io.BytesIO()
    np.lib.format.write_array(expected, np.ascontiguousarray(array) if np.ndim(array) else
                              array, allow_pickle=False)
    assert npy_bytes(np.asarray(array)) == expected.getvalue()
    assert npy_bytes(np.asarray(array)) == expected.getvalue()


def test_npy_bytes_refuse_object_arrays():
    from stdformer.io import npy_bytes

    with pytest.raises(ValueError, match="allow_pickle"):
        npy_bytes(np.array([None, 1], dtype=object))


@dataclass
class _Inner:
    size: int = 4


@dataclass
class _Section:
    crop_size: int = 64
    on_error: Literal["fail", "skip"] = "fail"
    scale: float = 1.2
    root: str | None = None
    splits: list[str] = field(default_factory=lambda: ["train"])
    inner: _Inner = field(default_factory=_Inner)

    def validate(self):
        if self.crop_size <= 0:
            raise ValueError("crop_size must be positive")


def test_from_dict_validates_keys_types_and_values():
    cfg = from_dict(_Section, {"crop_size": 32, "scale": 1, "inner": {"size": 2}})
    assert cfg.crop_size == 32 and cfg.scale == 1.0 and cfg.inner.size == 2
    with pytest.raises(DataError, match=r"p\.yaml: s\.crop_sise: unknown key \(did you mean 'crop_size'\?\)"):
        from_dict(_Section, {"crop_sise": 3}, source="p.yaml", prefix="s")
    with pytest.raises(DataError, match=r"s\.on_error: must be one of 'fail', 'skip'"):
        from_dict(_Section, {"on_error": "ignore"}, prefix="s")
    with pytest.raises(DataError, match=r"s\.inner\.size: expected an integer"):
        from_dict(_Section, {"inner": {"size": "big"}}, prefix="s")
    with pytest.raises(DataError, match="crop_size must be positive"):
        from_dict(_Section, {"crop_size": 0}, prefix="s")


def test_load_section_names_the_file(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("prepro:\n  crop_size: 3\n")
    with pytest.raises(DataError, match=r"params\.yaml: preprocess: missing section \(did you mean 'prepro'\?\)"):
        load_section("preprocess", _Section, params)
    params.write_text("preprocess: [1, 2\n")
    with pytest.raises(DataError, match="not valid YAML"):
        load_section("preprocess", _Section, params)
