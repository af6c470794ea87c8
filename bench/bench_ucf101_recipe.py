""" "UCF101 in four commands", measured on a generated tree of UCF101's shape.

1. `actrec manifest ucf101` on a full-size tree: 101 class folders, 25 source videos (groups)
   per class, 13,320 clips named as UCF101 names them, and `ucfTrainTestlist/` in the official
   format (fold 1 tests groups 1-7). The clips are empty files: the manifest never decodes.
2. `actrec extract MANIFEST --fps 5` on a sample of those clips made real: 320x240, 25 fps,
   186 frames (UCF101's mean length), MPEG-4 Part 2 in AVI as UCF101's XviD clips; seconds
   per clip and bytes per stored frame, scaled to 13,320 clips.
3. `actrec train --head gru|mean` on a generated cache of the full shape (13,320 sequences of
   the sampled length, 512-D float16, the manifest's splits and groups): seconds per epoch.
4. `actrec report` on the gru run.

Prints a table and writes bench/results/ucf101_recipe.json.

Example: .venv/bin/python bench/bench_ucf101_recipe.py --sample 24 --epochs 2
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from actrec.common.cache import Video, open_cache, write_cache

HERE = Path(__file__).parent
CLASSES, GROUPS, CLIPS = 101, 25, 13_320
MEAN_FRAMES, FPS = 186, 25  # UCF101: 27 hours in 13,320 clips, about 7.3 s at 25 fps


def clips_per_group() -> list[int]:
    # 4 to 7 clips per group as in UCF101, summing to its 13,320 clips
    rng = np.random.default_rng(0)
    counts = rng.integers(4, 8, CLASSES * GROUPS)
    while counts.sum() != CLIPS:
        i = rng.integers(len(counts))
        step = -1 if counts.sum() > CLIPS else 1
        if 4 <= counts[i] + step <= 7:
            counts[i] += step
    return counts.tolist()


def make_tree(base: Path) -> Path:
    classes = [f"Action{c:03d}" for c in range(1, CLASSES + 1)]
    counts = iter(clips_per_group())
    train, test = [], []
    for c, name in enumerate(classes, 1):
        (base / "UCF-101" / name).mkdir(parents=True, exist_ok=True)
        for g in range(1, GROUPS + 1):
            for k in range(1, next(counts) + 1):
                clip = f"{name}/v_{name}_g{g:02d}_c{k:02d}.avi"
                (base / "UCF-101" / clip).touch()
                (test if g <= 7 else train).append((clip, c))
    lists = base / "ucfTrainTestlist"
    lists.mkdir(exist_ok=True)
    crlf = "\r\n"
    (lists / "classInd.txt").write_text(
        "".join(f"{c} {n}{crlf}" for c, n in enumerate(classes, 1)), newline=""
    )
    (lists / "trainlist01.txt").write_text("".join(f"{p} {c}{crlf}" for p, c in train), newline="")
    (lists / "testlist01.txt").write_text("".join(f"{p}{crlf}" for p, _ in test), newline="")
    return base / "UCF-101"


def encode_clip(path: Path, seed: int) -> None:
    """A textured scene drifting across the frame, so the encoder has real motion to code."""
    rng = np.random.default_rng(seed)
    scene = rng.integers(0, 256, (240 + MEAN_FRAMES, 320 + MEAN_FRAMES, 3), dtype=np.uint8)
    scene = scene // 4 + np.linspace(0, 190, scene.shape[1], dtype=np.uint8)[None, :, None]
    with av.open(str(path), "w", format="avi") as out:
        stream = out.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.bit_rate = 800_000
        for i in range(MEAN_FRAMES):
            frame = np.ascontiguousarray(scene[i // 2 : i // 2 + 240, i : i + 320])
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())


def actrec(*args: object) -> float:
    """Runs one command as a user would; its wall time in seconds, start-up included."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "actrec", *map(str, args)], check=True)
    return time.perf_counter() - start


def synthetic_cache(path: Path, manifest: Path, frames: int) -> None:
    """The cache the full extraction would write: one sequence per manifest row."""
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((CLASSES, 512)).astype(np.float32)
    classes = sorted({r["label"] for r in rows})

    def videos():
        for r in sorted(rows, key=lambda r: r["path"]):
            noise = rng.standard_normal((frames, 512), dtype=np.float32)  # (T, D)
            x = centres[classes.index(r["label"])] * 0.3 + noise  # (T, D)
            yield Video(id=r["path"], features=x.astype(np.float16),
                        timestamps=np.arange(frames) / 5.0, label=r["label"],
                        split=r["split"], group=r["group"], fps=25.0)  # fmt: skip

    write_cache(path, videos(), {"backbone": "bench", "sampling": "fps=5"}, dim=512)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=24, help="clips made real and extracted")
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed per head")
    args = parser.parse_args()
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = make_tree(work)
        manifest = work / "ucf101.csv"
        out["manifest_s"] = actrec("manifest", "ucf101", root, "-o", manifest)
        out["manifest_bytes"] = manifest.stat().st_size

        with open(manifest, newline="") as fh:
            rows = list(csv.DictReader(fh))
        sample = rows[:: len(rows) // args.sample][: args.sample]  # across all classes
        for k, r in enumerate(sample):
            encode_clip(work / r["path"], k)
        out["clip_bytes"] = float(np.mean([(work / r["path"]).stat().st_size for r in sample]))
        small = work / "sample.csv"
        with open(small, "w", newline="") as fh:
            writer = csv.DictWriter(fh, ["path", "label", "split", "group"])
            writer.writeheader()
            writer.writerows(sample)
        cache = work / "sample.h5"
        seconds = actrec("extract", small, "-o", cache, "--fps", "5", "--weights", "none",
                         "--quiet")  # fmt: skip
        with open_cache(cache) as c:
            frames = c.total_frames
        out["extract_s_per_clip"] = seconds / len(sample)
        out["frames_per_clip"] = frames / len(sample)
        out["cache_bytes_per_frame"] = cache.stat().st_size / frames

        full = work / "full.h5"
        synthetic_cache(full, manifest, round(out["frames_per_clip"]))
        out["cache_bytes"] = full.stat().st_size
        for head in ("gru", "mean"):
            run = work / head
            actrec("train", full, "--head", head, "-o", run, "--epochs", args.epochs,
                   "--patience", 0, "--quiet")  # fmt: skip
            with open(run / "history.csv", newline="") as fh:
                history = list(csv.DictReader(fh))
            out[f"{head}_s_per_epoch"] = float(np.mean([float(h["seconds"]) for h in history]))
            out[f"{head}_split_sizes"] = json.loads((run / "config.json").read_text())[
                "split_sizes"
            ]
        out["report_s"] = actrec("report", work / "gru")

    scale = CLIPS / 3600
    print(f"manifest  {out['manifest_s']:.1f} s, {out['manifest_bytes'] / 2**20:.1f} MiB")
    print(f"extract   {out['extract_s_per_clip']:.2f} s/clip -> {out['extract_s_per_clip'] * scale:.1f} h"
          f" for 13,320 clips; {out['frames_per_clip']:.0f} frames/clip; cache "
          f"{out['cache_bytes'] / 2**20:.0f} MiB; clip {out['clip_bytes'] / 2**10:.0f} KiB")  # fmt: skip
    print(f"train     gru {out['gru_s_per_epoch']:.1f} s/epoch, mean {out['mean_s_per_epoch']:.1f}"
          f" s/epoch; splits {out['gru_split_sizes']}")  # fmt: skip
    print(f"report    {out['report_s']:.1f} s")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "ucf101_recipe.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
