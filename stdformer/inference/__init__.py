"""From a user's video to 3D meshes (`stdformer predict`): people found and tracked, cropped as
`preprocess` crops, run through the model over windows merged as `evaluate` merges them, placed in
the camera, and written as .npz, an H.264 overlay video, .glb and .obj files. See run.py."""

from stdformer.inference.config import (BlazePoseConfig, DemoConfig, DetectorConfig, HOGConfig,
                                        PredictConfig, TrackerConfig)
from stdformer.inference.model import InferenceModel, load_inference_model
from stdformer.inference.run import PredictResult, predict_video

__all__ = ["BlazePoseConfig", "DemoConfig", "DetectorConfig", "HOGConfig", "InferenceModel",
           "PredictConfig", "PredictResult", "TrackerConfig", "load_inference_model",
           "predict_video"]
