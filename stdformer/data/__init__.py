"""Datasets: 3DPW reading, synthetic data, crops, shards and preprocessing.

Modules (imported explicitly; this package imports nothing so light users stay light):
    threedpw   read_sequence / iter_tracks / list_sequences -> Track; camera-frame helpers
    render     OpenCV mesh renderer: rasterize, render_meshes, overlay_mesh, project_points
    motion     procedural SMPL motion (walk, wave, squat)
    synthetic  SynthesizeConfig, synthesize(out_root, body, cfg): a synthetic 3DPW
    crops, shards, manifest, targets, preprocess: crop protocol, shard contract, the manifest
               (and its verified reading), body-model targets, preprocessing stage
"""
