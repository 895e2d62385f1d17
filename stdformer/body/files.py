"""The body directory (`data/body/`) and the params section `body` that describes it.

    body_dir/
      smpl/SMPL_NEUTRAL.pkl  SMPL file layout: smplx.create(body_dir, 'smpl') loads it
      model.npz              the same arrays, pickle-free (J_regressor dense)
      regressors.npz         J_regressor (24, V), J_regressor_h36m (17, V)
      hierarchy.npz          MeshHierarchy (pickle-free)
      mirror.npz             flip permutations vertices (V,), smpl (24,), h36m (17,); absent
                             when the template is not mirror-symmetric enough to flip
      meta.json              source, body_model_id, levels (vertex counts), seed, checks
                             (what `stdformer.body.checks` / `mirror` measured), ...

Sources: "procedural" (license-free, built from `seed` and `resolution`) or a path to the user's
own SMPL file (.pkl or .npz), which then needs `h36m_regressor` (J_regressor_h36m_correct.npy)
and optionally `mesh_downsampling` (the standard GraphCMR/METRO mesh_downsampling.npz).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import scipy.sparse

from stdformer.body.checks import (check_h36m_regressor, check_hierarchy_fits,
                                   standard_smpl_hierarchy)
from stdformer.body.constants import NUM_BETAS
from stdformer.body.hierarchy import build_hierarchy, load_mesh_downsampling
from stdformer.body.mirror import body_flip_perms
from stdformer.body.model import arrays_digest
from stdformer.body.procedural import (
    DEFAULT_RESOLUTION, derive_h36m_regressor, make_procedural_body,
)
from stdformer.body.smpl_files import (
    _plain_arrays, load_smpl_file, smpl_pickle_bytes, validate_smpl_arrays,
)
from stdformer.io import DataError, atomic_output, file_digest, npz_bytes


@dataclasses.dataclass
class BodyConfig:
    """params.yaml section `body`."""

    source: str = "procedural"          # "procedural" or a path to SMPL_NEUTRAL.pkl / .npz
    seed: int = 0                       # procedural body only
    resolution: int = DEFAULT_RESOLUTION  # procedural body: number of mesh vertices
    h36m_regressor: str | None = None   # J_regressor_h36m_correct.npy (needed for real SMPL)
    mesh_downsampling: str | None = None  # mesh_downsampling.npz (real SMPL, optional)
    downsample_factors: list[int] = dataclasses.field(default_factory=lambda: [4, 4])

    def validate(self) -> None:
        if not self.source:
            raise ValueError("source must be 'procedural' or a path to an SMPL model file")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not 500 <= self.resolution <= 100_000:
            raise ValueError(f"resolution must be in [500, 100000] vertices, got "
                             f"{self.resolution}")
        if not self.downsample_factors or any(f < 2 for f in self.downsample_factors):
            raise ValueError(f"downsample_factors must be a non-empty list of integers >= 2, "
                             f"got {self.downsample_factors}")
        if self.source != "procedural" and self.h36m_regressor is None:
            raise ValueError("a real SMPL source needs h36m_regressor "
                             "(path to J_regressor_h36m_correct.npy)")


def load_h36m_regressor(path: str | os.PathLike, num_vertices: int) -> np.ndarray:
    """(17, V) float64 from a `.npy` (no pickles) or `.npz` (key J_regressor_h36m)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                key = "J_regressor_h36m" if "J_regressor_h36m" in z.files else z.files[0]
                reg = z[key]
        else:
            reg = np.load(path, allow_pickle=False)
    except (ValueError, OSError, IndexError) as e:
        raise DataError(path, f"not a plain numeric .npy/.npz array: {e}") from e
    if reg.shape != (17, num_vertices):
        raise DataError(path, f"expected shape (17, {num_vertices}), got {reg.shape}",
                        field="J_regressor_h36m")
    if not np.issubdtype(reg.dtype, np.number) or not np.all(np.isfinite(reg)):
        raise DataError(path, "non-finite or non-numeric values", field="J_regressor_h36m")
    return reg.astype(np.float64)


def _load_source(source: str, seed: int, resolution: int, h36m_regressor):
    """SMPL arrays, H36M regressor (17, V) dense and meta fields for the chosen source."""
    if source == "procedural":
        arrays = make_procedural_body(seed=seed, resolution=resolution)
        V = arrays["v_template"].shape[0]
        if h36m_regressor is not None:
            h36m = load_h36m_regressor(h36m_regressor, V)
        else:
            h36m = derive_h36m_regressor(arrays).toarray()
        meta = {"source": "procedural", "seed": seed, "resolution": resolution}
        return arrays, h36m, meta
    path = Path(source)
    if not path.is_file():
        raise DataError(path, "SMPL model file not found (body.source must be 'procedural' or "
                        "a path to your SMPL_NEUTRAL.pkl / .npz)")
    arrays = load_smpl_file(path)
    V = arrays["v_template"].shape[0]
    if h36m_regressor is None:
        raise DataError(path, "a real SMPL body needs the H36M joint regressor: set "
                        "body.h36m_regressor to your J_regressor_h36m_correct.npy",
                        field="h36m_regressor")
    h36m = load_h36m_regressor(h36m_regressor, V)
    meta = {"source": "smpl", "source_file": path.name, "source_sha256": file_digest(path),
            "seed": None, "resolution": V}
    return arrays, h36m, meta


