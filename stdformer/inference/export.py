"""Files `predict` writes: the result `.npz`, an animated glTF binary (.glb) per track and OBJ
frames. Every file is written atomically; the same inputs give the same bytes.

Meshes in .glb and .obj files are in the camera frame turned to glTF's axes (y up, the camera at
the origin looking down -z): (x, y, z)_gltf = (x, -y, -z)_camera, a rotation, so face winding
(outward normals) is kept. Blender's glTF and OBJ importers put them upright.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from stdformer.io import atomic_output, save_npz_atomic, write_text_atomic

CAMERA_TO_GLTF = np.array([1.0, -1.0, -1.0])

# The .npz: one row a (track, frame), sorted by track id then frame; per-video arrays after.
# (name, dtype, shape) in the documented order (README "Predict on a video" lists the meaning).
ROW_ARRAYS = (
    ("track_id", np.int32, ()), ("frame", np.int32, ()), ("detected", bool, ()),
    ("box", np.float32, (4,)), ("bbox_center", np.float32, (2,)), ("bbox_side", np.float32, ()),
    ("crop_affine", np.float32, (2, 3)), ("cam", np.float32, (3,)),
    ("translation", np.float32, (3,)), ("vertices", np.float32, (None, 3)),
    ("joints_h36m", np.float32, (17, 3)), ("joints14", np.float32, (14, 3)),
)
VIDEO_ARRAYS = ("faces", "intrinsics", "image_size", "fps", "num_frames", "meta")
NPZ_KEYS = tuple(name for name, _, _ in ROW_ARRAYS) + VIDEO_ARRAYS


def result_arrays(rows: Mapping[str, np.ndarray], *, faces: np.ndarray, intrinsics: np.ndarray,
                  width: int, height: int, fps: float, num_frames: int,
                  meta: Mapping) -> dict[str, np.ndarray]:
    """Check and cast the row arrays (all with the same N, possibly 0) and add the per-video
    ones, in NPZ_KEYS order."""
    num_vertices = int(np.max(faces)) + 1 if len(faces) else 0
    out = {}
    n = len(rows["track_id"])
    for name, dtype, shape in ROW_ARRAYS:
        want = (n, *(num_vertices if s is None else s for s in shape))
        value = np.asarray(rows[name], dtype) if n else np.zeros(want, dtype)
        if value.shape != want:
            raise ValueError(f"{name}: shape {value.shape}, expected {want}")
        out[name] = value
    out.update(faces=np.asarray(faces, np.int32), intrinsics=np.asarray(intrinsics, np.float64),
               image_size=np.array([width, height], np.int32), fps=np.float64(fps),
               num_frames=np.int32(num_frames),
               meta=np.array(json.dumps(meta, sort_keys=True)))
    return out


def write_result_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    save_npz_atomic(path, {k: arrays[k] for k in NPZ_KEYS})


# --------------------------------------------------------------------------------------------
# glTF


def _accessor(gltf, blob: bytearray, array: np.ndarray, component: int, kind: str,
              target: int | None = None, bounds: bool = False) -> int:
    """Append `array` to the binary blob (4-byte aligned) with a bufferView and an accessor."""
    import pygltflib as g

    while len(blob) % 4:
        blob.append(0)
    data = np.ascontiguousarray(array).tobytes()
    gltf.bufferViews.append(g.BufferView(buffer=0, byteOffset=len(blob), byteLength=len(data),
                                         target=target))
    blob.extend(data)
    count = array.shape[0]                                  # SCALAR arrays come flattened
    accessor = g.Accessor(bufferView=len(gltf.bufferViews) - 1, componentType=component,
                          count=int(count), type=kind)
    if bounds:
        accessor.min = [float(v) for v in array.reshape(count, -1).min(axis=0)]
        accessor.max = [float(v) for v in array.reshape(count, -1).max(axis=0)]
    gltf.accessors.append(accessor)
    return len(gltf.accessors) - 1


def glb_bytes(vertices_cam: np.ndarray, faces: np.ndarray, fps: float,
              color: tuple[float, float, float] = (0.8, 0.8, 0.8), name: str = "person",
              extras: Mapping | None = None) -> bytes:
    """One mesh animated over T frames, as a .glb: the base mesh is frame 0, morph target k
    holds frame k minus frame 0, and a STEP animation of the morph weights shows target k at
    time k / fps. vertices_cam (T, V, 3) camera frame, metres; faces (F, 3); color linear RGB."""
    import pygltflib as g

    frames = np.asarray(vertices_cam, np.float64) * CAMERA_TO_GLTF
    base = frames[0].astype(np.float32)
    deltas = (frames - frames[0]).astype(np.float32)                    # (T, V, 3)
    t = len(frames)
    gltf = g.GLTF2(asset=g.Asset(version="2.0", generator="stdformer predict"))
    blob = bytearray()
    position = _accessor(gltf, blob, base, g.FLOAT, g.VEC3, g.ARRAY_BUFFER, bounds=True)
    indices = _accessor(gltf, blob, np.asarray(faces, np.uint32).reshape(-1), g.UNSIGNED_INT,
                        g.SCALAR, g.ELEMENT_ARRAY_BUFFER)
    targets = [{"POSITION": _accessor(gltf, blob, d, g.FLOAT, g.VEC3, g.ARRAY_BUFFER,
                                      bounds=True)} for d in deltas]
    times = _accessor(gltf, blob, (np.arange(t) / fps).astype(np.float32), g.FLOAT, g.SCALAR,
                      bounds=True)
    weights = _accessor(gltf, blob, np.eye(t, dtype=np.float32).reshape(-1), g.FLOAT, g.SCALAR)
    gltf.materials.append(g.Material(
        name=f"{name}-color", doubleSided=False,
        pbrMetallicRoughness=g.PbrMetallicRoughness(
            baseColorFactor=[*map(float, color), 1.0], metallicFactor=0.0, roughnessFactor=0.8)))
    gltf.meshes.append(g.Mesh(name=name, weights=[0.0] * t, primitives=[g.Primitive(
        attributes=g.Attributes(POSITION=position), indices=indices, material=0,
        targets=targets)]))
    gltf.nodes.append(g.Node(name=name, mesh=0))
    gltf.scenes.append(g.Scene(nodes=[0]))
    gltf.scene = 0
    gltf.animations.append(g.Animation(
        name=f"{name}-motion",
        samplers=[g.AnimationSampler(input=times, output=weights, interpolation="STEP")],
        channels=[g.AnimationChannel(sampler=0, target=g.AnimationChannelTarget(
            node=0, path="weights"))]))
    gltf.extras = dict(extras or {})
    gltf.buffers.append(g.Buffer(byteLength=len(blob)))
    gltf.set_binary_blob(bytes(blob))
    return b"".join(gltf.save_to_bytes())


def write_glb(path: str | Path, *args, **kwargs) -> None:
    data = glb_bytes(*args, **kwargs)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def obj_text(vertices_cam: np.ndarray, faces: np.ndarray) -> str:
    """A Wavefront OBJ of one mesh (glTF axes, see the module docstring)."""
    v = np.asarray(vertices_cam, np.float64) * CAMERA_TO_GLTF
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v]
    lines += [f"f {a} {b} {c}" for a, b, c in np.asarray(faces, np.int64) + 1]
    return "\n".join(lines) + "\n"


def write_obj(path: str | Path, vertices_cam: np.ndarray, faces: np.ndarray) -> None:
    write_text_atomic(path, obj_text(vertices_cam, faces))
