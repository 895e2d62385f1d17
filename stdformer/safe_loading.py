"""Loading files that may not be trusted, without running what they hold.

* `safe_load_pickle(path, allowed)`: a restricted unpickler; anything outside `allowed` is refused
  with an error that names the file and the global it tried to load.
* `load_npz_restricted(path, allowed, keys)`: an .npz whose object arrays go through it; members
  nobody asked for are never read.
* `load_torch_file(path, what)`: every `torch.load` of the project (weights_only), with one-line
  errors that never suggest `weights_only=False`.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from stdformer.io import DataError


class UnsafePickleError(DataError):
    """A pickle asked for a global outside the allow-list (it may try to run code)."""


# --------------------------------------------------------------------------------------------
# Restricted unpickling

# Globals a pickle of plain numpy data may need (numpy 1.x and 2.x module paths).
NUMPY_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("builtins", "slice"),
        ("_codecs", "encode"),  # Python-2 pickles of byte strings under encoding='latin1'
    }
)

# scipy.sparse matrices as pickled by scipy (SMPL's J_regressor, mesh_downsampling.npz).
SCIPY_SPARSE_GLOBALS = frozenset(
    (module, name)
    for module in ("scipy.sparse.csc", "scipy.sparse.csr", "scipy.sparse.coo",
                   "scipy.sparse._csc", "scipy.sparse._csr", "scipy.sparse._coo")
    for name in ("csc_matrix", "csr_matrix", "coo_matrix")
)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals; `stubs` maps (module, name) to a
    stand-in class (e.g. chumpy's `Ch` to an object exposing the array)."""

    def __init__(self, file, *, path: str, allowed: frozenset, stubs: Mapping | None = None,
                 encoding: str = "latin1"):
        super().__init__(file, encoding=encoding)
        self._path, self._allowed, self._stubs = path, allowed, dict(stubs or {})

    def find_class(self, module: str, name: str):
        if (module, name) in self._stubs:
            return self._stubs[(module, name)]
        if (module, name) in self._allowed:
            return super().find_class(module, name)
        raise UnsafePickleError(
            self._path, f"refusing to load global '{module}.{name}' (not plain data; the file "
            "may try to run code)"
        )


def safe_load_pickle(path: str | os.PathLike, allowed: frozenset = NUMPY_GLOBALS,
                     stubs: Mapping | None = None):
    """Load a (Python 2 or 3) pickle of plain data, refusing anything outside `allowed`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    with open(path, "rb") as f:
        try:
            return RestrictedUnpickler(f, path=str(path), allowed=allowed, stubs=stubs).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                IndexError, KeyError, UnicodeDecodeError) as e:
            raise DataError(path, f"not a readable pickle (truncated or corrupt?): {e}") from e


# torch's weights-only refusal: the global it would not load, or the opcode it does not know.
_TORCH_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_TORCH_OPERAND = re.compile(r"Unsupported operand (\d+)")


def load_torch_file(path: str | os.PathLike, what: str = "checkpoint",
                    map_location="cpu") -> object:
    """`torch.load(path, weights_only=True)`, every error one line naming the file: a file that
    holds code or Python objects other than tensors and plain containers is refused without
    running anything (and without torch's advice to retry with weights_only=False, which would
    run it); a truncated or foreign file is "not a readable <what>". Missing files are the
    caller's to report (each names what it expected)."""
    import torch  # heavy: only the modules that read model files pay for it

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # the weights-only unpickler refused (or choked on) it
        text = str(e)
        operand = _TORCH_OPERAND.search(text)
        if operand and not _TORCH_GLOBAL.search(text):   # bytes that are no torch file at all
            raise DataError(path, f"not a readable {what} (truncated or corrupt? unknown pickle "
                            f"opcode {operand.group(1)})") from None
        found = _TORCH_GLOBAL.search(text)
        named = f"it asks for '{found.group(1)}'; " if found else ""
        raise DataError(path, f"refusing to load: it holds code or Python objects not allowed in "
                        f"a {what} ({named}only tensors and plain containers are allowed): the "
                        "file may try to run code, and nothing in it was run") from None
    except Exception as e:  # noqa: BLE001 - anything else unreadable is a data error, one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ", 1)[0]
        raise DataError(path, f"not a readable {what} (truncated or corrupt?): "
                        f"{first[:200]}") from e


def load_npz_restricted(path: str | os.PathLike, allowed: frozenset,
                        keys: tuple[str, ...] | None = None,
                        stubs: Mapping | None = None) -> dict[str, object]:
    """Read the arrays `keys` of an .npz (all when None); object arrays go through the
    restricted unpickler (with `stubs`, see `RestrictedUnpickler`). Members not in `keys` are
    never read, so a pickled member nobody needs (mesh_downsampling.npz's `M`, which names
    `__main__.MyMesh`) does not stop the file from loading."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    out: dict[str, object] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                key = member[:-4] if member.endswith(".npy") else member
                if keys is not None and key not in keys:
                    continue
                with zf.open(member) as raw:
                    fp = io.BytesIO(raw.read())
                version = np.lib.format.read_magic(fp)
                if version == (1, 0):
                    _, _, dtype = np.lib.format.read_array_header_1_0(fp)
                elif version == (2, 0):
                    _, _, dtype = np.lib.format.read_array_header_2_0(fp)
                else:
                    raise DataError(path, f"unsupported .npy format version {version}",
                                    field=key)
                if dtype.hasobject:
                    out[key] = RestrictedUnpickler(fp, path=f"{path}[{key}]", allowed=allowed,
                                                   stubs=stubs, encoding="latin1").load()
                else:
                    fp.seek(0)
                    out[key] = np.lib.format.read_array(fp, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, pickle.UnpicklingError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(path, f"not a readable .npz (truncated or corrupt?): {e}") from e
    return out
