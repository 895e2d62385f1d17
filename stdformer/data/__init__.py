"""Datasets: 3DPW reading, synthetic data, crops, shards and preprocessing.

Modules (imported explicitly; this package imports nothing so light users stay light):
    threedpw   read_sequence / iter_tracks / list_sequences -> Track; camera-frame helpers
    h36m       Human3.6M (NeuralAnnot / I2L-MeshNet layout) -> Tracks
    datasets   the `datasets:` section: one entry per source (ThreeDPWDataset, H36MDataset)
    render     OpenCV mesh renderer: rasterize, render_meshes, overlay_mesh, project_points
    motion     procedural SMPL motion (walk, wave, squat)
    synthetic  synthesize(out_root, body, cfg): a synthetic 3DPW; its settings in
               synthetic_config (SynthesizeConfig), its parts in synthetic_assets,
               synthetic_appearance, synthetic_scene
    synthetic_h36m  synthesize_h36m(out_root, body, posing, cfg): a synthetic Human3.6M in
               the I2L-MeshNet / NeuralAnnot layout; its settings in synthetic_h36m_config
    crops, shards, manifest, targets: crop protocol, shard contract, the manifest (and its
               verified reading), body-model targets
    preprocess preprocess(dataset, body_dir, out_dir, cfg, name=...): the preprocessing stage; its
               settings and clip windows in preprocess_config (PreprocessConfig), its parts in
               stored_crops and sequence_clips
"""
