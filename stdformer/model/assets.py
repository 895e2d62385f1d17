"""What the model's users need from the body model directory, as tensors: the body (posing the
ground-truth mesh), the mesh hierarchy (model construction, target pyramid), the H36M regressor
(losses, metrics), flip permutations. Training, evaluation, predict and serving all load it."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stdformer.body import constants
from stdformer.body.hierarchy import MeshHierarchy
from stdformer.body.mirror import FlipPerms
from stdformer.body.model import BodyModel
from stdformer.io import DataError, load_npz
from stdformer.losses import MeshInfo
from stdformer.metrics import j14_from_h36m, j14_pelvis
from stdformer.model.stdformer import sparse_rows_padded


@dataclass
class BodyAssets:
    body_model_id: str
    hierarchy: MeshHierarchy
    body_dir: str
    meta: dict                                # the body directory's meta.json
    regressor_h36m: torch.Tensor              # (17, V) float32
    perms: FlipPerms
    down_mid: tuple[torch.Tensor, torch.Tensor]     # fine -> mid as padded (index, weight)
    down_coarse: tuple[torch.Tensor, torch.Tensor]  # mid -> coarse
    rest_vertices: torch.Tensor | None = None       # (V, 3) rest-pose template, body axes
    body: torch.nn.Module | None = None             # BodyModel: shard targets' mesh (shard_mesh)

    @property
    def mesh_info(self) -> MeshInfo:
        return MeshInfo(joint_regressor=self.regressor_h36m,
                        mid_faces=torch.as_tensor(np.asarray(self.hierarchy.faces[1])))

    def to(self, device: torch.device) -> BodyAssets:
        move = lambda pair: tuple(t.to(device) for t in pair)  # noqa: E731
        return BodyAssets(self.body_model_id, self.hierarchy, self.body_dir, self.meta,
                          self.regressor_h36m.to(device), self.perms, move(self.down_mid),
                          move(self.down_coarse),
                          None if self.rest_vertices is None else self.rest_vertices.to(device),
                          None if self.body is None else copy.deepcopy(self.body).to(device))

    def camera_template(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The rest-pose body standing upright and facing the camera, in the targets' frame
        (camera axes: x right, y down, z forward; centred on the J14 mid-hip):
        (J14 joints (14, 3), coarse vertices (Vc, 3)), for `STDFormer.set_template`."""
        if self.rest_vertices is None:
            raise ValueError("these body assets carry no rest-pose template")
        # Body axes (y up, facing +z) -> camera axes facing the camera: 180 degrees about x.
        fine = self.rest_vertices.float() * self.rest_vertices.new_tensor([1.0, -1.0, -1.0])
        joints = j14_from_h36m(self.regressor_h36m.to(fine) @ fine)
        pelvis = j14_pelvis(joints)
        coarse = gather_rows(gather_rows((fine - pelvis)[None], self.down_mid), self.down_coarse)
        return joints - pelvis, coarse[0]


def load_body_assets(body_dir: str | Path) -> BodyAssets:
    body = BodyModel.from_dir(body_dir)
    hierarchy = body.hierarchy
    if hierarchy.num_levels < 3:
        raise DataError(body_dir, f"the mesh hierarchy has {hierarchy.num_levels} levels; "
                        "STDFormer needs 3 (full, mid, coarse)", field="hierarchy")
    regressor = _h36m_regressor(body, Path(body_dir))
    # The body's verified permutations (stdformer.body.mirror); COCO-18 keypoints come from the
    # dataset, not the mesh, so theirs follows the names.
    flip = body.flip_perms or {}
    perms = FlipPerms(
        vertices=flip.get("vertices"),
        smpl=flip.get("smpl", np.asarray(constants.SMPL_FLIP_PERM, dtype=np.int64)),
        h36m=flip.get("h36m", np.asarray(constants.H36M_FLIP_PERM, dtype=np.int64)),
        coco=np.asarray(constants.COCO18_FLIP_PERM, dtype=np.int64),
        source=str(body_dir), unavailable=body.flip_error)
    return BodyAssets(
        body_model_id=str(body.body_model_id), hierarchy=hierarchy, body_dir=str(body_dir),
        meta=body.meta,
        regressor_h36m=regressor,
        perms=perms, down_mid=sparse_rows_padded(hierarchy.down[0]),
        down_coarse=sparse_rows_padded(hierarchy.down[1]),
        rest_vertices=body.template(0).detach().float().clone(), body=body)


def _h36m_regressor(body, body_dir: Path) -> torch.Tensor:
    matrix = getattr(body, "J_regressor_h36m", None)
    if matrix is None:
        matrix = load_npz(body_dir / "regressors.npz", required=("J_regressor_h36m",))[
            "J_regressor_h36m"]
    if hasattr(matrix, "toarray"):
        matrix = matrix.toarray()
    matrix = torch.as_tensor(np.asarray(matrix) if not isinstance(matrix, torch.Tensor)
                             else matrix).float()
    if matrix.shape[0] != 17:
        raise DataError(body_dir, f"J_regressor_h36m has {matrix.shape[0]} rows, expected 17")
    return matrix.detach().clone()


def gather_rows(points: torch.Tensor, matrix: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """(N, n_in, 3) through a padded sparse (n_out, n_in) matrix -> (N, n_out, 3)."""
    index, weight = matrix
    return (points[:, index] * weight[None, :, :, None].to(points.dtype)).sum(dim=2)


def vertex_pyramid(vertices: torch.Tensor, assets: BodyAssets) -> dict[str, torch.Tensor]:
    """Ground-truth meshes at every level: vertices (B, S, V, 3) -> vertices_fine (B, S, V, 3),
    vertices_mid (B, S, Vm, 3), vertices_coarse (B, S, Vc, 3) (the hierarchy's D matrices)."""
    b, s = vertices.shape[:2]
    flat = vertices.flatten(0, 1)
    mid = gather_rows(flat, assets.down_mid)
    coarse = gather_rows(mid, assets.down_coarse)
    return {"vertices_fine": vertices, "vertices_mid": mid.reshape(b, s, *mid.shape[1:]),
            "vertices_coarse": coarse.reshape(b, s, *coarse.shape[1:])}
