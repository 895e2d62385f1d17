"""Read and write SMPL model files without chumpy and without trusting pickles.

* `load_smpl_file(path)`: the official `.pkl` (a Python-2 pickle whose arrays are partly chumpy
  objects) or a plain `.npz`; returns plain numpy arrays (J_regressor as scipy csc). Pickles go
  through `stdformer.safe_loading.safe_load_pickle`: numpy and scipy.sparse globals are allowed, chumpy
  classes become `ChumpyStub` (its state holds the array under 'x'), everything else is refused.
* `convert_smpl(src, dst)`: write the arrays as a pickle-free `.npz`.
* `write_smpl_pkl(arrays, path)`: write a pickle in SMPL file layout that `smplx.SMPL` loads.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import scipy.sparse

from stdformer.io import DataError, load_npz, save_npz_atomic, write_bytes_atomic
from stdformer.safe_loading import NUMPY_GLOBALS, SCIPY_SPARSE_GLOBALS, UnsafePickleError, safe_load_pickle

SMPL_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights",
             "kintree_table")

# Every class chumpy defines (chumpy 0.70: ch, ch_ops, reordering, linalg, logic); an official
# SMPL pickle names some of them. They all load as `ChumpyStub`.
_CHUMPY_CLASSES = {
    "chumpy": ["Ch"],
    "chumpy.ch": ["Ch", "ChHandle", "ChLambda", "MatVecMult", "Term"],
    "chumpy.ch_ops": [
        "Simpleton", "floor", "ceil", "sign", "Cross", "cumsum", "UnaryElemwise", "nan_to_num",
        "reciprocal", "square", "sqrt", "exp", "log", "sin", "arcsin", "cos", "arccos", "tan",
        "arctan", "negative", "absolute", "clip", "sum", "mean", "SumOfSquares", "divide",
        "NanDivide", "add", "subtract", "multiply", "power", "dot", "amax", "amin", "maximum",
        "minimum", "nanmax", "nanmin", "greater", "greater_equal", "less", "less_equal",
        "equal", "not_equal", "Ch",
    ],
    "chumpy.reordering": ["Permute", "Reorder", "Sort", "Tile", "Diag", "DiagFlat", "Repeat",
                          "transpose", "rollaxis", "swapaxes", "Roll", "Rot90", "Reshape",
                          "Select", "AtleastNd", "Concatenate"],
    "chumpy.linalg": ["Inv", "Svd", "SvdComputer", "LogAbsDet", "SlogDet", "Pinv", "inv",
                      "svd", "slogdet", "det", "norm", "lstsq", "pinv"],
    "chumpy.logic": ["LogicalOp", "logical_and", "logical_or", "logical_not", "logical_xor"],
}


class ChumpyStub:
    """Stand-in for any chumpy class: keeps the pickled state; `.array` recovers the value.

    A chumpy `Ch` pickles its `__dict__` (minus caches); the value lives under 'x'. Derived
    chumpy expressions (sums, products, ...) are not evaluated: SMPL files store plain `Ch`.
    """

    __slots__ = ("state",)
    chumpy_class = "chumpy"  # set per stub class, e.g. "chumpy.ch.Ch"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.state = {}
        return obj

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots) form
            state = {**(state[0] or {}), **(state[1] or {})}
        self.state = dict(state) if isinstance(state, dict) else {"x": state}

    @property
    def array(self) -> np.ndarray:
        s, kind = self.state, self.chumpy_class.rsplit(".", 1)[-1]
        if "x" in s and kind in ("Ch", "ChHandle"):
            return np.asarray(_as_plain(s["x"]))
        # Pure reorderings of another value are cheap to replay; nothing else is evaluated.
        if kind == "Reshape":
            return self._arg("a").reshape(s["newshape"])
        if kind == "Select":
            r = self._arg("a").ravel()[np.asarray(s["idxs"]).ravel()]
            return r.reshape(s["preferred_shape"]) if "preferred_shape" in s else r
        if kind == "transpose":
            return np.transpose(self._arg("a"), s.get("axes"))
        raise ValueError(f"chumpy {self.chumpy_class} expression is not a stored array "
                         f"(fields: {sorted(map(str, s))}); re-save the file with plain arrays")

    def _arg(self, name: str) -> np.ndarray:
        return np.asarray(_as_plain(self.state[name]))


def _stub_class(module: str, name: str) -> type:
    # A distinct subclass per chumpy class keeps the name for error messages.
    return type(name, (ChumpyStub,), {"__slots__": (), "chumpy_class": f"{module}.{name}"})


def _safe_reconstructor(cls, base, state):
    """Python-2 `copy_reg._reconstructor` (protocol 0/1 pickles of plain objects), limited to
    chumpy stubs and scipy sparse matrices built on `object`: creates the empty instance only,
    its state is set by the pickle's BUILD step."""
    plain = isinstance(cls, type) and (issubclass(cls, ChumpyStub)
                                       or issubclass(cls, scipy.sparse.spmatrix))
    if not plain or base is not object or state is not None:
        raise pickle.UnpicklingError(f"copy_reg._reconstructor of {cls!r} is not allowed")
    return cls.__new__(cls) if issubclass(cls, ChumpyStub) else object.__new__(cls)


