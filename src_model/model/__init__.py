"""The MTNet model of CDMA and its parts."""
from .attention import CBAM, ChannelAttention, SpatialAttention
from .mtnet import MTNet

__all__ = ["CBAM", "ChannelAttention", "SpatialAttention", "MTNet"]
