"""Frames per second of the recommended backbones alone (forward passes on ready tensors, the
ceiling of `actrec extract` on a machine where the model is the limit), with random weights
(the speed does not depend on them), at each model's default input size or --size.

Prints a table and writes bench/results/backbones.json; resnet18 is measured in the same run,
so that the ratios hold on a shared, noisy machine.

Example: .venv/bin/python bench/bench_backbones.py --seconds 8
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from actrec.common.device import autocast
from actrec.extract import load_backbone

RESULTS = Path(__file__).parent / "results"
BACKBONES = [
    "resnet18",
    "timm:vit_small_patch14_dinov2.lvd142m",
    "timm:vit_base_patch16_clip_224.openai",
    "timm:vit_base_patch16_siglip_224",
    "timm:eva02_small_patch14_224.mim_in22k",
    "timm:convnext_tiny.fb_in22k",
]


def frames_per_second(
    name: str, size: tuple[int, int] | None, batch: int, device: str, precision: str, seconds: float
) -> dict:
    device = torch.device(device)
    net = load_backbone(name, "none", input_size=size, device=device)
    x = torch.randn(batch, 3, *net.input_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, precision):
        net.module(x).cpu()  # warm-up: kernels chosen, memory allocated
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            net.module(x).cpu()
            n += batch
    fps = n / (time.perf_counter() - start)
    return {"backbone": name, "dim": net.dim, "input_size": list(net.input_size), "fps": fps}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", default=BACKBONES, help="backbone names [the table's]")
    p.add_argument("--size", type=int, help="input size for all [default: each model's own]")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seconds", type=float, default=8.0, help="timed per backbone")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="float32")
    args = p.parse_args(argv)

    size = (args.size, args.size) if args.size else None
    rows = []
    for name in args.names:
        rows.append(
            frames_per_second(
                name, size, args.batch_size, args.device, args.precision, args.seconds
            )
        )
        print(rows[-1], flush=True)
    base = next((r["fps"] for r in rows if r["backbone"] == "resnet18"), None)
    print(f"\nframes per second, model alone, batch {args.batch_size}, {args.precision}, "
          f"{args.device}, {torch.get_num_threads()} threads")  # fmt: skip
    for r in rows:
        ratio = f"{r['fps'] / base:6.2f}x resnet18" if base else ""
        h, w = r["input_size"]
        print(f"{r['backbone']:<42} {r['dim']:>5}-D {h:>4}x{w:<4} {r['fps']:>8.1f}  {ratio}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "backbones.json"
    out.write_text(json.dumps({"rows": rows, "args": vars(args), "cpus": os.cpu_count(),
                               "torch": str(torch.__version__)}, indent=1))  # fmt: skip
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
