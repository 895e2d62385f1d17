"""STDFormer network: backbones (ResNet, HRNet), EMA-based SD/TD, FastMETRO-style transformer."""

from stdformer.model.backbone import LoadReport, build_backbone, load_backbone_weights
from stdformer.model.multiscale_attention import (
                                 EMA,
                                 SpatioTemporalDisentangle,
                                 temporal_shuffle,
                                 temporal_unshuffle,
)
from stdformer.model.hrnet import HRNet
from stdformer.model.resnet import ResNet
from stdformer.model.stdformer import ModelConfig, STDFormer, count_parameters
from stdformer.model.transformer import (
                                 MeshTransformer,
                                 decoder_attention_mask,
                                 sine_position_encoding,
)

__all__ = [
    "EMA", "HRNet", "LoadReport", "MeshTransformer", "ModelConfig", "ResNet", "STDFormer",
    "SpatioTemporalDisentangle", "build_backbone", "count_parameters", "decoder_attention_mask",
    "load_backbone_weights", "sine_position_encoding", "temporal_shuffle", "temporal_unshuffle",
]
