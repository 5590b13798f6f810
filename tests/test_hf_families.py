"""Hugging Face ``transformers`` classifiers: shape, exactness and the pointwise-head oracle.

Same oracles as ``test_families.py``, computed through the model's own ``forward``:

* exact families: mean_uv Z equals ``model(x).logits`` of a separate plain call;
* every family: each cell of Z equals ``model(x).logits`` when the grid layer's output
  is replaced (by a forward hook) with a map / token sequence in which every position
  holds that one cell's vector — the model's own pooling and head, not the adapter's.

Small random-init configs at 64 px keep this fast; nothing is downloaded.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from dense_readout import DenseReadout
from dense_readout.errors import UnsupportedModelError

transformers = pytest.importorskip("transformers")

torch.manual_seed(0)

SIZE = 64
VIT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "image_size": SIZE,
    "patch_size": 16,
    "num_labels": 5,
}
CNN = {"num_labels": 5, "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1]}
SWIN = {
    "num_labels": 5,
    "image_size": SIZE,
    "embed_dim": 16,
    "depths": [1, 1],
    "num_heads": [1, 2],
    "window_size": 4,
}


def _build(name: str):
    t = transformers
    configs = {
        "resnet": lambda: t.ResNetForImageClassification(t.ResNetConfig(**CNN, layer_type="basic")),
        "regnet": lambda: t.RegNetForImageClassification(t.RegNetConfig(**CNN, groups_width=8)),
        "efficientnet": lambda: t.EfficientNetForImageClassification(
            t.EfficientNetConfig(
                num_labels=5,
                image_size=SIZE,
                width_coefficient=0.1,
                depth_coefficient=0.1,
                hidden_dim=128,  # = round_filters(1280) at width 0.1 (transformers ties them)
            )
        ),
        "mobilenet_v2": lambda: t.MobileNetV2ForImageClassification(
            t.MobileNetV2Config(num_labels=5, image_size=SIZE, depth_multiplier=0.25)
        ),
        "convnext": lambda: t.ConvNextForImageClassification(
            t.ConvNextConfig(num_labels=5, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)
        ),
        "convnextv2": lambda: t.ConvNextV2ForImageClassification(
            t.ConvNextV2Config(num_labels=5, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)
        ),
        "swin": lambda: t.SwinForImageClassification(t.SwinConfig(**SWIN)),
        "swinv2": lambda: t.Swinv2ForImageClassification(t.Swinv2Config(**SWIN)),
        "vit": lambda: t.ViTForImageClassification(t.ViTConfig(**VIT)),
        "deit": lambda: t.DeiTForImageClassification(t.DeiTConfig(**VIT)),
        "deit_distilled": lambda: t.DeiTForImageClassificationWithTeacher(t.DeiTConfig(**VIT)),
        "beit": lambda: t.BeitForImageClassification(t.BeitConfig(**VIT)),
        "beit_cls": lambda: t.BeitForImageClassification(
            t.BeitConfig(**VIT, use_mean_pooling=False)
        ),
        "dinov2": lambda: t.Dinov2ForImageClassification(
            t.Dinov2Config(**{**VIT, "patch_size": 8})
        ),
        "dinov2_registers": lambda: t.Dinov2WithRegistersForImageClassification(
            t.Dinov2WithRegistersConfig(**{**VIT, "patch_size": 8, "num_register_tokens": 4})
        ),
    }
    if name == "dinov2_registers" and not hasattr(t, "Dinov2WithRegistersConfig"):
        pytest.skip("this transformers release has no Dinov2WithRegisters")
    return configs[name]().eval()


# name: (adapter, grid at 64 px, exact, grid layer, how the oracle fills the layer output)
# fill "grid": B×C×h×w map; "tokens": every token (prefix too); "patches": patch tokens
# only, [CLS] and registers kept (DINOv2's head reads [CLS] as well).
FAMILIES = {
    "resnet": ("hf-resnet", (8, 8), True, lambda m: m.resnet.encoder.stages[-1], "grid"),
    "regnet": ("hf-resnet", (8, 8), True, lambda m: m.regnet.encoder.stages[-1], "grid"),
    "efficientnet": (
        "hf-efficientnet",
        (2, 2),
        True,
        lambda m: m.efficientnet.encoder.top_activation,
        "grid",
    ),
    "mobilenet_v2": ("hf-mobilenet-v2", (2, 2), True, lambda m: m.mobilenet_v2.conv_1x1, "grid"),
    "convnext": ("hf-convnext", (8, 8), False, lambda m: m.convnext.encoder.stages[-1], "grid"),
    "convnextv2": (
        "hf-convnext",
        (8, 8),
        False,
        lambda m: m.convnextv2.encoder.stages[-1],
        "grid",
    ),
    "swin": ("hf-swin", (8, 8), True, lambda m: m.swin.layernorm, "tokens"),
    "swinv2": ("hf-swin", (8, 8), True, lambda m: m.swinv2.layernorm, "tokens"),
    "vit": ("hf-vit", (4, 4), False, lambda m: m.vit.layernorm, "tokens"),
    "deit": ("hf-vit", (4, 4), False, lambda m: m.deit.layernorm, "tokens"),
    "deit_distilled": ("hf-deit-distilled", (4, 4), False, lambda m: m.deit.layernorm, "tokens"),
    "beit": ("hf-beit", (4, 4), False, lambda m: m.beit.layernorm, "tokens"),
    "beit_cls": ("hf-beit", (4, 4), False, lambda m: m.beit.layernorm, "tokens"),
    "dinov2": ("hf-dinov2", (8, 8), True, lambda m: m.dinov2.layernorm, "patches"),
    "dinov2_registers": (
        "hf-dinov2",
        (8, 8),
        True,
        lambda m: m.dinov2_with_registers.layernorm,
        "patches",
    ),
}


def _tolerance(logits: torch.Tensor) -> float:
    return 1e-4 * max(1.0, float(logits.abs().max()))


def _filled(output: torch.Tensor, fill: str, u: int, v: int, grid, prefix: int) -> torch.Tensor:
    """The layer output with every position holding cell (u, v)'s vector."""
    if fill == "grid":
        return output[:, :, u, v][:, :, None, None].expand_as(output).contiguous()
    token = output[:, prefix + u * grid[1] + v][:, None, :]
    if fill == "tokens":
        return token.expand_as(output).contiguous()
    filled = output.clone()
    filled[:, prefix:] = token
    return filled


