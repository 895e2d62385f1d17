"""Fixtures built like the real files users bring (reference section 7), never only like what the
project's own writers produce: an official SMPL pickle (chumpy objects, Python-2 module paths),
the GraphCMR / METRO `mesh_downsampling.npz` (object arrays of old-SciPy sparse matrices and an
`M` member naming `__main__.MyMesh`), and FastMETRO `state_dict.bin` key layouts. Helpers, not
fixtures: tests call them with their own data."""

from __future__ import annotations

import io
import os
import pickle
import sys
import types
import zipfile

import numpy as np
import scipy.sparse


def object_array(items) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


class Evil:
    """Unpickling it runs `touch marker`: a file that tries to run code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def smpl_body_dir(arrays, tmp_path, name: str):
    """A body directory from `arrays` brought as an official SMPL pickle + regressor file (made
    by the body stage's writer, `write_body_dir`): (directory, meta)."""
    from stdformer.body import derive_h36m_regressor, write_body_dir

    pkl = tmp_path / f"{name}.pkl"
    pkl.write_bytes(official_smpl_pickle(arrays, protocol=2))
    reg = tmp_path / f"{name}_J_regressor_h36m.npy"
    np.save(reg, derive_h36m_regressor(arrays).toarray())
    meta = write_body_dir(tmp_path / name, source=str(pkl), h36m_regressor=reg)
    return tmp_path / name, meta


def official_smpl_pickle(arrays, protocol: int, unsupported: bool = False) -> bytes:
    """Pickle like the official SMPL files: shapedirs as a chumpy `Ch` and weights as a chumpy
    `Reshape` of one (via a throw-away fake chumpy package, removed again so nothing can import
    it), J_regressor scipy csc, extra keys, Python-2 era module paths."""
    modules = {name: types.ModuleType(name) for name in
               ("chumpy", "chumpy.ch", "chumpy.reordering", "chumpy.ch_ops")}
    classes = {}
    for module, name in (("chumpy.ch", "Ch"), ("chumpy.reordering", "Reshape"),
                         ("chumpy.ch_ops", "add")):
        cls = type(name, (), {"__module__": module, "__qualname__": name})
        setattr(modules[module], name, cls)
        classes[name] = cls

    def make(name, **state):  # chumpy pickles an object's __dict__ (minus caches)
        obj = classes[name]()
        obj.__dict__.update({"_dirty_vars": set(), "_itr": None, "_depends_on_deps": {},
                             "_make_dense": False, "_make_sparse": False, **state})
        return obj

    sys.modules.update(modules)
    try:
        weights = np.asarray(arrays["weights"])
        data = {
            "v_template": np.asarray(arrays["v_template"]), "f": np.asarray(arrays["f"]),
            "shapedirs": make("Ch", x=np.asarray(arrays["shapedirs"])),
            "posedirs": np.asarray(arrays["posedirs"]),
            "J_regressor": scipy.sparse.csc_matrix(arrays["J_regressor"]),
            "weights": make("Reshape", a=make("Ch", x=weights.ravel()), newshape=weights.shape),
            "kintree_table": np.asarray(arrays["kintree_table"]),
            "J": np.asarray(arrays["J"]), "bs_style": "lbs", "bs_type": "lrotmin",
            "vert_sym_idxs": np.arange(len(arrays["v_template"])),
        }
        if unsupported:  # a chumpy expression that would have to be evaluated
            data["posedirs"] = make("add", a=make("Ch", x=np.zeros(3)), b=make("Ch", x=1.0))
        raw = pickle.dumps(data, protocol=protocol)
        # Python-2 era module paths, as in the official files (GLOBAL opcodes are text here).
        for new, old in ((b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"),
                         (b"scipy.sparse._csc\n", b"scipy.sparse.csc\n")):
            assert new in raw
            raw = raw.replace(new, old)
        return raw
    finally:
        for name in modules:
            del sys.modules[name]



# ---------------------------------------------------------------------------------------------
# mesh_downsampling.npz (GraphCMR / METRO / FastMETRO)

# Module paths as the Python 2 / NumPy 1 / SciPy < 1.8 that wrote the file pickled them
# (protocol 2: GLOBAL opcodes are plain "module\nname\n" text, so they can be rewritten).
_OLD_PATHS = ((b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"),
              (b"scipy.sparse._csc\n", b"scipy.sparse.csc\n"),
              (b"scipy.sparse._csr\n", b"scipy.sparse.csr\n"),
              (b"scipy.sparse._coo\n", b"scipy.sparse.coo\n"))


def _old_pickle(obj) -> bytes:
    raw = pickle.dumps(obj, protocol=2)
    for new, old in _OLD_PATHS:
        raw = raw.replace(new, old)
    return raw


def npy_object_member(items) -> bytes:
    """One .npy member holding a pickled object array, as np.savez wrote it."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "|O", "fortran_order": False, "shape": (len(items),)})
    buf.write(_old_pickle(object_array(items)))
    return buf.getvalue()


def _my_mesh_pickle(levels) -> bytes:
    """Member M: the meshes of each level as `__main__.MyMesh` objects (a class that only the
    script that wrote the file had). Pickled through a throw-away class registered on
    __main__ for the moment of pickling, so the bytes really name that global."""
    main = sys.modules["__main__"]
    cls = type("MyMesh", (), {"__module__": "__main__", "__qualname__": "MyMesh"})
    meshes = []
    for v, f in levels:
        mesh = cls()
        mesh.__dict__.update(v=np.asarray(v, np.float64), f=np.asarray(f, np.uint32))
        meshes.append(mesh)
    had = hasattr(main, "MyMesh")
    previous = getattr(main, "MyMesh", None)
    main.MyMesh = cls
    try:
        member = npy_object_member(meshes)
    finally:
        if had:
            main.MyMesh = previous
        else:
            del main.MyMesh
    assert b"__main__\nMyMesh\n" in member
    return member


def mesh_downsampling_bytes(hierarchy, template: np.ndarray, m_member: bytes | None = None
                            ) -> bytes:
    """The standard file's layout for `hierarchy` (a MeshHierarchy) of the mesh `template`:
    A (adjacencies), U (up-sampling), D (down-sampling) as object arrays of csc matrices
    (COMA's mesh_sampling builds csc), F (uint32 face arrays), M (MyMesh objects, or the
    given member bytes)."""
    positions = [np.asarray(template, np.float64)]
    for down in hierarchy.down:
        positions.append(down @ positions[-1])
    members = {
        "A": npy_object_member([scipy.sparse.csc_matrix(a) for a in hierarchy.adjacency]),
        "U": npy_object_member([scipy.sparse.csc_matrix(u) for u in hierarchy.up]),
        "D": npy_object_member([scipy.sparse.csc_matrix(d) for d in hierarchy.down]),
        "F": npy_object_member([np.asarray(f, np.uint32) for f in hierarchy.faces]),
        "M": m_member or _my_mesh_pickle(list(zip(positions, hierarchy.faces))),
    }
    assert b"scipy.sparse.csc\ncsc_matrix\n" in members["A"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, data in members.items():
            zf.writestr(f"{key}.npy", data)
    return buf.getvalue()


def write_mesh_downsampling(path, hierarchy, template, m_member: bytes | None = None) -> None:
    with open(path, "wb") as f:
        f.write(mesh_downsampling_bytes(hierarchy, template, m_member))


# ---------------------------------------------------------------------------------------------
# FastMETRO state_dict.bin (reference section 7), written from FastMETRO's key list

FASTMETRO_LAYERS = {"S": 1, "M": 2, "L": 3}
RESNET50_BLOCKS = (3, 4, 6, 3)          # torchvision resnet50, as FastMETRO uses it


def _bn(prefix: str, c: int, gen) -> dict:
    import torch

    return {f"{prefix}.weight": 1 + 0.1 * torch.randn(c, generator=gen),
            f"{prefix}.bias": 0.1 * torch.randn(c, generator=gen),
            f"{prefix}.running_mean": 0.1 * torch.randn(c, generator=gen),
            f"{prefix}.running_var": 0.5 + torch.rand(c, generator=gen),
            f"{prefix}.num_batches_tracked": torch.tensor(1000)}


def _resnet50_backbone(gen) -> dict:
    """`nn.Sequential(*list(torchvision.models.resnet50().children())[:-2])`: 0 conv1, 1 bn1,
    2 relu, 3 maxpool, 4-7 layer1-4 (Bottleneck conv1..3 / bn1..3, downsample.0/.1)."""
    import torch

    def conv(out_c, in_c, k):
        return torch.randn(out_c, in_c, k, k, generator=gen) * (2.0 / (in_c * k * k)) ** 0.5

    sd = {"backbone.0.weight": conv(64, 3, 7), **_bn("backbone.1", 64, gen)}
    inplanes = 64
    for stage, (blocks, planes) in enumerate(zip(RESNET50_BLOCKS, (64, 128, 256, 512))):
        for b in range(blocks):
            p = f"backbone.{4 + stage}.{b}"
            sd[f"{p}.conv1.weight"] = conv(planes, inplanes, 1)
            sd.update(_bn(f"{p}.bn1", planes, gen))
            sd[f"{p}.conv2.weight"] = conv(planes, planes, 3)
            sd.update(_bn(f"{p}.bn2", planes, gen))
            sd[f"{p}.conv3.weight"] = conv(4 * planes, planes, 1)
            sd.update(_bn(f"{p}.bn3", 4 * planes, gen))
            if b == 0:
                sd[f"{p}.downsample.0.weight"] = conv(4 * planes, inplanes, 1)
                sd.update(_bn(f"{p}.downsample.1", 4 * planes, gen))
            inplanes = 4 * planes
    return sd


def _linear(prefix: str, out_f: int, in_f: int, gen) -> dict:
    import torch

    return {f"{prefix}.weight": torch.randn(out_f, in_f, generator=gen) / in_f ** 0.5,
            f"{prefix}.bias": 0.01 * torch.randn(out_f, generator=gen)}


def _attention(prefix: str, d: int, gen) -> dict:
    import torch

    return {f"{prefix}.in_proj_weight": torch.randn(3 * d, d, generator=gen) / d ** 0.5,
            f"{prefix}.in_proj_bias": 0.01 * torch.randn(3 * d, generator=gen),
            **_linear(f"{prefix}.out_proj", d, d, gen)}


def _norm(prefix: str, d: int, gen) -> dict:
    import torch

    return {f"{prefix}.weight": 1 + 0.05 * torch.randn(d, generator=gen),
            f"{prefix}.bias": 0.05 * torch.randn(d, generator=gen)}


def _transformer(prefix: str, d: int, ffn: int, layers: int, gen) -> dict:
    sd = {}
    for i in range(layers):
        p = f"{prefix}.encoder.layers.{i}"
        sd.update(_attention(f"{p}.self_attn", d, gen))
        sd.update(_linear(f"{p}.linear1", ffn, d, gen))
        sd.update(_linear(f"{p}.linear2", d, ffn, gen))
        sd.update(_norm(f"{p}.norm1", d, gen))
        sd.update(_norm(f"{p}.norm2", d, gen))
    sd.update(_norm(f"{prefix}.encoder.norm", d, gen))
    for i in range(layers):
        p = f"{prefix}.decoder.layers.{i}"
        sd.update(_attention(f"{p}.self_attn", d, gen))
        sd.update(_attention(f"{p}.multihead_attn", d, gen))
        sd.update(_linear(f"{p}.linear1", ffn, d, gen))
        sd.update(_linear(f"{p}.linear2", d, ffn, gen))
        for k in (1, 2, 3):
            sd.update(_norm(f"{p}.norm{k}", d, gen))
    sd.update(_norm(f"{prefix}.decoder.norm", d, gen))
    return sd


def fastmetro_state_dict(size: str = "S", seed: int = 0, smpl_regressor: bool = False,
                         ema: dict[str, int] | None = None) -> dict:
    """A FastMETRO-{size}-R50 `model.state_dict()` with random weights: backbone.* (ResNet-50
    Sequential indices), transformer_1 (512 wide, FFN 2048) / transformer_2 (128, FFN 512),
    dim_reduce_*, token embeddings (1 / 14 / 431 x 512), conv_1x1 (512, 2048, 1, 1),
    xyz_regressor / cam_predictor (128 -> 3), coarse2intermediate_upsample (1723, 431) and,
    optionally, smpl_parameter_regressor.*. `ema`: STDFormer-release-style EMA blocks inside
    backbone.* ({name: channels per group}; the release does not document the names) with
    gn / conv1x1 / conv3x3 weights and biases."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    layers = FASTMETRO_LAYERS[size]
    sd = _resnet50_backbone(gen)
    sd.update(_transformer("transformer_1", 512, 2048, layers, gen))
    sd.update(_transformer("transformer_2", 128, 512, layers, gen))
    for name in ("dim_reduce_enc_cam", "dim_reduce_enc_img", "dim_reduce_dec"):
        sd.update(_linear(name, 128, 512, gen))
    sd["cam_token_embed.weight"] = torch.randn(1, 512, generator=gen)
    sd["joint_token_embed.weight"] = torch.randn(14, 512, generator=gen)
    sd["vertex_token_embed.weight"] = torch.randn(431, 512, generator=gen)
    sd["conv_1x1.weight"] = torch.randn(512, 2048, 1, 1, generator=gen) / 2048 ** 0.5
    sd["conv_1x1.bias"] = 0.01 * torch.randn(512, generator=gen)
    sd.update(_linear("xyz_regressor", 3, 128, gen))
    sd.update(_linear("cam_predictor", 3, 128, gen))
    sd.update(_linear("coarse2intermediate_upsample", 1723, 431, gen))
    if smpl_regressor:
        sd.update(_linear("smpl_parameter_regressor.fc1", 1024, 3 * 1723, gen))
        sd.update(_linear("smpl_parameter_regressor.fc2", 24 * 6 + 10, 1024, gen))
    for name, cg in (ema or {}).items():
        sd.update(_norm(f"backbone.{name}.gn", cg, gen))
        sd.update(_linear(f"backbone.{name}.conv1x1", cg, cg, gen))
        sd[f"backbone.{name}.conv1x1.weight"] = sd[f"backbone.{name}.conv1x1.weight"][..., None,
                                                                                      None]
        sd[f"backbone.{name}.conv3x3.weight"] = torch.randn(cg, cg, 3, 3, generator=gen) / 9 / cg
        sd[f"backbone.{name}.conv3x3.bias"] = 0.01 * torch.randn(cg, generator=gen)
    return sd


def coma_upsampling(fine: np.ndarray, coarse: np.ndarray, coarse_faces: np.ndarray,
                    part_tolerance: float = 1e-6) -> scipy.sparse.csc_matrix:
    """U as the official file's writer made it (COMA's `mesh_sampling.setup_deformation_
    transfer`, which GraphCMR / METRO used): for each fine vertex the closest point on the
    coarse surface; on a face's inside, the linear (not affine) least-squares coefficients of
    that point on the face's three corners; on an edge, those of the fine vertex itself on the
    edge's two corners (the third weight stays a stored 0); on a corner, 1. So weights can be
    negative and rows need not sum to 1, as in the real file (reference section 7). On the
    procedural body: row sums 0.98 .. 1.04 (U[0]) and 0.78 .. 1.19 (U[1]), a few negative
    weights (the real file: 0.92 .. 1.02 and 0.83 .. 1.05, 1305 and 354 negative). The closest
    points come from trimesh's triangle routines, not from the project's code."""
    import trimesh
    from scipy.spatial import cKDTree

    faces = np.asarray(coarse_faces, np.int64)
    # candidates: the faces around the 8 coarse vertices nearest to each fine vertex
    _, near = cKDTree(coarse).query(fine, k=8)
    pairs = {(i, fi) for i, vs in enumerate(near) for fi in
             np.flatnonzero(np.isin(faces, vs).any(axis=1))}
    rows, fids = np.array(sorted(pairs)).T
    points = trimesh.triangles.closest_point(coarse[faces[fids]], fine[rows])
    dist = np.linalg.norm(points - fine[rows], axis=1)
    best = {}
    for r, f, p, d in zip(rows, fids, points, dist):
        if r not in best or d < best[r][2]:
            best[r] = (f, p, d)
    face_ids = np.array([best[i][0] for i in range(len(fine))])
    closest = np.array([best[i][1] for i in range(len(fine))])
    corners = faces[face_ids]                                              # (N, 3)
    bary = trimesh.triangles.points_to_barycentric(coarse[corners], closest)
    weights = np.zeros((len(fine), 3))
    for i, (tri, b) in enumerate(zip(corners, bary)):
        on = np.flatnonzero(b > part_tolerance)
        if len(on) == 2:       # on an edge: the fine vertex on the edge's corners, linearly
            weights[i, on] = np.linalg.lstsq(coarse[tri[on]].T, fine[i], rcond=None)[0]
        else:                  # inside, or at a corner: the vertex projected on the face's plane
            weights[i] = trimesh.triangles.points_to_barycentric(coarse[tri][None],
                                                                 fine[i][None])[0]
    rows = np.repeat(np.arange(len(fine)), 3)
    return scipy.sparse.csc_matrix((weights.reshape(-1), (rows, corners.reshape(-1))),
                                   shape=(len(fine), len(coarse)))


def official_like_hierarchy(hierarchy, template: np.ndarray):
    """`hierarchy` with its U matrices rebuilt as the official file's writer built them
    (`coma_upsampling`): same D, A and F, the real file's kind of U."""
    import dataclasses

    positions = [np.asarray(template, np.float64)]
    for down in hierarchy.down:
        positions.append(down @ positions[-1])
    up = [coma_upsampling(positions[l], positions[l + 1], hierarchy.faces[l + 1])
          for l in range(len(hierarchy.down))]
    return dataclasses.replace(hierarchy, up=up)
