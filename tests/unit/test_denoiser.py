import pytest
import torch

from diled import MLPSkipNet
from diled.denoiser import timestep_embedding


def test_shapes_and_skip_connections():
    net = MLPSkipNet(latent_dim=6, hidden=16, depth=4, time_dim=8)
    assert net.layers[0].in_features == 6
    assert all(layer.in_features == 16 + 6 for layer in net.layers[1:])  # z_t concatenated into every layer
    assert net.out.in_features == 16 + 6
    out = net(torch.randn(5, 6), torch.tensor([1, 2, 3, 4, 5]))
    assert out.shape == (5, 6)


def test_time_embedding_changes_the_output():
    torch.manual_seed(0)
    net = MLPSkipNet(latent_dim=4, hidden=16, depth=2, time_dim=8)
    z = torch.randn(3, 4)
    a = net(z, torch.full((3,), 1))
    b = net(z, torch.full((3,), 700))
    assert (a - b).abs().max() > 1e-3


def test_time_scales_the_hidden_state_not_shifts_it():
    # With every time projection zeroed, cond = 0 and h * (1 + cond) = h: t must not matter at all.
    torch.manual_seed(0)
    net = MLPSkipNet(latent_dim=4, hidden=16, depth=2, time_dim=8)
    for proj in net.time_proj:
        torch.nn.init.zeros_(proj.weight)
        torch.nn.init.zeros_(proj.bias)
    z = torch.randn(3, 4)
    torch.testing.assert_close(net(z, torch.full((3,), 1)), net(z, torch.full((3,), 999)))


def test_sinusoidal_embedding():
    e = timestep_embedding(torch.tensor([0, 5]), 8)
    assert e.shape == (2, 8)
    torch.testing.assert_close(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    assert timestep_embedding(torch.tensor([3]), 7).shape == (1, 7)


def test_bad_input_shape_names_the_expected_size():
    net = MLPSkipNet(latent_dim=4, hidden=8, depth=1, time_dim=4)
    with pytest.raises(ValueError, match=r"\[N x 4\].*\(2, 5\)"):
        net(torch.randn(2, 5), torch.tensor([1, 2]))


def test_bad_size_is_refused():
    with pytest.raises(ValueError, match="depth.*0"):
        MLPSkipNet(latent_dim=4, depth=0)
