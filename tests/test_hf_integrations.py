"""Hugging Face models everywhere the package calls a model: Captum, pytorch-grad-cam,
``compare()``, LRP (refused), preprocessing from the saved image processor, and the
command line's ``--model hf:DIR`` (offline). No hand-written wrapper anywhere."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dense_readout.errors import UnsupportedModelError

transformers = pytest.importorskip("transformers")

SIZE = 64
LABELS = {0: "aardvark", 1: "bonobo", 2: "capybara", 3: "dugong", 4: "echidna"}


def _resnet(num_labels: int = 5, **extra):
    config = transformers.ResNetConfig(
        num_labels=num_labels,
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        layer_type="basic",
        **extra,
    )
    return transformers.ResNetForImageClassification(config).eval()


def _vit():
    config = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=SIZE,
        patch_size=16,
        num_labels=5,
    )
    return transformers.ViTForImageClassification(config).eval()


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return _resnet()


def test_captum_attribution_and_layergradcam(resnet):
    from captum.attr import LayerGradCam

    from dense_readout.adapters.hf_models import LogitsOnly
    from dense_readout.captum import DenseReadoutAttribution

    x = torch.randn(2, 3, SIZE, SIZE)
    explainer = DenseReadoutAttribution(resnet)  # the HF model itself, no wrapper
    maps, delta = explainer.attribute(x, target=[1, 3], return_convergence_delta=True)
    assert tuple(maps.shape) == (2, 1, 8, 8)
    assert float(delta.abs().max()) < 1e-4  # exact: mean(Z_k) = the model's logit
    # plain Captum needs the logits tensor: LogitsOnly is that (shared) wrapper
    layer = resnet.resnet.encoder.stages[-1]
    gradcam = LayerGradCam(LogitsOnly(resnet), layer).attribute(x, target=[1, 3])
    without_bias = explainer.attribute(x, target=[1, 3], include_bias=False)
    torch.testing.assert_close(without_bias, 64 * gradcam.detach(), rtol=1e-4, atol=1e-5)
    assert tuple(DenseReadoutAttribution(_vit()).attribute(x, target=2).shape) == (2, 1, 4, 4)


def test_gradcam_cam(resnet):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from dense_readout.gradcam import DenseReadoutCAM

    x = torch.randn(2, 3, SIZE, SIZE)
    layer = resnet.resnet.encoder.stages[-1]
    with DenseReadoutCAM(resnet, target_layers=[layer]) as cam:
        maps = cam(x, targets=[ClassifierOutputTarget(2)] * 2)
        assert maps.shape == (2, SIZE, SIZE)
        assert cam.last_scores is not None and tuple(cam.last_scores.shape) == (2, 5, 8, 8)
        top = cam(x, None)  # targets=None: each image's top class, from the logits tensor
        assert top.shape == (2, SIZE, SIZE)
    with DenseReadoutCAM(_vit()) as cam:
        assert cam(x, targets=[ClassifierOutputTarget(0)] * 2).shape == (2, SIZE, SIZE)


def test_compare_runs_every_default_method(resnet):
    from dense_readout.compare import compare

    x = torch.randn(2, 3, SIZE, SIZE)
    comparison = compare(resnet, x, targets=[0, 4], errors="raise")
    assert set(comparison.results) >= {"dense-readout", "gradcam", "layergradcam"}


def test_lrp_refuses_with_the_reason(resnet):
    from dense_readout.lrp import LRPReadout

    with pytest.raises(UnsupportedModelError, match="Hugging Face.*dense_readout.gradcam"):
        LRPReadout(resnet)


def _save(folder, model, processor) -> str:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def test_preprocess_from_the_saved_processor(tmp_path):
    from dense_readout import Preprocess, load_pretrained

    convnext = transformers.ConvNextImageProcessor(
        size={"shortest_edge": 160},
        crop_pct=0.8,
        image_mean=[0.1, 0.2, 0.3],
        image_std=[0.4, 0.5, 0.6],
        resample=2,
    )
    folder = _save(tmp_path / "convnext", _resnet(), convnext)
    model, preprocess, _, _ = load_pretrained(f"hf:{folder}", crop_pct=None)
    assert (preprocess.resize, preprocess.crop) == (200, 160)
    assert preprocess.mean == (0.1, 0.2, 0.3) and preprocess.std == (0.4, 0.5, 0.6)
    assert preprocess.interpolation == "bilinear"
    assert Preprocess.from_model(model, crop_pct=0.5).resize == 320  # crop_pct overrides
    assert Preprocess.from_model(model, "imagenet").mean == (0.485, 0.456, 0.406)
    vit = transformers.ViTImageProcessor(size={"height": 96, "width": 96}, resample=3)
    folder = _save(tmp_path / "vit", _resnet(), vit)
    _, preprocess, _, _ = load_pretrained(f"hf:{folder}", crop_pct=None)
    assert (preprocess.resize, preprocess.crop, preprocess.interpolation) == (96, 96, "bicubic")
    assert preprocess.mean == (0.5, 0.5, 0.5)  # ViTImageProcessor's default


def test_missing_directory_is_a_checkpoint_error(tmp_path):
    from dense_readout import load_pretrained
    from dense_readout.errors import CheckpointError

    with pytest.raises(CheckpointError, match="save_pretrained"):
        load_pretrained(f"hf:{tmp_path}")


def _image(path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_cli_explain_hf_directory_offline(tmp_path, monkeypatch, capsys):
    from dense_readout.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    model = _resnet(id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    processor = transformers.ViTImageProcessor(size={"height": SIZE, "width": SIZE})
    folder = _save(tmp_path / "model", model, processor)
    image = _image(tmp_path / "photo.png")
    code = main(["explain", image, "--model", f"hf:{folder}", "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "out" / "photo.json").read_text())
    text = json.dumps(record)
    assert record["model"] == f"hf:{folder}"
    named = [word for word in LABELS.values() if word in text]
    assert named, "no id2label name in the JSON report"
    assert record["preprocessing"]["centre_crop"] == SIZE


def test_cli_bench_hf_directory(tmp_path, monkeypatch, capsys):
    from dense_readout.cli import main
    from dense_readout.evaluation._imagenet_a_wnids import IMAGENET_A_WNIDS

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for wnid in IMAGENET_A_WNIDS[5:7]:
        (tmp_path / "a" / wnid).mkdir(parents=True)
        _image(tmp_path / "a" / wnid / "x.jpg")
    folder = _save(tmp_path / "model", _resnet(1000), transformers.ViTImageProcessor())
    args = ["bench", "imagenet-a", "--root", str(tmp_path / "a"), "--out", str(tmp_path / "out")]
    args += ["--model", f"hf:{folder}", "--crop", "64", "--workers", "0", "--no-progress"]
    assert main(args) == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["images"]["evaluated"] == 2
    assert results["model"]["name"] == f"hf:{folder}"


def test_cli_lrp_hf_directory_is_refused(tmp_path, capsys):
    from dense_readout.cli import main

    folder = _save(tmp_path / "model", _resnet(), transformers.ViTImageProcessor())
    image = _image(tmp_path / "photo.png")
    code = main(["lrp", image, "--model", f"hf:{folder}", "--out", str(tmp_path / "out")])
    assert code == 2
    assert "Hugging Face" in capsys.readouterr().err


def test_hf_directory_without_transformers_names_the_extra(tmp_path, monkeypatch):
    from dense_readout import load_pretrained
    from dense_readout.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"dense-readout\[hf\]"):
        load_pretrained(f"hf:{tmp_path}")


def test_logits_only_unwraps_outputs(resnet):
    from dense_readout.adapters.hf_models import LogitsOnly, logits_only

    x = torch.randn(1, 3, SIZE, SIZE)
    wrapped = logits_only(resnet)
    assert isinstance(wrapped, LogitsOnly) and wrapped.model is resnet
    assert wrapped.training is False
    torch.testing.assert_close(wrapped(x), resnet(x).logits)
    plain = torch.nn.Linear(2, 2)
    assert logits_only(plain) is plain  # other models are left alone
