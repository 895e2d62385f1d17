"""STDFormer: video 3D human mesh recovery, as a plain library (no orchestration inside)."""

__version__ = "0.1.0"