def _own_head_on_cell(model, layer, x, fill, u, v, grid, prefix) -> torch.Tensor:
    handle = layer.register_forward_hook(
        lambda module, args, output: _filled(output, fill, u, v, grid, prefix)
    )
    try:
        with torch.no_grad():
            return model(x).logits
    finally:
        handle.remove()


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_hf_family(name):
    adapter_name, grid, exact, layer_of, fill = FAMILIES[name]
    model = _build(name)
    x = torch.randn(2, 3, SIZE, SIZE)
    readout = DenseReadout(model)
    result = readout(x)
    assert result.adapter == adapter_name
    assert tuple(result.scores.shape) == (2, 5, *grid)
    assert result.exact is exact and readout.exact is exact
    assert result.exactness_note.startswith("exact" if exact else "not exact")
    layer = layer_of(model)
    assert readout.adapter.target_layer() is layer
    with torch.no_grad():
        reference = model(x).logits
    torch.testing.assert_close(result.logits, reference, rtol=0, atol=_tolerance(reference))
    if exact:
        gap = (result.scores.mean(dim=(2, 3)) - reference).abs().max()
        assert gap <= _tolerance(reference)
    else:
        assert float(result.residual.max()) > 1e-4  # really not a decomposition
    prefix = getattr(readout.adapter, "num_prefix_tokens", lambda: 0)()  # Swin: no prefix
    for u, v in [(0, 0), (grid[0] - 1, grid[1] // 2), (grid[0] // 2, grid[1] - 1)]:
        oracle = _own_head_on_cell(model, layer, x, fill, u, v, grid, prefix)
        torch.testing.assert_close(result.scores[:, :, u, v], oracle, rtol=1e-4, atol=1e-4)
    _integrations_agree(model, x, result)


def _integrations_agree(model, x, result) -> None:
    """Captum and pytorch-grad-cam classes take the HF model as it is (no wrapper) and
    hook the adapter's grid layer: their maps are the readout's class map."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from dense_readout.captum import DenseReadoutAttribution
    from dense_readout.gradcam import DenseReadoutCAM

    maps = DenseReadoutAttribution(model).attribute(x, target=1)
    torch.testing.assert_close(maps, result.scores[:, 1:2], rtol=1e-4, atol=1e-4)
    with DenseReadoutCAM(model) as cam:
        cam(x, targets=[ClassifierOutputTarget(1)] * x.shape[0])
        assert cam.last_raw_cams is not None
        torch.testing.assert_close(cam.last_raw_cams, result.scores[:, 1], rtol=1e-4, atol=1e-4)


def test_notes_say_why():
    notes = {
        name: DenseReadout(_build(name)).adapter.exactness_note()
        for name in ("convnext", "vit", "deit_distilled", "beit", "dinov2")
    }
    assert "LayerNorm" in notes["convnext"] and "LayerNorm" in notes["beit"]
    assert "[CLS]" in notes["vit"] and "distillation" in notes["deit_distilled"]
    assert "[CLS ‖ mean of patch tokens]" in notes["dinov2"]


def test_non_square_inputs():
    result = DenseReadout(_build("resnet"))(torch.randn(1, 3, 64, 96))
    assert result.grid_size == (8, 12) and float(result.residual.max()) < 1e-4
    result = DenseReadout(_build("swin"))(torch.randn(1, 3, 64, 96))
    assert result.grid_size == (8, 12) and float(result.residual.max()) < 1e-4


def test_levit_is_refused_with_the_reason():
    t = transformers
    config = t.LevitConfig(
        image_size=SIZE,
        hidden_sizes=[16, 32, 48],
        num_attention_heads=[1, 2, 3],
        depths=[1, 1, 1],
        key_dim=[8, 8, 8],
        num_labels=3,
    )
    for cls in (t.LevitForImageClassification, t.LevitForImageClassificationWithTeacher):
        with pytest.raises(UnsupportedModelError, match="LeViT.*features=.*head=model.classifier"):
            DenseReadout(cls(config).eval())


def test_hf_adapters_outrank_the_generic_ones():
    from dense_readout.adapters import registered_adapters

    order = registered_adapters()
    hf = [i for i, name in enumerate(order) if name.startswith("hf-")]
    others = [i for i, name in enumerate(order) if not name.startswith("hf-")]
    assert len(hf) == 12 and max(hf) < min(others)  # + MobileViT, PVTv2 (issue 23)


def test_importing_and_a_timm_readout_leave_transformers_unimported():
    code = (
        "import sys, timm, torch\n"
        "import dense_readout, dense_readout.captum, dense_readout.gradcam, dense_readout.compare\n"
        "from dense_readout import DenseReadout, Preprocess\n"
        "m = timm.create_model('resnet18', num_classes=3).eval()\n"
        "DenseReadout(m)(torch.randn(1, 3, 64, 64)); Preprocess.from_model(m)\n"
        "assert 'transformers' not in sys.modules, 'transformers was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
