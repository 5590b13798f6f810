"""Cross-check: our CP-LRP against lxt's CP-LRP patch for torchvision's ViT, same cells.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/lrp_lxt_compare.py

lxt 2.1 (AttnLRP's package) ships one vision patch map, for torchvision's
``vision_transformer`` (``lxt.efficient.models.vit_torch.cp_LRP``: CP-LRP inside the
attention, identity rule on GELU, LayerNorm scale constant) and nothing for timm.
It patches *classes* process-wide (``nn.GELU``, ``nn.LayerNorm``,
``nn.MultiheadAttention`` and zennit's ``BasicHook``), so it runs here in a child
process. ``import lxt.efficient`` also fails with transformers 5.x (its BERT patch
imports ``transformers.modeling_attn_mask_utils``, removed in 5.0); the child
stubs the ``lxt.efficient.models`` package and loads only ``vit_torch`` from it.

Both sides use the epsilon rule (1e-6) on every linear layer and convolution of a
random-init ``vit_b_16`` (224 px, real weights are not available offline); lxt's
relevance is gradient×input of ``Z[k,u,v]`` computed through the same readout
(patch tokens → heads). Printed: per cell, the relative L1 difference, the Pearson
correlation of the two pixel maps and both conservation ratios, once with the
position embedding zeroed (both rule sets then coincide in theory) and once with
it (lxt's gradient×input gives it a bias share; ours hands a token's relevance to
its patch embedding in full).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import types
from pathlib import Path

import torch
from torch import nn

CELLS = [(0, 0), (7, 7), (3, 11), (13, 2)]
SEED = 0


def build(zero_position: bool) -> nn.Module:
    from torchvision.models import vit_b_16

    torch.manual_seed(SEED)
    model = vit_b_16().eval()
    with torch.no_grad():
        nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision zero-inits the head
        if zero_position:
            model.encoder.pos_embedding.zero_()
    return model


def images() -> torch.Tensor:
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(SEED + 1))


def cell_score(model: nn.Module, x: torch.Tensor, k: int, u: int, v: int) -> torch.Tensor:
    """``Z[k, u, v]``: the head on patch token ``(u, v)`` (the torchvision-vit adapter's readout)."""
    tokens = model._process_input(x)
    tokens = torch.cat([model.class_token.expand(len(x), -1, -1), tokens], dim=1)
    out = model.encoder(tokens)[:, 1:]
    return model.heads(out[:, u * 14 + v])[:, k]


def run_lxt(zero_position: bool, classes: list[int], out: Path) -> None:
    """Child process: lxt's patches, gradient×input per cell."""
    import importlib

    import lxt

    stub = types.ModuleType("lxt.efficient.models")
    stub.__path__ = [str(Path(lxt.__file__).parent / "efficient" / "models")]
    stub.get_default_map = lambda module: None  # type: ignore[attr-defined]
    sys.modules["lxt.efficient.models"] = stub
    efficient = importlib.import_module("lxt.efficient")
    vit_torch = importlib.import_module("lxt.efficient.models.vit_torch")
    from torchvision.models import vision_transformer
    from zennit.composites import LayerMapComposite
    from zennit.rules import Epsilon

    efficient.monkey_patch(vision_transformer, vit_torch.cp_LRP)
    efficient.monkey_patch_zennit()
    model = build(zero_position)
    composite = LayerMapComposite([((nn.Linear, nn.Conv2d), Epsilon(epsilon=1e-6))])
    maps = []
    with composite.context(model):
        for (u, v), k in zip(CELLS, classes, strict=True):
            x = images().requires_grad_(True)
            cell_score(model, x, k, u, v).sum().backward()
            maps.append((x * x.grad).detach().sum(dim=1))
    torch.save(torch.stack(maps), out)


def main() -> None:
    from dense_readout.lrp import LRPReadout

    print("| position embedding | cell | rel. L1 diff | Pearson r | ours | lxt |")
    print("|---|---|---|---|---|---|")
    for zero_position in (True, False):
        model = build(zero_position)
        lrp = LRPReadout(model, "epsilon", composite_options={"epsilon": 1e-6})
        x = images()
        ours = [lrp.cell(x, cell=c) for c in CELLS]
        classes = [int(r.targets[0]) for r in ours]
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "lxt.pt"
            command = [sys.executable, __file__, "--child", str(int(zero_position)), str(path)]
            subprocess.run([*command, *map(str, classes)], check=True)
            theirs = torch.load(path)
        for index, (cell, result) in enumerate(zip(CELLS, ours, strict=True)):
            a, b = result.relevance[0, 0], theirs[index, 0]
            diff = float((a - b).abs().sum() / b.abs().sum())
            r = float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])
            start = float(result.start[0])
            label = "zeroed" if zero_position else "random init"
            print(
                f"| {label} | {cell} | {diff:.2e} | {r:.6f} | "
                f"{float(a.sum()) / start:.4f} | {float(b.sum()) / start:.4f} |"
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        torch.set_num_threads(1)
        run_lxt(bool(int(sys.argv[2])), [int(k) for k in sys.argv[4:]], Path(sys.argv[3]))
    else:
        main()
