"""Section 5: the U-Net's interface and size."""

import pytest
import torch


def test_default_unet_has_5_to_10_million_parameters(nb):
    assert 5e6 <= nb.count_parameters(nb.UNet()) <= 10e6


def test_unet_predicts_noise_of_the_image_shape_at_64x64(nb):
    model = nb.UNet()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64), torch.tensor([0, 999]))
    assert out.shape == (2, 3, 64, 64)


def test_with_a_zero_output_layer_an_untrained_unet_predicts_zero_noise(nb):
    # OUTPUT_INIT = "zero" (the DDPM code's start) makes the starting loss the noise's variance, 1.
    model = nb.UNet(base_channels=16, output_init="zero")
    assert torch.count_nonzero(model(torch.randn(2, 3, 32, 32), torch.tensor([3, 7]))) == 0


def test_with_the_default_output_layer_every_weight_learns_from_the_first_update(nb):
    # OUTPUT_INIT = "torch": the first gradient reaches every layer. From a zero output layer it reaches only that
    # layer, and the rest wait until it has grown (some 300 updates at 2e-4).
    model = nb.UNet(base_channels=16)
    model(torch.randn(2, 3, 32, 32), torch.tensor([3, 7])).square().mean().backward()
    assert all(param.grad is not None and param.grad.any() for param in model.parameters())


def test_time_embedding_differs_across_t(nb):
    emb = nb.timestep_embedding(torch.arange(1000), 64)
    assert emb.shape == (1000, 64)
    assert torch.cdist(emb, emb).add(torch.eye(1000) * 1e9).min() > 1e-3  # no two timesteps share an embedding


def test_unet_output_depends_on_t(nb):
    model = nb.UNet(base_channels=16, channel_mults=(1, 2))
    torch.nn.init.normal_(model.output[-1].weight, std=0.1)
    x = torch.randn(1, 3, 16, 16).expand(2, -1, -1, -1)
    with torch.no_grad():
        out = model(x, torch.tensor([10, 900]))
    assert not torch.allclose(out[0], out[1])


def test_unet_rejects_sizes_it_cannot_halve(nb):
    with pytest.raises(AssertionError, match="divisible by 8"):
        nb.UNet(base_channels=16)(torch.randn(1, 3, 36, 36), torch.tensor([0]))


def test_width_scales_the_model(nb):
    assert nb.count_parameters(nb.UNet(base_channels=32)) < nb.count_parameters(nb.UNet(base_channels=64)) / 3


@pytest.mark.parametrize("base_channels", [16, 32, 64])
def test_every_block_sees_the_timestep(nb, base_channels):
    # The time embedding is added to each channel as a constant; a normalisation that subtracted each channel's
    # mean would remove it again. Changing only t must change every residual block's output.
    model = nb.UNet(base_channels=base_channels, channel_mults=(1, 2))
    for block in [b for b in model.modules() if isinstance(b, nb.ResidualBlock)]:
        h = torch.randn(1, block.norm1.num_channels, 8, 8)
        emb = model.time_mlp(nb.timestep_embedding(torch.tensor([10, 900]), base_channels))
        with torch.no_grad():
            out = block(h.expand(2, -1, -1, -1), emb)
        assert not torch.allclose(out[0], out[1], atol=1e-5)


def test_the_unet_normalises_with_groupnorm_over_groups_of_channels(nb):
    model = nb.UNet(base_channels=16, channel_mults=(1, 2))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]  # the DDPM U-Net's, as the plan says
    assert norms and all(m.num_groups <= 32 and m.num_channels // m.num_groups >= 4 for m in norms)
    assert nb.group_norm(256).num_groups == 32 and nb.group_norm(16).num_groups == 4
    x = torch.randn(2, 16, 4, 4) * 5 + torch.arange(16.0).view(1, 16, 1, 1)  # a scale, and a shift per channel
    groups = nb.group_norm(16)(x).view(2, 4, -1)  # each group of 4 channels over all pixels: mean 0, variance 1
    assert torch.allclose(groups.mean(dim=-1), torch.zeros(2, 4), atol=1e-5)
    assert torch.allclose(groups.var(dim=-1, unbiased=False), torch.ones(2, 4), atol=1e-3)


def test_attention_gets_contiguous_queries_keys_and_values(nb, monkeypatch):
    """MPS's attention kernel returned wrong values for strided inputs (pytorch#163597, #181133)."""
    seen = []
    attention = nb.F.scaled_dot_product_attention
    monkeypatch.setattr(nb.F, "scaled_dot_product_attention",
                        lambda q, k, v: seen.append([x.is_contiguous() for x in (q, k, v)]) or attention(q, k, v))
    nb.SelfAttention(32)(torch.randn(2, 32, 4, 4))
    assert seen == [[True, True, True]]
