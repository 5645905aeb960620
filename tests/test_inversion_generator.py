"""The generator's shapes, range and argument checks."""

from __future__ import annotations

import pytest
import torch

from probes.inversion.generator import InversionGenerator, SubPixelConvTranspose2d, to_uint8_images


@pytest.mark.parametrize("dim", [128, 512, 1024])
@pytest.mark.parametrize("size", [64, 128])
def test_output_shape_and_range(dim: int, size: int) -> None:
    torch.manual_seed(0)
    model = InversionGenerator(dim, image_size=size, base_channels=64)
    with torch.no_grad():
        out = model(torch.randn(3, dim))
    assert out.shape == (3, 3, size, size)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_default_architecture_is_the_methods() -> None:
    model = InversionGenerator(128)
    assert model.project.out_features == 512 * 4 * 4
    convs = [m for m in model.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(512, 256), (256, 128), (128, 64), (64, 3)]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) and c.padding == (1, 1) for c in convs)
    big = InversionGenerator(128, image_size=128)
    assert len([m for m in big.modules() if isinstance(m, torch.nn.ConvTranspose2d)]) == 5


def test_eval_mode_single_sample() -> None:
    model = InversionGenerator(16, base_channels=32).eval()
    assert model(torch.randn(1, 16)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("kwargs, message", [
    ({"embedding_dim": 0}, "embedding_dim=0, must be a positive integer"),
    ({"embedding_dim": 8, "image_size": 32}, "image_size=32, must be one of (64, 128)."),
    ({"embedding_dim": 8, "base_channels": 4}, "base_channels=4, must be an integer >= 8"),
])
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        InversionGenerator(**kwargs)
    assert message in str(exc.value)


def test_to_uint8_images() -> None:
    x = torch.tensor([0.0, 0.5, 1.0, 0.999]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    out = to_uint8_images(x)
    assert out.shape == (1, 2, 2, 3) and out.dtype.name == "uint8"
    assert out[0, :, :, 0].tolist() == [[0, 128], [255, 255]]


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("in_channels, out_channels, size, bias", [(8, 4, 4, False), (6, 3, 5, True), (4, 8, 1, True)])
def test_subpixel_layer_equals_conv_transpose(dtype: torch.dtype, tolerance: float, in_channels: int,
                                              out_channels: int, size: int, bias: bool) -> None:
    torch.manual_seed(0)
    native = torch.nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1,
                                      bias=bias).to(dtype)
    subpixel = SubPixelConvTranspose2d(in_channels, out_channels, bias=bias).to(dtype)
    subpixel.load_state_dict(native.state_dict())  # the same parameters, the same state dict
    x = torch.randn(3, in_channels, size, size, dtype=dtype)
    grad_out = torch.randn(3, out_channels, 2 * size, 2 * size, dtype=dtype)
    results = []
    for layer in (native, subpixel):
        x_in = x.clone().requires_grad_()
        out = layer(x_in)
        params = [layer.weight] + ([layer.bias] if bias else [])
        grads = torch.autograd.grad(out, [x_in, *params], grad_out)
        results.append([out, *grads])
    assert results[1][0].shape == (3, out_channels, 2 * size, 2 * size)
    for got, expected in zip(results[1], results[0]):
        assert torch.allclose(got, expected, rtol=0, atol=tolerance), float((got - expected).abs().max())


def test_subpixel_layer_is_a_conv_transpose_with_its_weight_shape() -> None:
    layer = SubPixelConvTranspose2d(8, 4, bias=False)
    assert isinstance(layer, torch.nn.ConvTranspose2d)
    assert layer.weight.shape == (8, 4, 4, 4) and layer.bias is None


@pytest.mark.parametrize("size", [64, 128])
def test_resize_convolution_variant(size: int) -> None:
    model = InversionGenerator(16, image_size=size, base_channels=32, upsampling="resize")
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in model.modules())
    with torch.no_grad():
        out = model(torch.randn(2, 16))
    assert out.shape == (2, 3, size, size) and float(out.min()) >= 0 and float(out.max()) <= 1
    assert model.hyperparameters()["upsampling"] == "resize"
    rebuilt = InversionGenerator(**model.hyperparameters())
    rebuilt.load_state_dict(model.state_dict())
    assert "upsampling" not in InversionGenerator(16).hyperparameters()   # the method's form is unchanged
    with pytest.raises(ValueError, match="upsampling='bilinear', must be one of"):
        InversionGenerator(16, upsampling="bilinear")