def pickle_stubs() -> dict:
    stubs = {(m, n): _stub_class(m, n) for m, names in _CHUMPY_CLASSES.items() for n in names}
    # Python-2 era module paths of scipy's sparse classes (deprecated, gone in SciPy 2).
    for fmt in ("csc", "csr", "coo"):
        stubs[(f"scipy.sparse.{fmt}", f"{fmt}_matrix")] = getattr(scipy.sparse, f"{fmt}_matrix")
    for module in ("copy_reg", "copyreg"):
        stubs[(module, "_reconstructor")] = _safe_reconstructor
    for module in ("__builtin__", "builtins"):
        stubs[(module, "object")] = object
        stubs[(module, "set")] = set
        stubs[(module, "frozenset")] = frozenset
    return stubs


ALLOWED_GLOBALS = NUMPY_GLOBALS | SCIPY_SPARSE_GLOBALS


def _as_plain(value):
    """chumpy stub / scipy sparse / array-like -> numpy array or scipy csc (sparse kept)."""
    if isinstance(value, ChumpyStub):
        return value.array
    if scipy.sparse.issparse(value):
        return _rebuild_sparse(value)
    return value


def _rebuild_sparse(m):
    """A fresh csc from an unpickled sparse matrix (whose attributes may come from an older
    scipy): read its stored arrays rather than trusting its methods."""
    d = m.__dict__
    fmt = type(m).__name__[:3]
    shape = tuple(int(s) for s in d.get("_shape", d.get("shape")))
    if fmt in ("csc", "csr"):
        cls = scipy.sparse.csc_matrix if fmt == "csc" else scipy.sparse.csr_matrix
        out = cls((np.asarray(d["data"]), np.asarray(d["indices"]), np.asarray(d["indptr"])),
                  shape=shape)
    else:  # coo: scipy >= 1.13 stores `coords`, older versions `row` and `col`
        row, col = d["coords"] if "coords" in d else (d["row"], d["col"])
        out = scipy.sparse.coo_matrix((np.asarray(d["data"]), (np.asarray(row),
                                                               np.asarray(col))), shape=shape)
    return out.tocsc()


def load_smpl_file(path: str | os.PathLike) -> dict:
    """Load an SMPL model (`.pkl` official/SMPL layout, or `.npz`) as plain arrays.

    Returns v_template (V, 3) float64, f (F, 3) uint32, shapedirs (V, 3, B) float64,
    posedirs (V, 3, 207) float64, J_regressor scipy csc (24, V) float64, weights (V, 24)
    float64, kintree_table (2, 24) int64. Raises DataError (file and key) on bad content and
    UnsafePickleError for pickles that reference anything but plain data.
    """
    path = Path(path)
    if path.suffix == ".npz":
        raw = load_npz(path, required=SMPL_KEYS)
    else:
        raw = safe_load_pickle(path, allowed=ALLOWED_GLOBALS, stubs=pickle_stubs())
        if not isinstance(raw, dict):
            raise DataError(path, f"expected a dict of arrays, got {type(raw).__name__}")
        raw = {str(k): v for k, v in raw.items()}
    return validate_smpl_arrays(raw, path)


