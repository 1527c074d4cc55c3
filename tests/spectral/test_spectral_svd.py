"""Unfolded-weight SVD and the exact operator spectrum of conv layers, against independent
computations (numpy SVD of the reshaped weight; SVD of the explicit operator matrix built by
applying a circular-padded torch conv to every basis vector)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deepprofile.errors import UnknownLayerError
from deepprofile.models.small import SmallResNet
from deepprofile.spectral.conv_svd import (
    UnsupportedLayerError,
    conv_operator_singular_values,
    layer_svd,
    model_svd,
    singular_values,
    weight_layers,
    weight_matrix,
)

TOL = 1e-10  # float64 throughout


def _conv(cin: int, cout: int, k: int, **kw) -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(cin, cout, k, **kw).double()


@pytest.mark.parametrize("shape", [(6, 4, 3), (3, 8, 5), (5, 5, 1), (4, 2, 2)])
def test_reconstruction_and_orthogonality(shape):
    cout, cin, k = shape
    conv = _conv(cin, cout, k)
    svd = layer_svd(conv, "c")
    unfolded = conv.weight.detach().reshape(cout, -1).numpy()  # independent reshape
    np.testing.assert_allclose(svd.matrix(), unfolded, atol=TOL)
    np.testing.assert_allclose(svd.U.T @ svd.U, np.eye(svd.rank), atol=TOL)
    np.testing.assert_allclose(svd.Vh @ svd.Vh.T, np.eye(svd.rank), atol=TOL)
    np.testing.assert_allclose(svd.singular_values,
                               np.linalg.svd(unfolded, compute_uv=False), rtol=1e-9)
    # fast path (Gram eigenvalues) agrees with the SVD
    np.testing.assert_allclose(singular_values(conv), svd.singular_values, rtol=1e-7, atol=1e-9)


def test_grouped_conv_is_block_diagonal():
    conv = _conv(6, 4, 3, groups=2)
    w = weight_matrix(conv).numpy()
    assert w.shape == (4, 54)
    assert np.all(w[:2, 27:] == 0) and np.all(w[2:, :27] == 0)
    svd = layer_svd(conv, "g")
    np.testing.assert_allclose(svd.matrix(), w, atol=TOL)
    np.testing.assert_allclose(svd.singular_values, np.linalg.svd(w, compute_uv=False),
                               rtol=1e-9)
    assert list(svd.singular_values) == sorted(svd.singular_values, reverse=True)


def test_one_by_one_conv_equals_linear():
    conv = _conv(5, 7, 1)
    lin = nn.Linear(5, 7).double()
    with torch.no_grad():
        lin.weight.copy_(conv.weight.reshape(7, 5))
        lin.bias.copy_(conv.bias)
    a, b = layer_svd(conv, "conv"), layer_svd(lin, "lin")
    np.testing.assert_allclose(a.singular_values, b.singular_values, rtol=1e-12)
    np.testing.assert_allclose(a.matrix(), b.matrix(), atol=TOL)
    # and as operators: the 1x1 conv on an n x n input repeats the Linear spectrum n*n times
    op = conv_operator_singular_values(conv, 3)
    np.testing.assert_allclose(op, np.repeat(b.singular_values, 9), rtol=1e-9)


def _explicit_operator(conv: nn.Conv2d, n: int) -> np.ndarray:
    """Apply the circular-padded conv (torch's own padding_mode) to every basis input."""
    k, d = conv.kernel_size[0], conv.dilation[0]
    twin = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                     padding=(k - 1) * d // 2, dilation=conv.dilation, groups=conv.groups,
                     bias=False, padding_mode="circular").double()
    with torch.no_grad():
        twin.weight.copy_(conv.weight)
    c = conv.in_channels
    basis = torch.eye(c * n * n, dtype=torch.float64).reshape(-1, c, n, n)
    with torch.no_grad():
        out = twin(basis)
    return out.reshape(c * n * n, -1).T.numpy()


@pytest.mark.parametrize("kw", [
    {"k": 3}, {"k": 5}, {"k": 1}, {"k": 3, "stride": 2}, {"k": 3, "dilation": 2},
    {"k": 3, "groups": 2}, {"k": 5, "stride": 2, "groups": 2},
])
@pytest.mark.parametrize("n", [4, 8])
def test_operator_singular_values_match_explicit_matrix(kw, n):
    kw = dict(kw)
    conv = _conv(4, 6, kw.pop("k"), **kw)
    fft = conv_operator_singular_values(conv, n)
    explicit = np.linalg.svd(_explicit_operator(conv, n), compute_uv=False)
    assert len(fft) == len(explicit)
    np.testing.assert_allclose(fft, explicit, atol=1e-10)


def test_operator_spectrum_refuses_indivisible_stride():
    from deepprofile.errors import ShapeError

    with pytest.raises(ShapeError, match="divisible"):
        conv_operator_singular_values(_conv(2, 2, 3, stride=2), 5)


def test_layer_selection_and_clear_errors():
    model = SmallResNet()
    all_layers = weight_layers(model)
    assert all_layers[0] == "stem.0" and all_layers[-1] == "fc"
    assert weight_layers(model, "layer1") == ["layer1.branch.0", "layer1.branch.3"]
    assert weight_layers(model, "layer*.shortcut*") == ["layer2.shortcut.0", "layer3.shortcut.0"]
    with pytest.raises(UnknownLayerError, match="layer1"):
        weight_layers(model, "layer01")
    with pytest.raises(UnsupportedLayerError, match="BatchNorm2d"):
        weight_layers(model, "stem.1")
    with pytest.raises(UnsupportedLayerError, match="none is"):
        weight_layers(model, "*.relu")
    with pytest.raises(UnsupportedLayerError, match="transposed"):
        layer_svd(nn.ConvTranspose2d(2, 3, 3), "up")
    with pytest.raises(UnsupportedLayerError, match="ReLU"):
        layer_svd(nn.ReLU(), "act")
    svds = model_svd(model, "layer3")
    assert set(svds) == {"layer3.branch.0", "layer3.branch.3", "layer3.shortcut.0"}
    assert svds["layer3.branch.3"].matrix_shape == (64, 576)


def test_layer_svd_round_trips_json():
    import json

    svd = layer_svd(_conv(3, 4, 3, stride=2, padding=1), "c")
    data = json.loads(json.dumps(svd.to_dict(include_vectors=True)))
    back = type(svd).from_dict(data)
    np.testing.assert_allclose(back.matrix(), svd.matrix(), atol=1e-14)
    assert back.stride == (2, 2) and back.padding == (1, 1) and back.layer == "c"
