import pytest
import torch

from napari_pix2pix.nn import (
    PRESETS,
    GANLoss,
    PatchGANConfig,
    PatchGANDiscriminator,
    UNetConfig,
    UNetGenerator,
    preset_config,
    reference_key_map,
)


def test_paper_unet_256_matches_the_paper():
    g = UNetGenerator(preset_config("unet_256", in_channels=3, out_channels=3))
    n = sum(p.numel() for p in g.parameters())
    assert 54.0e6 < n < 54.6e6  # the reference unet_256 has 54.4 M parameters
    assert g.config.multiple == 256
    dropouts = [m for m in g.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(dropouts) == 3 and all(d.p == 0.5 for d in dropouts)
    assert isinstance(g.up[-1][-1], torch.nn.Tanh)


@pytest.mark.parametrize("levels,size", [(3, 8), (4, 48), (5, 96)])
def test_unet_shapes_and_range(levels, size):
    g = UNetGenerator(UNetConfig(in_channels=2, out_channels=3, levels=levels, ngf=4)).eval()
    x = torch.randn(2, 2, size, size)
    y = g(x)
    assert y.shape == (2, 3, size, size)
    assert y.abs().max() <= 1


def test_init_is_paper_normal():
    g = UNetGenerator(UNetConfig(levels=4, ngf=16))
    w = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(w.std().item() - 0.02) < 0.003
    assert abs(w.mean().item()) < 0.002


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="norm"):
        UNetConfig(norm="group")
    with pytest.raises(ValueError, match="levels"):
        UNetConfig(levels=1)
    with pytest.raises(ValueError, match="preset"):
        preset_config("unet_1024")


def test_presets_build():
    for name in PRESETS:
        cfg = preset_config(name)
        if cfg.spatial_dims == 2:
            assert cfg.levels >= 6 and cfg.size_multiple == (2**cfg.levels,) * 2
        else:  # 3D: Z halved at the finest z_levels levels only
            assert name.startswith("unet3d_") and cfg.size_multiple[0] == 2**cfg.z_levels < cfg.size_multiple[1]
            net = UNetGenerator(cfg).eval()
            x = torch.randn(1, 1, *(2 * m for m in cfg.size_multiple))
            with torch.no_grad():
                assert net(x).shape == x.shape


def test_patchgan_is_70x70():
    cfg = PatchGANConfig(in_channels=4)
    assert cfg.receptive_field == 70
    d = PatchGANDiscriminator(cfg)
    out = d(torch.randn(1, 2, 256, 256), torch.randn(1, 2, 256, 256))
    assert out.shape == (1, 1, 30, 30)


@pytest.mark.parametrize("mode", ["vanilla", "lsgan"])
def test_gan_loss(mode):
    loss = GANLoss(mode)
    big = torch.full((1, 1, 4, 4), 10.0)
    assert loss(big, True) < loss(big, False)
    with pytest.raises(ValueError):
        GANLoss("wgan")


def test_reference_key_map_covers_every_layer():
    cfg = preset_config("unet_256", in_channels=3, out_channels=3)
    g = UNetGenerator(cfg)
    mapping = reference_key_map(cfg)
    ours = {k.rsplit(".", 1)[0] + "." for k in g.state_dict()}
    assert ours == set(mapping.values())


@pytest.mark.parametrize("cin,cout,full_res", [(1, 1, 0), (2, 1, 0), (1, 3, 2), (3, 3, 1)])
def test_residual_generator_adds_its_input(cin, cout, full_res):
    cfg = UNetConfig(in_channels=cin, out_channels=cout, levels=3, ngf=8, block_convs=2, residual=True,
                     full_res_convs=full_res)
    g = UNetGenerator(cfg).eval()
    x = torch.randn(2, cin, 32, 40)
    assert g(x).shape == (2, cout, 32, 40)
    head = g.tail[-1] if full_res else g.up[-1][-1]
    assert isinstance(head, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
    # no Tanh: the output is input + correction
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    expected = x[:, :1].expand(-1, cout, -1, -1) if cin < cout else x[:, :cout]
    torch.testing.assert_close(g(x), expected)


def test_block_convs_add_3x3_layers_at_every_level():
    plain = UNetGenerator(UNetConfig(levels=4, ngf=8))
    deep = UNetGenerator(UNetConfig(levels=4, ngf=8, block_convs=2))
    n3 = [m for m in deep.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert not [m for m in plain.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(n3) == 2 * 2 * 3  # 2 per block; 3 encoder + 3 decoder levels (not the innermost / outermost)
    assert UNetConfig(levels=4, block_convs=1).is_paper is False and UNetConfig().is_paper
    full = UNetGenerator(UNetConfig(levels=4, ngf=8, full_res_convs=2))
    assert full.stem is not None and full.tail is not None and plain.stem is None and plain.tail is None
    assert not UNetConfig(full_res_convs=1).is_paper


def test_bad_residual_config_is_named():
    with pytest.raises(ValueError, match="residual"):
        UNetConfig(in_channels=2, out_channels=3, residual=True)
    with pytest.raises(ValueError, match="block_convs"):
        UNetConfig(block_convs=-1)


def test_batchnorm_folding_keeps_the_function_with_block_convs():
    from napari_pix2pix.engine.core.device import inference_copy

    g = UNetGenerator(UNetConfig(in_channels=2, out_channels=1, levels=4, ngf=8, block_convs=1, residual=True,
                                 full_res_convs=2))
    g.train()
    for _ in range(3):  # non-trivial running statistics
        g(torch.randn(4, 2, 32, 32))
    g.eval()
    x = torch.randn(1, 2, 48, 32)
    fast = inference_copy(g, torch.device("cpu"), torch.float32)
    assert not [m for m in fast.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    torch.testing.assert_close(fast(x.contiguous(memory_format=torch.channels_last)), g(x), atol=1e-5, rtol=1e-4)
