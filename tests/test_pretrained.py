"""The embedded default model and local checkpoints: offline, mapped correctly, clear errors."""

from __future__ import annotations

import socket
from collections import OrderedDict

import pytest
import timm
import torch
from PIL import Image

from dense_readout import CheckpointError, DenseReadout, load_pretrained
from dense_readout.pretrained import (
    EMBEDDED_WEIGHTS,
    _embedded_path,
    _load_by_position,
    _read_state_dict,
)

skdata = pytest.importorskip("skimage.data")


def test_embedded_weights_map_by_position(embedded):
    """Every tensor of the shipped checkpoint lands, in order, on the timm model."""
    source = _read_state_dict(_embedded_path(EMBEDDED_WEIGHTS["tf_efficientnet_lite0"]))
    target = embedded.model.state_dict()
    assert len(source) == len(target) == 296
    for (name, mine), theirs in zip(target.items(), source.values(), strict=False):
        assert torch.equal(mine, theirs.to(mine.dtype)), name


def test_loading_never_touches_the_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    pretrained = load_pretrained()
    assert pretrained.name == "tf_efficientnet_lite0" and not pretrained.model.training


@pytest.mark.parametrize("photo, expected", [("chelsea", "Egyptian cat"), ("coffee", "espresso")])
def test_embedded_model_recognises_real_photos(embedded, photo, expected):
    x = embedded.preprocess(Image.fromarray(getattr(skdata, photo)())).unsqueeze(0)
    result = DenseReadout(embedded.model)(x)
    assert embedded.class_names[int(result.logits.argmax())] == expected
    assert result.exact and float(result.residual.max()) < 1e-4


def test_most_chelsea_cells_see_a_cat(embedded):
    x = embedded.preprocess(Image.fromarray(skdata.chelsea())).unsqueeze(0)
    labels = DenseReadout(embedded.model)(x).labels()[0]
    assert all("cat" in embedded.class_names[i] for i in range(281, 286))  # the domestic cats
    is_cat = (labels >= 281) & (labels <= 285)
    assert is_cat.float().mean() > 0.5


def test_local_checkpoint_for_any_timm_model(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("resnet18", num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    loaded = load_pretrained("resnet18", checkpoint=path)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value)
    assert loaded.preprocess.mean == pytest.approx((0.485, 0.456, 0.406))


def test_checkpoint_with_other_class_count(tmp_path):
    source = timm.create_model("resnet18", num_classes=7)
    path = tmp_path / "finetuned.pth"
    torch.save(source.state_dict(), path)
    loaded = load_pretrained("resnet18", checkpoint=path)
    assert loaded.model.num_classes == 7 and loaded.class_names[3] == "class 3"
    assert torch.equal(loaded.model.fc.weight, source.fc.weight)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="No embedded weights for 'resnet18'"):
        load_pretrained("resnet18")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pretrained("resnet18", checkpoint=tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="Cannot read checkpoint"):
        load_pretrained("resnet18", checkpoint=garbage)
    wrong = tmp_path / "wrong.pth"
    torch.save(timm.create_model("resnet34").state_dict(), wrong)
    with pytest.raises(CheckpointError, match="does not match ResNet"):
        load_pretrained("resnet18", checkpoint=wrong)
    with pytest.raises(CheckpointError, match="Unknown timm model"):
        load_pretrained("no_such_model_xyz", checkpoint=wrong)


def test_positional_mapping_checks_shapes():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    good = OrderedDict(
        (f"x{i}", torch.zeros_like(t)) for i, t in enumerate(model.state_dict().values())
    )
    _load_by_position(model, good, "mem")
    assert all(float(t.abs().sum()) == 0 for t in model.state_dict().values())
    bad = OrderedDict(good)
    bad["x1"] = torch.zeros(5)
    with pytest.raises(CheckpointError, match="positional mapping is broken"):
        _load_by_position(model, bad, "mem")
    with pytest.raises(CheckpointError, match="holds 3 tensors"):
        _load_by_position(model, OrderedDict(list(good.items())[:3]), "mem")
