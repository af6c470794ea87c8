"""Stage one: frames per second and peak memory of `actrec extract`, against, in the same run,

(a) a naive pipeline: decode each whole video into memory as PIL images, torchvision's transforms
    frame by frame, one forward pass per video;
(b) the model's ceiling: forward passes alone on ready tensors (same batch, precision, layout);
(c) the decoder's ceiling ("decode alone"): the same number of worker processes decoding and
    resizing with actrec's own reader and threads, and dropping the frames (no transport);

for resnet18 at 224x224 (resnet50 with --resnet50), and DINOv2's ViT-S/14 from timm at 224x224
where timm is installed (--no-vit leaves it out), and each precision in --precisions, on
generated H.264 videos of several lengths. The limit is min(b, c); the goals on 2 CPU cores are
at least 2x (a) and at least 85% of the limit, for each backbone against its own ceilings. A
memory check runs the extraction of a short and of a long video in separate processes and
compares their peak RSS (main process + workers).

The hand-off rows measure what stage one costs beyond decoding: `actrec extract` with a
near-free backbone (a torch.export module that averages each frame) against decoding alone, with
1 and 2 workers on the same 320x240 H.264 videos of 600 frames, whole runs (start-up included),
each pair in turn, --repeats times, the best of each; and the main process's CPU time per frame
(all its threads). Goal: hand-off >= 90% of decode-alone.

Prints a table and writes bench/results/extract.json (--handoff-only: extract_handoff.json).

Example: .venv/bin/python bench/bench_extract.py --quick
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import itertools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import av
import numpy as np
import torch
import torchvision

from actrec.common.device import autocast
from actrec.extract import ExtractConfig, Sampling, find_items, load_backbone, run_extraction
from actrec.extract.decode import Reader

HERE = Path(__file__).parent
RESULTS = HERE / "results"
VIT = "timm:vit_small_patch14_dinov2.lvd142m"  # ViT-S/14, 384-D; made for 518x518, run at 224
SIZE = (224, 224)
SHORT = {VIT: "vit-s/14"}  # table labels


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


def make_source(root: Path, lengths: list[int], copies: int = 1) -> Path:
    for i, n in enumerate(lengths * copies):
        video = root / "bench" / f"{i:03d}_{n}.mp4"
        if not video.exists():
            make_video(video, n)
    return root


def run_actrec(
    source: Path, out: Path, backbone: str, precision: str, batch: int, workers: int, device: str
):
    for stale in out.parent.glob(out.name + "*"):  # the cache, and an interrupted run's part
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    config = ExtractConfig(
        source=source, output=out, backbone=backbone, weights="none", batch_size=batch,
        workers=workers, precision=precision, device=device, progress=False, input_size=SIZE,
    )  # fmt: skip
    with GpuUtilisation(device) as util:
        start = time.perf_counter()
        result = run_extraction(config)
        seconds = time.perf_counter() - start
    return result.frames / seconds, result.frames, util.mean


class GpuUtilisation:
    """Mean GPU utilisation (%) while the block runs, sampled by NVML; None off CUDA."""

    def __init__(self, device: str, every_s: float = 0.2) -> None:
        self.device, self.every_s, self.samples = torch.device(device), every_s, []
        self._stop = threading.Event()

    def __enter__(self) -> GpuUtilisation:
        if self.device.type == "cuda":
            threading.Thread(target=self._sample, daemon=True).start()
        return self

    def _sample(self) -> None:
        try:
            import pynvml
        except ImportError:
            return
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(self.device.index or 0)
        while not self._stop.wait(self.every_s):
            self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)

    def __exit__(self, *exc) -> None:
        self._stop.set()

    @property
    def mean(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None


def naive_model(backbone: str):
    """(model, per-image transform) as a naive extractor sets them up."""
    torch.manual_seed(0)
    if backbone.startswith("timm:"):
        import timm

        name = backbone.removeprefix("timm:")
        model = timm.create_model(name, num_classes=0, img_size=SIZE).eval()
        config = timm.data.resolve_data_config(model=model)
        config["input_size"] = (3, *SIZE)
        return model, timm.data.create_transform(**config)
    weights = torchvision.models.get_model_weights(backbone).DEFAULT
    model = torchvision.models.get_model(backbone, weights=None).eval()
    model.fc = torch.nn.Identity()  # what naive extractors do; actrec itself never does this
    return model, weights.transforms()


def run_naive(source: Path, backbone: str, precision: str, device: str) -> float:
    """Per-video loop as in many extractors: whole video in memory, PIL transforms per frame."""
    model, transform = naive_model(backbone)
    device = torch.device(device)
    model.to(device)
    frames_total = 0
    start = time.perf_counter()
    for item in find_items(source):
        with av.open(str(item.path)) as c:
            images = [f.to_image() for f in c.decode(video=0)]
        x = torch.stack([transform(im) for im in images]).to(device)
        with torch.inference_mode(), autocast(device, precision):
            model(x).cpu()
        frames_total += len(images)
    return frames_total / (time.perf_counter() - start)


def run_model_ceiling(
    backbone: str, precision: str, batch: int, device: str, seconds: float = 8.0
) -> float:
    device = torch.device(device)
    net = load_backbone(backbone, "none", input_size=SIZE, device=device)
    x = torch.randn(batch, 3, *net.input_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, precision):
        net.module(x).cpu()  # warm-up: oneDNN / cuDNN pick their kernels
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            net.module(x).cpu()  # the copy back, as the pipeline does, also synchronises
            n += batch
    return n / (time.perf_counter() - start)


def _decode_settings(workers: int) -> dict:
    """The decoder and scaler threads actrec's own workers use (older actrec: one setting)."""
    if "scaler_threads" not in inspect.signature(Reader).parameters:
        return {"threads": max(1, (os.cpu_count() or 1) // max(workers, 1))}
    from actrec.extract.threads import thread_budget

    budget = thread_budget(workers, "cpu")
    return {"threads": budget.decoder, "scaler_threads": budget.scaler}


def _decode_alone_worker(tasks, counts, resize, settings: dict) -> None:
    """Decode and resize items from ``tasks`` as actrec's workers do, and drop the frames."""
    frames, failed = 0, []
    buffer = np.empty((16, resize.height, resize.width, 3), dtype=np.uint8)
    while (item := tasks.get()) is not None:
        try:
            reader = Reader(item, Sampling(), resize, **settings)
            if hasattr(reader, "read_into"):  # straight into one buffer, as into shared slots
                frames += sum(k for k, _ in reader.read_into(itertools.repeat(buffer)))
            else:
                frames += sum(len(f) for f, _ in reader.chunks(16))
        except Exception as e:  # noqa: BLE001 - reported, and the bench stops
            failed.append(f"{item.id}: {e}")
    counts.put((frames, failed))


def run_decode_alone(source: Path, backbone: str, workers: int) -> tuple[float, float]:
    """(frames per second, CPU microseconds per frame) of ``workers`` processes that only decode
    and resize (largest files first, as actrec hands them out), process start-up included."""
    import multiprocessing as mp

    net = load_backbone(backbone, "none", input_size=SIZE)
    items = sorted(find_items(source), key=lambda it: -it.path.stat().st_size)
    ctx = mp.get_context("fork")
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    tasks, counts = ctx.Queue(), ctx.Queue()
    for item in items:
        tasks.put(item)
    settings = _decode_settings(workers)
    procs = [
        ctx.Process(target=_decode_alone_worker, args=(tasks, counts, net.resize, settings))
        for _ in range(max(workers, 1))
    ]
    for proc in procs:
        tasks.put(None)
        proc.start()
    results = [counts.get() for _ in procs]
    for proc in procs:
        proc.join()
    seconds = time.perf_counter() - start
    now = resource.getrusage(resource.RUSAGE_CHILDREN)  # the joined workers, every thread
    cpu = (now.ru_utime + now.ru_stime) - (used.ru_utime + used.ru_stime)
    failed = [f for _, fs in results for f in fs]
    if failed:  # a ceiling over fewer videos than the other columns would compare nothing
        raise SystemExit(f"decoding failed for {len(failed)} of {len(items)} videos: {failed[0]}")
    frames = sum(n for n, _ in results)
    return frames / seconds, 1e6 * cpu / frames


class _Average(torch.nn.Module):
    """A near-free backbone: each frame's mean colour."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, 3)
        return x.mean(dim=(2, 3))


def average_backbone(folder: Path) -> Path:
    path = folder / "average.pt2"
    if not path.exists():
        batch = torch.export.Dim("batch", min=1, max=4096)
        exported = torch.export.export(
            _Average(), (torch.zeros(2, 3, *SIZE),), dynamic_shapes=({0: batch},)
        )
        torch.export.save(exported, path)
    return path


def run_handoff(source: Path, out: Path, pt2: Path, workers: int, batch: int) -> tuple:
    """(frames/s, main-process CPU microseconds per frame) of `actrec extract` with ``pt2``."""
    for stale in out.parent.glob(out.name + "*"):  # the cache, and an interrupted run's part
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    config = ExtractConfig(
        source=source, output=out, backbone=str(pt2), weights="none", input_size=SIZE,
        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), batch_size=batch, workers=workers,
        device="cpu", dtype="float32", progress=False,
    )  # fmt: skip
    cpu, start = time.process_time(), time.perf_counter()
    result = run_extraction(config)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    if result.failed:
        raise SystemExit(f"hand-off run failed items: {result.failed}")
    return result.frames / seconds, 1e6 * cpu / result.frames


def handoff_rows(work: Path, videos: int, frames: int, repeats: int, batch: int) -> list[dict]:
    """Decode-alone and hand-off, 1 and 2 workers, in turn, best of ``repeats``."""
    source = make_source(work / "handoff_videos", [frames], videos)
    pt2 = average_backbone(work)
    best: dict = {}
    for _ in range(repeats):
        for workers in (1, 2):
            alone, decode_us = run_decode_alone(source, "resnet18", workers)
            ours, us = run_handoff(source, work / "handoff.h5", pt2, workers, batch)
            b = best.setdefault(workers, {"alone": [], "handoff": [], "us": [], "decode_us": []})
            b["alone"].append(alone)
            b["decode_us"].append(decode_us)
            b["handoff"].append(ours)
            b["us"].append(us)
            print(f"workers {workers}: decode alone {alone:.0f}, hand-off {ours:.0f} frames/s, "
                  f"main {us:.0f} us/frame", flush=True)  # fmt: skip
    rows = []
    cpus = machine()["usable_cpus"]
    for workers, b in best.items():
        alone, ours = max(b["alone"]), max(b["handoff"])
        main_us, decode_us = min(b["us"]), min(b["decode_us"])
        # Where decoding alone keeps every CPU busy, the main process's own work (normalising,
        # the model) can only come out of the decoders' time: the best the hand-off could do
        bound = min(alone, cpus * 1e6 / (decode_us + main_us)) / alone
        rows.append({
            "workers": workers, "decode_alone_fps": round(alone, 1), "handoff_fps": round(ours, 1),
            "ratio": round(ours / alone, 3), "main_us_per_frame": round(main_us, 1),
            "decode_us_per_frame": round(decode_us, 1), "cpus": cpus, "cpu_bound": round(bound, 3),
            "spread_alone": round(max(b["alone"]) / min(b["alone"]) - 1, 3),
            "spread_handoff": round(max(b["handoff"]) / min(b["handoff"]) - 1, 3),
            "videos": videos, "frames_each": frames, "repeats": repeats,
        })  # fmt: skip
    return rows


def print_handoff(rows: list[dict]) -> None:
    print("\nhand-off: `actrec extract` with a backbone that averages each frame, against "
          "decoding alone (same workers, same videos)")  # fmt: skip
    print(f"{'workers':>7} {'decode alone':>12} {'hand-off':>9} {'ratio':>6} {'CPU bound':>9} "
          f"{'decode us/frame':>15} {'main us/frame':>13}  spread (best/worst-1) alone, hand-off")  # fmt: skip
    for r in rows:
        print(f"{r['workers']:>7} {r['decode_alone_fps']:>12.1f} {r['handoff_fps']:>9.1f} "
              f"{100 * r['ratio']:>5.1f}% {100 * r['cpu_bound']:>8.1f}% "
              f"{r['decode_us_per_frame']:>15.1f} {r['main_us_per_frame']:>13.1f}  "
              f"{100 * r['spread_alone']:.0f}%, {100 * r['spread_handoff']:.0f}%")  # fmt: skip
    print(
        "CPU bound: the hand-off's best where decoding alone keeps every CPU busy, "
        "cpus / (decode + main CPU per frame), over decode alone"
    )


MEMORY_SCRIPT = """
import resource, sys
from pathlib import Path
mode, source, out = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
if mode == "actrec":
    from actrec.extract import ExtractConfig, run_extraction
    run_extraction(ExtractConfig(source=source, output=out, weights="none", input_size=(112, 112),
        batch_size=32, workers=1, device="cpu", progress=False))
else:  # the naive way: the whole video decoded into memory, then transformed
    import av, torch, torchvision
    from torchvision.transforms import v2
    t = v2.Compose([v2.PILToTensor(), v2.Resize(128), v2.CenterCrop(112), v2.ToDtype(torch.float32, scale=True)])
    model = torchvision.models.resnet18().eval()
    for video in sorted(source.rglob("*.mp4")):
        with av.open(str(video)) as c:
            images = [f.to_image() for f in c.decode(video=0)]
        with torch.inference_mode():
            model(torch.stack([t(im) for im in images]))
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent, VmHWM starts afresh
status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
print(int(status["VmHWM"].split()[0]), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_memory(mode: str, source: Path, out: Path) -> dict:
    """Peak RSS (MiB) of a fresh process running ``mode`` (actrec or naive) over ``source``,
    and of its decoding worker (actrec only)."""
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, mode, str(source), str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    own, kids = (int(x) / 1024 for x in done.stdout.split())
    return {
        "main_mib": round(own, 1),
        **({"worker_mib": round(kids, 1)} if mode == "actrec" else {}),
    }


def machine() -> dict:
    """What the figures were measured on."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines()
                  if ln.startswith("model name")), platform.processor())  # fmt: skip
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": model, "cpus": os.cpu_count(), "usable_cpus": usable,
        "avx512_bf16": "avx512_bf16" in info, "amx_bf16": "amx_bf16" in info,
        "torch": str(torch.__version__), "av": str(av.__version__),
        "threads": torch.get_num_threads(),
    }  # fmt: skip


def default_precisions(device: str) -> str:
    """bfloat16 is worth timing on CUDA and on CPUs with AVX-512 BF16 or AMX; elsewhere it is
    emulated, several times slower than float32, and would only make the run long."""
    if torch.device(device).type == "cuda":
        return "float32,bfloat16"
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "float32,bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer, shorter videos (about 3 minutes)")
    p.add_argument("--resnet50", action="store_true", help="also resnet50 (slow on a CPU)")
    p.add_argument("--no-vit", action="store_true", help=f"leave out {VIT} (needs timm)")
    p.add_argument(
        "--precisions",
        default=None,
        help="comma-separated [default: float32, and bfloat16 where the CPU has it natively]",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--dir", type=Path, default=None, help="where to keep generated videos")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (bench/gpu.sh)")
    p.add_argument("--copies", type=int, default=1, help="videos of each length (more on a GPU)")
    p.add_argument("--skip-naive", action="store_true", help="leave out the naive pipeline")
    p.add_argument("--skip-memory", action="store_true", help="leave out the memory check")
    p.add_argument("--skip-handoff", action="store_true", help="leave out the hand-off rows")
    p.add_argument("--handoff-only", action="store_true", help="only the hand-off rows")
    p.add_argument("--repeats", type=int, default=None, help="runs of each timing, best kept "
                   "[default: 3, --quick 2]")  # fmt: skip
    args = p.parse_args(argv)

    # enough frames that start-up (model, workers) is a small part of every timing
    lengths = [60, 120, 240] if args.quick else [25, 50, 100, 200, 400, 600]
    precisions = (args.precisions or default_precisions(args.device)).split(",")
    work = args.dir or Path(tempfile.mkdtemp(prefix="actrec-bench-"))
    repeats = args.repeats or (2 if args.quick else 3)
    handoff = []
    if not args.skip_handoff and args.device == "cpu":
        videos = 8 if args.quick else 16
        handoff = handoff_rows(work, videos, 600, repeats, args.batch_size)
        print_handoff(handoff)
    if args.handoff_only:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / "extract_handoff.json"
        out.write_text(json.dumps({"handoff": handoff, **machine()}, indent=1))
        print(f"wrote {out}")
        return 0
    source = make_source(work / "videos", lengths, args.copies)
    backbones = ["resnet18"] + (["resnet50"] if args.resnet50 else [])
    if not args.no_vit and importlib.util.find_spec("timm") is not None:
        backbones.append(VIT)
    measure = 3 if args.quick else 10
    rows = []
    for backbone in backbones:
        decoder = max(run_decode_alone(source, backbone, args.workers)[0] for _ in range(repeats))
        for precision in precisions:
            model, ours = 0.0, 0.0
            for _ in range(repeats):  # in turn, the best of each
                model = max(model, run_model_ceiling(
                    backbone, precision, args.batch_size, args.device, measure
                ))  # fmt: skip
                fps, frames, util = run_actrec(
                    source, work / "out.h5", backbone, precision, args.batch_size, args.workers,
                    args.device,
                )  # fmt: skip
                ours = max(ours, fps)
            naive = (
                float("nan")
                if args.skip_naive
                else run_naive(source, backbone, precision, args.device)
            )
            limit = min(model, decoder)
            rows.append({
                "backbone": SHORT.get(backbone, backbone), "precision": precision, "frames": frames,
                "actrec_fps": round(ours, 1), "naive_fps": round(naive, 1),
                "model_ceiling_fps": round(model, 1), "decoder_ceiling_fps": round(decoder, 1),
                "vs_naive": round(ours / naive, 2), "vs_limit": round(ours / limit, 3),
                "limit": "model" if model <= decoder else "decoder", "gpu_util_pct": util,
            })  # fmt: skip
            print(rows[-1], flush=True)

    short, long = (50, 1000) if args.quick else (250, 3000)  # 2 s vs 40 s; 10 s vs 2 min
    memory = {}
    for name, n in () if args.skip_memory else (("short", short), ("long", long)):
        folder = work / f"memory_{name}"
        make_video(folder / "m" / "v.mp4", n)
        memory[name] = {
            "frames": n,
            "actrec": peak_memory("actrec", folder, work / f"memory_{name}.h5"),
            "naive": peak_memory("naive", folder, work / f"memory_{name}.h5"),
        }
    growth = {
        way: memory["long"][way]["main_mib"] - memory["short"][way]["main_mib"] if memory else None
        for way in ("actrec", "naive")
    }

    header = (
        f"{'backbone':<9} {'precision':<9} {'actrec':>8} {'naive':>7} {'model':>7} "
        f"{'decoder':>8} {'x naive':>8} {'% limit':>8}  limit"
    )
    print(f"\nframes per second, 224x224, batch {args.batch_size}, workers {args.workers}, "
          f"device {args.device}")  # fmt: skip
    print(header)
    for r in rows:
        print(
            f"{r['backbone']:<9} {r['precision']:<9} {r['actrec_fps']:>8.1f} {r['naive_fps']:>7.1f} "
            f"{r['model_ceiling_fps']:>7.1f} {r['decoder_ceiling_fps']:>8.1f} "
            f"{r['vs_naive']:>8.2f} {100 * r['vs_limit']:>7.1f}%  {r['limit']}"
            + (f"  GPU busy {r['gpu_util_pct']}%" if r["gpu_util_pct"] is not None else "")
        )
    for name, m in memory.items():
        print(f"peak RSS, {name} video ({m['frames']} frames, 112x112): actrec main "
              f"{m['actrec']['main_mib']} MiB + worker {m['actrec']['worker_mib']} MiB; "
              f"naive {m['naive']['main_mib']} MiB")  # fmt: skip
    if memory:
        print(f"growth from short to long: actrec {growth['actrec']:+.1f} MiB, "
              f"naive {growth['naive']:+.1f} MiB")  # fmt: skip

    if handoff:
        print_handoff(handoff)
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {
        "rows": rows, "handoff": handoff, "memory": memory, "memory_growth_mib": growth,
        "lengths": lengths, "batch_size": args.batch_size, "workers": args.workers,
        "device": args.device, "quick": args.quick, "repeats": repeats, **machine(),
        "maxrss_mib_this_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }  # fmt: skip
    out = RESULTS / ("extract.json" if args.device == "cpu" else "extract_gpu.json")
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
