"""The MTNet model of CDMA and its parts."""
from .attention import CBAM, ChannelAttention, SpatialAttention
from .mtnet import BRANCH_ATTENTIONS, MTNet

__all__ = ["CBAM", "ChannelAttention", "SpatialAttention", "MTNet", "BRANCH_ATTENTIONS"]