def write_body_dir(out_dir: str | os.PathLike, source: str = "procedural", seed: int = 0,
                   resolution: int = DEFAULT_RESOLUTION, h36m_regressor=None,
                   mesh_downsampling=None, factors=(4, 4)) -> dict:
    """Write the body directory atomically (see module docstring); returns meta.json's dict.

    The files must belong together (`stdformer.body.checks`): a hierarchy or regressor that
    does not fit the template is refused, naming both files. Deterministic: the same inputs
    give the same bytes.
    """
    arrays, h36m, meta = _load_source(str(source), seed, resolution, h36m_regressor)
    arrays = validate_smpl_arrays(arrays)
    if arrays["shapedirs"].shape[2] > NUM_BETAS:
        arrays["shapedirs"] = arrays["shapedirs"][:, :, :NUM_BETAS]
    template, faces = arrays["v_template"], arrays["f"].astype(np.int64)
    V = template.shape[0]
    body_file = (str(source) if meta["source"] == "smpl"
                 else f"the procedural body (seed {seed}, {V} vertices)")
    if mesh_downsampling is not None:
        hierarchy = load_mesh_downsampling(mesh_downsampling)
        if hierarchy.num_vertices[0] != V:
            raise DataError(mesh_downsampling, f"level 0 has {hierarchy.num_vertices[0]} "
                            f"vertices but the body ({body_file}) has {V}", field="F[0]")
    else:
        hierarchy = build_hierarchy(template, faces, tuple(int(f) for f in factors))
    regressor_file = str(h36m_regressor) if h36m_regressor is not None else "the derived regressor"
    checks = {
        "hierarchy_fit": check_hierarchy_fits(
            template, faces, hierarchy, mesh_downsampling or "the built hierarchy", body_file),
        "h36m_regressor": check_h36m_regressor(h36m, template, regressor_file, body_file),
    }
    flip_perms, checks["mirror"] = body_flip_perms(
        template, faces, scipy.sparse.csr_matrix(arrays["J_regressor"]) @ template,
        h36m @ template, body_file, regressor_file)
    hier_arrays = hierarchy.to_arrays()
    plain = _plain_arrays(arrays)
    regs = {"J_regressor": plain["J_regressor"], "J_regressor_h36m": h36m}
    body_model_id = arrays_digest({"model": validate_smpl_arrays(plain), "regressors": {
        "J_regressor_h36m": h36m}, "hierarchy": hier_arrays})
    meta = {**meta, "body_model_id": body_model_id, "levels": hierarchy.num_vertices,
            "num_faces": [int(len(f)) for f in hierarchy.faces],
            "hierarchy": "mesh_downsampling.npz" if mesh_downsampling is not None else
            f"built, factors {list(int(f) for f in factors)}",
            "hierarchy_file": Path(mesh_downsampling).name if mesh_downsampling else None,
            "hierarchy_sha256": file_digest(mesh_downsampling) if mesh_downsampling else None,
            "checks": checks}
    standard, why = standard_smpl_hierarchy(meta)
    meta["standard_smpl_hierarchy"] = {"ok": standard, "why": why}
    pkl_arrays = {**arrays}
    if "J" not in pkl_arrays:
        pkl_arrays["J"] = scipy.sparse.csr_matrix(arrays["J_regressor"]) @ arrays["v_template"]
    with atomic_output(out_dir, directory=True) as tmp:
        (tmp / "smpl").mkdir()
        (tmp / "smpl" / "SMPL_NEUTRAL.pkl").write_bytes(smpl_pickle_bytes(pkl_arrays))
        (tmp / "model.npz").write_bytes(npz_bytes(plain))
        (tmp / "regressors.npz").write_bytes(npz_bytes(regs))
        (tmp / "hierarchy.npz").write_bytes(npz_bytes(hier_arrays))
        if flip_perms is not None:
            (tmp / "mirror.npz").write_bytes(npz_bytes(flip_perms))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def write_body_dir_from_config(out_dir: str | os.PathLike, cfg: BodyConfig) -> dict:
    return write_body_dir(out_dir, source=cfg.source, seed=cfg.seed, resolution=cfg.resolution,
                          h36m_regressor=cfg.h36m_regressor,
                          mesh_downsampling=cfg.mesh_downsampling,
                          factors=tuple(cfg.downsample_factors))


__all__ = ["BodyConfig", "write_body_dir", "write_body_dir_from_config", "load_h36m_regressor"]
