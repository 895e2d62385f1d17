"""Body model layer: SMPL-format bodies (procedural or the user's SMPL), mesh hierarchy, posing.

Public API:
    make_procedural_body(seed=0, resolution=6890) -> dict of SMPL-format arrays
    derive_h36m_regressor(arrays) -> (17, V) scipy csr
    load_smpl_file(path) / convert_smpl(src, dst) / write_smpl_pkl(arrays, path)
    MeshHierarchy, build_hierarchy(vertices, faces, factors), load_mesh_downsampling(path)
    BodyModel.from_dir(body_dir), BodyOutput: posing in torch (smplx), for batches
    PosingArrays.load(body_dir), pose_track(arrays, poses, betas, trans, cam_poses): linear blend
        skinning of a whole track in numpy, straight into the camera (what preprocess uses)
    BodyConfig (params section `body`), write_body_dir(out_dir, source, seed, resolution,
        h36m_regressor, mesh_downsampling, factors), write_body_dir_from_config(out_dir, cfg)
    constants: SMPL_JOINT_NAMES, SMPL_PARENTS, H36M_JOINT_NAMES, J14_FROM_H36M, flip perms
"""

from stdformer.body.constants import (
    COCO18_FLIP_PERM, COCO18_NAMES, H36M_FLIP_PERM, H36M_JOINT_NAMES, J14_FLIP_PERM,
    J14_FROM_H36M, J14_NAMES, SMPL_FLIP_PERM, SMPL_JOINT_NAMES, SMPL_PARENTS,
)
from stdformer.body.files import (
    BodyConfig, load_h36m_regressor, write_body_dir, write_body_dir_from_config,
)
from stdformer.body.hierarchy import MeshHierarchy, build_hierarchy, load_mesh_downsampling
from stdformer.body.model import BodyFiles, BodyModel, BodyOutput, read_body_dir
from stdformer.body.procedural import derive_h36m_regressor, make_procedural_body
from stdformer.body.smpl_files import convert_smpl, load_smpl_file, write_smpl_pkl
from stdformer.body.track_posing import PosingArrays, pose_track

__all__ = [
    "BodyConfig", "BodyFiles", "BodyModel", "BodyOutput", "MeshHierarchy", "build_hierarchy",
    "convert_smpl", "derive_h36m_regressor", "load_h36m_regressor", "load_mesh_downsampling",
    "load_smpl_file", "make_procedural_body", "PosingArrays", "pose_track", "read_body_dir",
    "write_body_dir", "write_body_dir_from_config", "write_smpl_pkl",
    "COCO18_FLIP_PERM", "COCO18_NAMES", "H36M_FLIP_PERM", "H36M_JOINT_NAMES", "J14_FLIP_PERM",
    "J14_FROM_H36M", "J14_NAMES", "SMPL_FLIP_PERM", "SMPL_JOINT_NAMES", "SMPL_PARENTS",
]