def validate_smpl_arrays(raw: dict, path: str | os.PathLike = "<arrays>") -> dict:
    """Check keys, shapes and values; return the canonical dtypes (see `load_smpl_file`)."""
    out = {}
    for key in SMPL_KEYS:
        if key not in raw:
            raise DataError(path, "missing array", field=key)
        try:
            value = _as_plain(raw[key])
            if key == "J_regressor":
                value = scipy.sparse.csc_matrix(value, dtype=np.float64)
            else:
                value = np.asarray(value)
                if value.dtype == object:
                    raise ValueError("holds Python objects, not numbers")
        except (ValueError, TypeError, KeyError) as e:
            raise DataError(path, f"not a numeric array: {e}", field=key) from e
        out[key] = value

    V = out["v_template"].shape[0] if out["v_template"].ndim == 2 else -1
    expect = {
        "v_template": (V, 3), "f": (None, 3), "shapedirs": (V, 3, None),
        "posedirs": (V, 3, 207), "J_regressor": (24, V), "weights": (V, 24),
        "kintree_table": (2, 24),
    }
    for key, shape in expect.items():
        got = out[key].shape
        if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise DataError(path, f"expected shape {want}, got {tuple(got)}", field=key)
    if V < 4:
        raise DataError(path, f"expected at least 4 vertices, got {V}", field="v_template")
    for key in ("v_template", "shapedirs", "posedirs", "weights"):
        if not np.issubdtype(out[key].dtype, np.number) or not np.all(np.isfinite(out[key])):
            raise DataError(path, "non-finite or non-numeric values", field=key)
        out[key] = out[key].astype(np.float64, copy=False)  # no 35 MB copy when already so
    faces = out["f"]
    if not np.issubdtype(faces.dtype, np.integer) or faces.min() < 0 or faces.max() >= V:
        raise DataError(path, f"face indices must be integers in [0, {V})", field="f")
    out["f"] = faces.astype(np.uint32)
    if not np.all(np.isfinite(out["J_regressor"].data)):
        raise DataError(path, "non-finite values", field="J_regressor")
    kt = out["kintree_table"].astype(np.int64)
    parents = kt[0, 1:]
    if np.any(parents < 0) or np.any(parents >= np.arange(1, 24)):
        raise DataError(path, "parents must precede their children", field="kintree_table")
    out["kintree_table"] = kt
    return out


def _plain_arrays(arrays: dict) -> dict[str, np.ndarray]:
    """The SMPL arrays as a pickle-free dict (J_regressor dense)."""
    out = {}
    for key in SMPL_KEYS:
        v = arrays[key]
        out[key] = v.toarray() if scipy.sparse.issparse(v) else np.asarray(v)
    return out


def convert_smpl(src: str | os.PathLike, dst: str | os.PathLike) -> dict:
    """Convert an SMPL file (official `.pkl` or `.npz`) to a plain `.npz` (np.load without
    allow_pickle reads it; smplx reads it via `data_struct=Struct(**np.load(dst))`)."""
    arrays = load_smpl_file(src)
    save_npz_atomic(dst, _plain_arrays(arrays))
    return arrays


def smpl_pickle_bytes(arrays: dict) -> bytes:
    """Pickle bytes in SMPL file layout (dict of numpy arrays, J_regressor scipy csc)."""
    data = {}
    for key in SMPL_KEYS:
        v = arrays[key]
        if key == "J_regressor":
            v = scipy.sparse.csc_matrix(v, dtype=np.float64)
        elif key == "f":
            v = np.ascontiguousarray(v, dtype=np.uint32)
        elif key == "kintree_table":
            v = np.ascontiguousarray(v, dtype=np.int64)
        else:
            v = np.ascontiguousarray(v, dtype=np.float64)
        data[key] = v
    if "J" in arrays:
        data["J"] = np.ascontiguousarray(arrays["J"], dtype=np.float64)
    data["bs_style"], data["bs_type"] = "lbs", "lrotmin"
    return pickle.dumps(data, protocol=4)


def write_smpl_pkl(arrays: dict, path: str | os.PathLike) -> None:
    """Write `arrays` (SMPL keys) as an SMPL-format pickle, atomically.

    `smplx.SMPL(model_path=path)` and `smplx.create(dir, 'smpl')` (for
    dir/smpl/SMPL_NEUTRAL.pkl) load it; `load_smpl_file` reads it back without executing code.
    """
    checked = validate_smpl_arrays(arrays, path)
    if "J" in arrays:
        checked["J"] = arrays["J"]
    write_bytes_atomic(path, smpl_pickle_bytes(checked))


__all__ = ["SMPL_KEYS", "ChumpyStub", "UnsafePickleError", "load_smpl_file", "convert_smpl",
           "write_smpl_pkl", "validate_smpl_arrays", "smpl_pickle_bytes"]
