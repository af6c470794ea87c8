"""Stage one: frames per second and peak memory of `actrec extract`, against, in the same run,

(a) a naive pipeline: decode each whole video into memory as PIL images, torchvision's transforms
    frame by frame, one forward pass per video;
(b) the model's ceiling: forward passes alone on ready tensors (same batch, precision, layout);
(c) the decoder's ceiling: decoding and resizing alone, with the same worker processes;

for resnet18 at 224x224 (resnet50 with --resnet50) and each precision in --precisions, on
generated H.264 videos of several lengths. The limit is min(b, c); the goals on 2 CPU cores are
at least 2x (a) and at least 85% of the limit. A memory check runs the extraction of a short and
of a long video in separate processes and compares their peak RSS (main process + workers).

Prints a table and writes bench/results/extract.json.

Example: .venv/bin/python bench/bench_extract.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
import torchvision

from actrec.common.device import autocast
from actrec.extract import ExtractConfig, Sampling, find_items, load_backbone, run_extraction
from actrec.extract.pipeline import _worker_messages

HERE = Path(__file__).parent
RESULTS = HERE / "results"


def make_video(path: Path, n_frames: int, width: int = 320, height: int = 240, fps: int = 25):
    """A moving gradient with noise: real motion for the encoder, cheap to generate."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n_frames)
    yy, xx = np.mgrid[0:height, 0:width]
    noise = rng.integers(0, 24, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for i in range(n_frames):
            img = np.stack([(xx + 3 * i) % 256, (yy + 2 * i) % 256, (xx + yy + i) % 256], -1)
            img = (img.astype(np.uint8) // 2 + noise).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def make_source(root: Path, lengths: list[int]) -> Path:
    for i, n in enumerate(lengths):
        video = root / "bench" / f"{i:03d}_{n}.mp4"
        if not video.exists():
            make_video(video, n)
    return root


def run_actrec(source: Path, out: Path, backbone: str, precision: str, batch: int, workers: int):
    for stale in out.parent.glob(out.name + "*"):
        if stale.is_file():
            stale.unlink()
    config = ExtractConfig(
        source=source, output=out, backbone=backbone, weights="none", batch_size=batch,
        workers=workers, precision=precision, device="cpu", progress=False,
    )  # fmt: skip
    start = time.perf_counter()
    result = run_extraction(config)
    seconds = time.perf_counter() - start
    return result.frames / seconds, result.frames


def run_naive(source: Path, backbone: str, precision: str) -> float:
    """Per-video loop as in many extractors: whole video in memory, PIL transforms per frame."""
    weights = torchvision.models.get_model_weights(backbone).DEFAULT
    transform = weights.transforms()
    torch.manual_seed(0)
    model = torchvision.models.get_model(backbone, weights=None).eval()
    model.fc = torch.nn.Identity()
    device = torch.device("cpu")
    frames_total = 0
    start = time.perf_counter()
    for item in find_items(source):
        with av.open(str(item.path)) as c:
            images = [f.to_image() for f in c.decode(video=0)]
        x = torch.stack([transform(im) for im in images])
        with torch.inference_mode(), autocast(device, precision):
            model(x)
        frames_total += len(images)
    return frames_total / (time.perf_counter() - start)


def run_model_ceiling(backbone: str, precision: str, batch: int, seconds: float = 8.0) -> float:
    net = load_backbone(backbone, "none")
    device = torch.device("cpu")
    x = torch.randn(batch, 3, *net.input_size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, precision):
        net.module(x)  # warm-up: oneDNN picks its kernels
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            net.module(x)
            n += batch
    return n / (time.perf_counter() - start)


def run_decoder_ceiling(source: Path, backbone: str, workers: int) -> float:
    net = load_backbone(backbone, "none")
    items = find_items(source)
    frames, start = 0, time.perf_counter()
    for msg in _worker_messages(items, Sampling(), net.resize, workers):
        if msg[0] == "frames":
            frames += len(msg[2])
    return frames / (time.perf_counter() - start)


MEMORY_SCRIPT = """
import resource, sys
from actrec.extract import ExtractConfig, run_extraction
run_extraction(ExtractConfig(source=sys.argv[1], output=sys.argv[2], weights="none",
    input_size=(112, 112), batch_size=32, workers=1, device="cpu", progress=False))
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(own, kids)
"""


def peak_memory(source: Path, out: Path) -> dict:
    """Peak RSS (MiB) of a fresh process extracting ``source``, and of its decoding worker."""
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(source), str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    own, kids = (int(x) / 1024 for x in done.stdout.split())
    return {"main_mib": round(own, 1), "worker_mib": round(kids, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer, shorter videos (about 3 minutes)")
    p.add_argument("--resnet50", action="store_true", help="also resnet50 (slow on a CPU)")
    p.add_argument("--precisions", default="float32,bfloat16")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--dir", type=Path, default=None, help="where to keep generated videos")
    args = p.parse_args(argv)

    lengths = [20, 40, 80] if args.quick else [25, 50, 100, 200, 400, 600]
    work = args.dir or Path(tempfile.mkdtemp(prefix="actrec-bench-"))
    source = make_source(work / "videos", lengths)
    backbones = ["resnet18"] + (["resnet50"] if args.resnet50 else [])
    rows = []
    for backbone in backbones:
        decoder = run_decoder_ceiling(source, backbone, args.workers)
        for precision in args.precisions.split(","):
            model = run_model_ceiling(backbone, precision, args.batch_size, 3 if args.quick else 10)
            ours, frames = run_actrec(
                source, work / "out.h5", backbone, precision, args.batch_size, args.workers
            )
            naive = run_naive(source, backbone, precision)
            limit = min(model, decoder)
            rows.append({
                "backbone": backbone, "precision": precision, "frames": frames,
                "actrec_fps": round(ours, 1), "naive_fps": round(naive, 1),
                "model_ceiling_fps": round(model, 1), "decoder_ceiling_fps": round(decoder, 1),
                "vs_naive": round(ours / naive, 2), "vs_limit": round(ours / limit, 3),
                "limit": "model" if model <= decoder else "decoder",
            })  # fmt: skip
            print(rows[-1], flush=True)

    short, long = (50, 1000) if args.quick else (250, 3000)  # 2 s vs 40 s; 10 s vs 2 min
    memory = {}
    for name, n in (("short", short), ("long", long)):
        folder = work / f"memory_{name}"
        make_video(folder / "m" / "v.mp4", n)
        memory[name] = {"frames": n, **peak_memory(folder, work / f"memory_{name}.h5")}
    growth = memory["long"]["main_mib"] - memory["short"]["main_mib"]

    header = (
        f"{'backbone':<9} {'precision':<9} {'actrec':>8} {'naive':>7} {'model':>7} "
        f"{'decoder':>8} {'x naive':>8} {'% limit':>8}  limit"
    )
    print("\nframes per second, 224x224, batch", args.batch_size, ", workers", args.workers)
    print(header)
    for r in rows:
        print(
            f"{r['backbone']:<9} {r['precision']:<9} {r['actrec_fps']:>8.1f} {r['naive_fps']:>7.1f} "
            f"{r['model_ceiling_fps']:>7.1f} {r['decoder_ceiling_fps']:>8.1f} "
            f"{r['vs_naive']:>8.2f} {100 * r['vs_limit']:>7.1f}%  {r['limit']}"
        )
    for name, m in memory.items():
        print(f"peak RSS, {name} video ({m['frames']} frames): main {m['main_mib']} MiB, "
              f"worker {m['worker_mib']} MiB")  # fmt: skip
    print(f"growth from short to long: {growth:+.1f} MiB (main process)")

    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {
        "rows": rows, "memory": memory, "memory_growth_mib": round(growth, 1),
        "lengths": lengths, "batch_size": args.batch_size, "workers": args.workers,
        "quick": args.quick, "cpus": os.cpu_count(), "machine": platform.processor(),
        "torch": str(torch.__version__), "threads": torch.get_num_threads(),
        "maxrss_mib_this_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }  # fmt: skip
    (RESULTS / "extract.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {RESULTS / 'extract.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
