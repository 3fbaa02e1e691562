"""MTNet structure: shapes, branch attentions, norm placement, presets, feature noise."""
import pytest
import torch
from torch import nn

from src_model import MTNetConfig, build_model, get_config
from src_model.model.attention import CBAM, ChannelAttention, SpatialAttention
from src_model.model.norms import FrozenBatchNorm2d


@pytest.fixture(scope="module")
def lite():
    torch.manual_seed(0)
    return build_model("lite").eval()


def test_three_branch_logits_have_input_size(lite):
    x = torch.rand(2, 3, 96, 80)
    outs = lite(x)
    assert len(outs) == 3
    for z in outs:
        assert z.shape == (2, 2, 96, 80)
        assert torch.isfinite(z).all()


def test_branches_use_cbam_sa_ca_in_order(lite):
    assert isinstance(lite.decoder1.attention, CBAM)
    assert isinstance(lite.decoder2.attention, SpatialAttention)
    assert isinstance(lite.decoder3.attention, ChannelAttention)
    for dec in lite.decoders:  # attention before and after the first 3x3 conv
        assert type(dec.attention) is type(dec.attention1)


def test_decoder_second_conv_is_unnormalised_and_norms_are_groupnorm4(lite):
    for dec in lite.decoders:
        assert not hasattr(dec, "bn3")
        assert isinstance(dec.bn1, nn.GroupNorm) and dec.bn1.num_groups == 4
        assert isinstance(dec.bn2, nn.GroupNorm) and dec.bn2.num_groups == 4
    assert isinstance(lite.aspp.bn1, nn.GroupNorm) and lite.aspp.bn1.num_groups == 4


def test_paper_preset_is_resnet50_os16_with_frozen_norms():
    m = build_model("paper")
    low, high = m.encoder(torch.rand(1, 3, 64, 64))
    assert low.shape[1:] == (256, 16, 16)       # layer1: 256 channels, stride 4
    assert high.shape[1:] == (2048, 4, 4)       # layer4: 2048 channels, stride 16
    norms = [mod for mod in m.encoder.modules() if isinstance(mod, FrozenBatchNorm2d)]
    assert len(norms) == 53
    m.train()
    bn = norms[0]
    bn.running_mean.fill_(0.5)
    m.encoder(torch.rand(1, 3, 32, 32))
    assert torch.all(bn.running_mean == 0.5)  # frozen: statistics never update in training


def test_frozen_bn_keeps_affine_trainable():
    bn = FrozenBatchNorm2d(4)
    assert bn.weight.requires_grad and bn.bias.requires_grad
    assert not any(n == "running_mean" for n, _ in bn.named_parameters())


def test_channel_attention_scales_channels_only():
    torch.manual_seed(0)
    ca = ChannelAttention(32, 16)
    x = torch.rand(1, 32, 8, 8) + 0.1
    ratio = ca(x) / x
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio), atol=1e-6)
    assert ca.fc1.out_channels == 2


def test_spatial_attention_scales_pixels_only_and_kernel_options():
    torch.manual_seed(0)
    for k in (3, 7):
        sa = SpatialAttention(k)
        assert sa.conv1.kernel_size == (k, k)
        x = torch.rand(1, 5, 8, 8) + 0.1
        ratio = sa(x) / x
        assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-6)
    with pytest.raises(ValueError):
        SpatialAttention(5)


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ValueError, match="lite.*paper"):
        build_model("resnet9000")


def test_config_validation_and_roundtrip():
    cfg = get_config("lite", sa_kernel=3)
    assert MTNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        get_config("lite", encoder_norm="layer")
    with pytest.raises(ValueError):
        MTNetConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_feature_noise_only_in_training_and_only_for_branches_2_and_3():
    torch.manual_seed(0)
    m = build_model("lite", feature_noise=0.3)
    for mod in m.modules():  # make training forward deterministic apart from the noise
        if isinstance(mod, nn.Dropout):
            mod.p = 0.0
    m.train()
    x = torch.rand(2, 3, 64, 64)
    torch.manual_seed(1)
    a = m(x)
    torch.manual_seed(2)
    b = m(x)
    assert torch.allclose(a[0], b[0])              # branch 1 sees clean features
    assert not torch.allclose(a[1], b[1])          # branches 2 and 3 see noisy ones
    assert not torch.allclose(a[2], b[2])
    m.eval()
    assert all(torch.equal(p, q) for p, q in zip(m(x), m(x), strict=True))


def test_default_has_no_feature_noise():
    assert get_config("paper").feature_noise == 0.0
    assert get_config("lite").feature_noise == 0.0


def test_lite_is_much_smaller_than_paper():
    n_lite = sum(p.numel() for p in build_model("lite").parameters())
    n_paper = sum(p.numel() for p in build_model("paper").parameters())
    assert n_lite * 20 < n_paper


def test_gradients_reach_every_parameter(lite):
    m = build_model("lite").train()
    outs = m(torch.rand(2, 3, 64, 64))
    sum(o.square().mean() for o in outs).backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    assert not missing, missing
