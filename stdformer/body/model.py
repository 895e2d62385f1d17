"""`BodyModel`: the SMPL-format body (procedural or the user's SMPL) as a fixed torch module.

    body = BodyModel.from_dir("data/body")
    out = body(pose (B, 72), betas (B, 10), trans (B, 3) | None)
    out.vertices (B, V, 3), out.joints (B, 24, 3), out.joints_h36m (B, 17, 3)
    body.shard_mesh(pose (..., 72), betas (..., 10))   # shard targets' mesh, pelvis-relative

Posing runs through `smplx.SMPL` (linear blend skinning with shape and pose blend shapes). The
module holds no trainable parameters and an empty state_dict: it is a fixed asset identified by
`body_model_id` (a digest of its arrays), so checkpoints stay small and a checkpoint can refuse a
body it was not trained with.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse
import torch

from stdformer.body.hierarchy import MeshHierarchy
from stdformer.body.mirror import body_flip_perms
from stdformer.body.smpl_files import SMPL_KEYS, validate_smpl_arrays
from stdformer.io import DataError, load_npz, read_json

SMPL_NUM_VERTICES = 6890


class BodyOutput(NamedTuple):
    vertices: torch.Tensor     # (B, V, 3)
    joints: torch.Tensor       # (B, 24, 3) SMPL joints
    joints_h36m: torch.Tensor  # (B, 17, 3) Human3.6M joints regressed from the vertices


def arrays_digest(groups: dict[str, dict[str, np.ndarray]], length: int = 16) -> str:
    """Short sha256 over named groups of arrays (sorted names; dtype, shape and bytes)."""
    h = hashlib.sha256()
    for group in sorted(groups):
        for key in sorted(groups[group]):
            a = groups[group][key]
            a = np.ascontiguousarray(a.toarray() if scipy.sparse.issparse(a) else a)
            h.update(f"{group}/{key}:{a.dtype.str}:{a.shape};".encode())
            h.update(a)  # the buffer itself: no copy (35 MB of pose correctives)
    return h.hexdigest()[:length]


def landmark_vertex_ids(vertices: np.ndarray, weights: np.ndarray) -> dict[str, int]:
    """Vertex ids for smplx's extra keypoints (nose, eyes, ears, finger tips, toes, heels),
    picked from the geometry of any SMPL-like mesh (used where SMPL's own ids do not apply)."""
    v = np.asarray(vertices)
    part = np.argmax(weights, axis=1)

    def pick(mask: np.ndarray, score: np.ndarray) -> int:
        ids = np.flatnonzero(mask)
        if len(ids) == 0:
            ids, score = np.arange(len(v)), score
            return int(np.argmax(score))
        return int(ids[np.argmax(score[ids])])

    head = part == 15
    ids = {"nose": pick(head, v[:, 2])}
    nose = v[ids["nose"]]
    for name, side in (("leye", 1.0), ("reye", -1.0)):
        target = nose + np.array([0.03 * side, 0.035, -0.02])
        ids[name] = pick(head, -np.linalg.norm(v - target, axis=1))
    ids["lear"] = pick(head, v[:, 0])
    ids["rear"] = pick(head, -v[:, 0])
    for side, sign, hand_joints in (("l", 1.0, (20, 22)), ("r", -1.0, (21, 23))):
        tip = pick(np.isin(part, hand_joints), sign * v[:, 0])
        for finger in ("thumb", "index", "middle", "ring", "pinky"):
            ids[side + finger] = tip
    for side, sign, foot_joints in (("L", 1.0, (7, 10)), ("R", -1.0, (8, 11))):
        foot = np.isin(part, foot_joints)
        mid = np.median(v[foot, 0]) if foot.any() else 0.0
        inner = foot & (sign * (v[:, 0] - mid) <= 0)
        outer = foot & (sign * (v[:, 0] - mid) > 0)
        ids[side + "BigToe"] = pick(inner, v[:, 2])
        ids[side + "SmallToe"] = pick(outer, v[:, 2])
        ids[side + "Heel"] = pick(foot, -v[:, 2])
    return ids


def _load_flip_perms(body_dir: Path, meta: dict) -> tuple[dict | None, str | None]:
    """(flip permutations from mirror.npz, None) or (None, why the body cannot be flipped).
    A directory without mirror.npz still loads (inference never flips; a served model carries
    only the files it needs)."""
    mirror = meta.get("checks", {}).get("mirror")
    if mirror is None:
        return None, ("no mirror check recorded (written by an older version): rebuild the "
                      "body directory (dvc repro -f body)")
    if not mirror.get("ok"):
        return None, mirror.get("reason")
    path = body_dir / "mirror.npz"
    if not path.is_file():
        return None, f"{path} is missing"
    perms = {k: np.asarray(v, np.int64)
             for k, v in load_npz(path, required=("vertices", "smpl", "h36m")).items()}
    for name, perm in perms.items():
        if not np.array_equal(np.sort(perm), np.arange(len(perm))) or \
                not np.array_equal(perm[perm], np.arange(len(perm))):
            raise DataError(path, "not an involution of the vertices / joints", field=name)
    return perms, None


class BodyFiles(NamedTuple):
    """A body directory's arrays, checked against its meta.json (`read_body_dir`)."""

    meta: dict                     # meta.json
    arrays: dict                   # SMPL arrays, `validate_smpl_arrays`' dtypes
    J_regressor_h36m: np.ndarray   # (17, V) as stored in regressors.npz
    hierarchy: MeshHierarchy
    body_model_id: str             # = meta["body_model_id"], the digest of the arrays


def read_body_dir(body_dir: str | os.PathLike) -> BodyFiles:
    """The files of a directory written by `write_body_dir` (model.npz, regressors.npz,
    hierarchy.npz, meta.json), validated; refuses arrays whose digest differs from meta.json.
    What `BodyModel.from_dir` builds the module from, and all that posing arrays need."""
    body_dir = Path(body_dir)
    meta = read_json(body_dir / "meta.json", produced_by="the body stage")
    model_path = body_dir / "model.npz"
    arrays = validate_smpl_arrays(load_npz(model_path, required=SMPL_KEYS), model_path)
    regs = load_npz(body_dir / "regressors.npz", required=("J_regressor", "J_regressor_h36m"))
    hierarchy = MeshHierarchy.load(body_dir / "hierarchy.npz")
    digest = arrays_digest({"model": arrays, "regressors": {
        "J_regressor_h36m": regs["J_regressor_h36m"]}, "hierarchy": hierarchy.to_arrays()})
    if meta.get("body_model_id") != digest:
        raise DataError(body_dir / "meta.json", f"body_model_id {meta.get('body_model_id')!r} "
                        f"does not match the arrays (digest {digest}); rebuild the body directory",
                        field="body_model_id")
    return BodyFiles(meta, arrays, regs["J_regressor_h36m"], hierarchy, digest)


def _sparse_tensor(m, dtype=torch.float32) -> torch.Tensor:
    m = scipy.sparse.coo_matrix(m)
    idx = torch.from_numpy(np.stack([m.row, m.col]).astype(np.int64))
    return torch.sparse_coo_tensor(idx, torch.from_numpy(m.data).to(dtype), m.shape,
                                   check_invariants=True).coalesce()


def _apply_sparse(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(N, M) sparse @ x (B, M, C) -> (B, N, C)."""
    B, M, C = x.shape
    flat = x.permute(1, 0, 2).reshape(M, B * C)
    out = torch.sparse.mm(m, flat.to(m.dtype))
    return out.reshape(m.shape[0], B, C).permute(1, 0, 2).to(x.dtype)


class BodyModel(torch.nn.Module):
    """SMPL-format body: posing, joint regressors, mesh hierarchy, labels, flip permutations.

    Attributes: body_model_id (str), num_vertices (int), faces (F, 3) long, hierarchy
    (MeshHierarchy), part_labels (V,) long (argmax skinning weight), flip_perms ({"vertices"
    (V,), "smpl" (24,), "h36m" (17,)} int64 arrays, `stdformer.body.mirror`; None when the
    template is not mirror-symmetric enough, `flip_error` says why), J_regressor_h36m (17, V)
    float, meta (dict, meta.json). The smplx module is `self.smpl`.
    """

    def __init__(self, arrays: dict, J_regressor_h36m, hierarchy: MeshHierarchy,
                 body_model_id: str | None = None, vertex_ids: dict | None = None,
                 source: str = "<arrays>", flip_perms: dict | None = None,
                 flip_error: str | None = None):
        super().__init__()
        import smplx

        arrays = validate_smpl_arrays(arrays, source)
        V = arrays["v_template"].shape[0]
        h36m = J_regressor_h36m
        h36m = h36m.toarray() if scipy.sparse.issparse(h36m) else np.asarray(h36m)
        if h36m.shape != (17, V):
            raise DataError(source, f"expected shape (17, {V}), got {h36m.shape}",
                            field="J_regressor_h36m")
        if hierarchy.num_vertices[0] != V:
            raise DataError(source, f"hierarchy level 0 has {hierarchy.num_vertices[0]} "
                            f"vertices, the body {V}", field="hierarchy")
        if vertex_ids is None and V != SMPL_NUM_VERTICES:
            vertex_ids = landmark_vertex_ids(arrays["v_template"], arrays["weights"])
        struct_arrays = dict(arrays)
        struct_arrays["shapedirs"] = arrays["shapedirs"][:, :, :10]
        with contextlib.redirect_stdout(io.StringIO()):  # smplx prints on every build
            self.smpl = smplx.SMPL(
                model_path="", data_struct=smplx.utils.Struct(**struct_arrays),
                vertex_ids=vertex_ids, create_betas=False, create_body_pose=False,
                create_global_orient=False, create_transl=False, num_betas=10)
        self.body_model_id = body_model_id or arrays_digest(
            {"model": arrays, "regressors": {"J_regressor_h36m": h36m},
             "hierarchy": hierarchy.to_arrays()})
        self.meta: dict = {}  # meta.json when loaded with from_dir
        self.num_vertices = V
        self.num_betas = min(10, arrays["shapedirs"].shape[2])
        self.hierarchy = hierarchy
        self.register_buffer("faces", torch.from_numpy(arrays["f"].astype(np.int64)),
                             persistent=False)
        self.register_buffer("J_regressor_h36m", torch.from_numpy(h36m.astype(np.float32)),
                             persistent=False)
        self.register_buffer("part_labels",
                             torch.from_numpy(np.argmax(arrays["weights"], 1).astype(np.int64)),
                             persistent=False)
        if flip_perms is None and flip_error is None:
            template = arrays["v_template"]
            flip_perms, report = body_flip_perms(
                template, arrays["f"].astype(np.int64), arrays["J_regressor"] @ template,
                h36m @ template, str(source), str(source))
            flip_error = report.get("reason")
        self.source = str(source)
        self.flip_perms, self.flip_error = flip_perms, flip_error
        # Composite level-0 <-> level-l maps, as sparse tensors.
        down, up = scipy.sparse.identity(V, format="csr"), scipy.sparse.identity(V, format="csr")
        for level in range(1, hierarchy.num_levels):
            down = hierarchy.down[level - 1] @ down
            up = up @ hierarchy.up[level - 1]
            self.register_buffer(f"_down_{level}", _sparse_tensor(down), persistent=False)
            self.register_buffer(f"_up_{level}", _sparse_tensor(up), persistent=False)
        # The smplx module's buffers are derived from the files: keep them out of state_dict.
        for module in self.smpl.modules():
            module._non_persistent_buffers_set.update(module._buffers.keys())

    # ---- construction --------------------------------------------------------------------

    @classmethod
    def from_dir(cls, body_dir: str | os.PathLike) -> "BodyModel":
        """Load a directory written by `write_body_dir` (model.npz, regressors.npz,
        hierarchy.npz, meta.json); refuses files whose digest differs from meta.json."""
        files = read_body_dir(body_dir)
        # smplx's extra keypoints need vertex ids; SMPL's own apply only to the real mesh.
        vertex_ids = None
        if files.meta.get("source") == "procedural":
            vertex_ids = landmark_vertex_ids(files.arrays["v_template"], files.arrays["weights"])
        flip_perms, flip_error = _load_flip_perms(Path(body_dir), files.meta)
        body = cls(files.arrays, files.J_regressor_h36m, files.hierarchy,
                   body_model_id=files.body_model_id, vertex_ids=vertex_ids,
                   source=str(body_dir), flip_perms=flip_perms, flip_error=flip_error)
        body.meta = files.meta
        return body

    # ---- posing --------------------------------------------------------------------------

    def forward(self, pose: torch.Tensor, betas: torch.Tensor | None = None,
                trans: torch.Tensor | None = None) -> BodyOutput:
        """pose (B, 72) axis-angle (global orientation first), betas (B, 10) or None (zeros),
        trans (B, 3) or None -> BodyOutput (vertices (B, V, 3), joints (B, 24, 3),
        joints_h36m (B, 17, 3))."""
        if pose.ndim != 2 or pose.shape[1] != 72:
            raise ValueError(f"pose must be (B, 72) axis-angle, got {tuple(pose.shape)}")
        dtype = self.smpl.v_template.dtype
        pose = pose.to(dtype)
        B = pose.shape[0]
        if betas is None:
            betas = pose.new_zeros(B, self.num_betas)
        betas = betas.to(dtype)[:, : self.num_betas]
        out = self.smpl(betas=betas, global_orient=pose[:, :3], body_pose=pose[:, 3:72],
                        transl=None if trans is None else trans.to(dtype), pose2rot=True)
        vertices = out.vertices
        return BodyOutput(vertices, out.joints[:, :24], self.regress_h36m(vertices))

    @torch.no_grad()
    def shard_mesh(self, pose: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        """The ground-truth mesh of shard targets (stdformer.data.shards): pose (..., 72)
        axis-angle with the global orientation in the camera frame, betas (..., 10) ->
        vertices (..., V, 3) float32 in camera axes, relative to the SMPL pelvis (joint 0), on
        the body's device. A target: no gradient. Posed where it is used (the training device,
        evaluation), as FastMETRO poses its ground truth, instead of stored: 6890 x 3 values a
        frame."""
        lead, device = pose.shape[:-1], self.smpl.v_template.device
        out = self(pose.reshape(-1, pose.shape[-1]).to(device),
                   betas.reshape(-1, betas.shape[-1]).to(device))
        return (out.vertices - out.joints[:, :1]).reshape(*lead, self.num_vertices, 3)

    def template(self, level: int = 0) -> torch.Tensor:
        """(V_level, 3) rest-pose (T-pose, zero betas) vertices at hierarchy level `level`."""
        return self.downsample(self.smpl.v_template.unsqueeze(0), level)[0]

    def regress_h36m(self, vertices: torch.Tensor) -> torch.Tensor:
        """vertices (B, V, 3) -> (B, 17, 3) Human3.6M joints."""
        return torch.einsum("jv,bvc->bjc", self.J_regressor_h36m.to(vertices.dtype), vertices)

    def downsample(self, vertices: torch.Tensor, level: int) -> torch.Tensor:
        """vertices (B, V, 3) at level 0 -> (B, V_level, 3)."""
        if level == 0:
            return vertices
        return _apply_sparse(self._level_map("down", level), vertices)

    def upsample(self, vertices: torch.Tensor, level: int) -> torch.Tensor:
        """vertices (B, V_level, 3) -> (B, V, 3) at level 0 (barycentric, fixed)."""
        if level == 0:
            return vertices
        return _apply_sparse(self._level_map("up", level), vertices)

    def _level_map(self, kind: str, level: int) -> torch.Tensor:
        if not 0 < level < self.hierarchy.num_levels:
            raise ValueError(f"level must be in [0, {self.hierarchy.num_levels}), got {level}")
        return getattr(self, f"_{kind}_{level}")

    def flip_vertices(self, vertices: torch.Tensor) -> torch.Tensor:
        """Mirror meshes (B, V, 3) left/right: negate x and swap mirror vertices."""
        if self.flip_perms is None:
            raise DataError(self.source, f"cannot flip this body: {self.flip_error}",
                            field="mirror")
        flipped = vertices[:, torch.from_numpy(self.flip_perms["vertices"])]
        return flipped * flipped.new_tensor([-1.0, 1.0, 1.0])

    def extra_repr(self) -> str:
        return (f"id={self.body_model_id}, vertices={self.num_vertices}, "
                f"levels={self.hierarchy.num_vertices}")
