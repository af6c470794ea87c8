"""Stage one's hand-off: frames through shared slots, batches collected a batch later, a thread
that writes segments, threads shared out, longest videos first."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from videos import Bands, bands, make_video

import actrec.extract.pipeline as pipeline
from actrec.common.cache import Video, open_cache
from actrec.common.partial import PartialCache
from actrec.extract import Sampling, find_items
from actrec.extract.backbones import Backbone
from actrec.extract.decode import Reader, Resize
from actrec.extract.threads import MainThreads, thread_budget
from actrec.extract.writer import SegmentWriter

CPU = torch.device("cpu")


def band_backbone() -> Backbone:
    return Backbone(Bands(), 2, Resize(32, 32, 32), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """Videos longer than one worker's ring (SLOTS_PER_WORKER x CHUNK frames), and short ones."""
    root = tmp_path_factory.mktemp("ring")
    for name, n in (("a", 100), ("b", 7), ("c", 40), ("d", 1), ("e", 75)):
        make_video(root / "x" / f"{name}.mp4", n, width=48, height=32)
    return root


def run(items, backbone=None, **kwargs) -> tuple[dict[str, Video], dict[str, str]]:
    videos, failed = {}, {}
    for batch in pipeline.stream_features(
        items, backbone or band_backbone(), Sampling(), device=CPU, precision="float32",
        dtype="float32", **kwargs,
    ):  # fmt: skip
        for v in batch.videos:
            assert v.id not in videos, f"{v.id} handed back twice"
            videos[v.id] = v
        failed.update(batch.failed)
    return videos, failed


def test_frames_through_the_shared_ring_are_every_frame_in_order(source):
    assert pipeline.SLOTS_PER_WORKER * pipeline.CHUNK < 100  # a long video reuses its slots
    items = find_items(source)
    for workers in (0, 1, 2):
        videos, failed = run(items, workers=workers, batch_size=24)
        assert failed == {}
        lengths = {"x/a.mp4": 100, "x/b.mp4": 7, "x/c.mp4": 40, "x/d.mp4": 1, "x/e.mp4": 75}
        assert {vid: len(v.features) for vid, v in videos.items()} == lengths, workers
        for vid, v in videos.items():
            assert [bands(t, b) for t, b in v.features] == list(range(lengths[vid])), vid
            np.testing.assert_allclose(np.diff(v.timestamps), 1 / 25, rtol=1e-6)


def test_collecting_a_batch_later_gives_the_features_of_a_direct_forward_pass(source):
    # the structure a GPU runs (several batches in flight, collected a batch later), on the
    # CPU: every video's features are exactly those of one forward pass over its frames
    net = Backbone(
        nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                      nn.Flatten()).eval(),
        4, Resize(32, 32, 32), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
    )  # fmt: skip
    torch.manual_seed(0)
    items = find_items(source)
    got = {
        depth: run(items, net, workers=0, batch_size=16, in_flight=depth)[0] for depth in (1, 2, 3)
    }
    assert got[1].keys() == got[2].keys() == got[3].keys() and len(got[1]) == 5
    mean = torch.tensor(net.mean).view(1, 3, 1, 1)
    std = torch.tensor(net.std).view(1, 3, 1, 1)
    for item in items:
        frames = np.stack([f for f, _ in Reader(item, Sampling(), net.resize).frames()])
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # (T, 3, H, W)
        with torch.inference_mode():
            expected = net.module((x / 255.0 - mean) / std).numpy()
        for depth in (2, 3):  # a batch later: the very same numbers
            np.testing.assert_array_equal(got[depth][item.id].features, got[1][item.id].features)
        np.testing.assert_allclose(got[1][item.id].features, expected, rtol=1e-5, atol=1e-6)


def test_a_crashed_decoder_fails_its_item_and_gives_back_its_slots(source, monkeypatch):
    read_into = Reader.read_into

    def crash_on_a(self, buffers):
        for n, times in read_into(self, buffers):
            if self.item.id == "x/a.mp4":
                os._exit(3)  # a decoder dies holding slots, half a video sent
            yield n, times

    monkeypatch.setattr(Reader, "read_into", crash_on_a)  # inherited by forked workers
    items = find_items(source)
    videos, failed = run(items, workers=1, batch_size=8)
    assert failed == {"x/a.mp4": "the decoder crashed (exit code 3)"}
    assert sorted(videos) == ["x/b.mp4", "x/c.mp4", "x/d.mp4", "x/e.mp4"]
    for vid, v in videos.items():  # the new worker's slots hold no frame of the dead one's
        assert [bands(t, b) for t, b in v.features] == list(range(len(v.features))), vid


def test_a_bad_file_between_good_ones_is_isolated(source, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 64)
    items = find_items(source)
    from actrec.extract.sources import Item

    items = [*items[:2], Item("bad.mp4", bad, "video"), *items[2:]]
    for workers in (0, 2):
        videos, failed = run(items, workers=workers, batch_size=8)
        assert list(failed) == ["bad.mp4"] and "not a readable video" in failed["bad.mp4"]
        assert len(videos) == 5


def test_the_main_process_threads_follow_who_waits():
    before = torch.get_num_threads()
    try:
        t = MainThreads(busy=4, idle=1)
        assert torch.get_num_threads() == 4
        assert t.update(0.2) == 4  # waits a little: the model is still the bottleneck
        assert t.update(0.6) == 1 and torch.get_num_threads() == 1
        assert t.update(0.1) == 1  # hysteresis: no flapping between the two
        assert t.update(0.01) == 4 and torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("workers", "device", "cpus", "expected"),
    [
        (1, "cpu", 2, (2, 1, 2, 1)),  # decoder, scaler, main busy, main waiting
        (2, "cpu", 2, (1, 1, 2, 1)),
        (14, "cuda", 16, (1, 1, 2, 2)),
        (4, "cuda", 16, (4, 1, 4, 4)),
        (0, "cpu", 8, (8, 1, 8, 8)),
        (3, "cpu", 2, (1, 1, 2, 1)),  # more workers than CPUs: one thread each, never zero
    ],
)
def test_the_thread_budget_fits_the_cpus(workers, device, cpus, expected):
    b = thread_budget(workers, device, cpus=cpus)
    assert (b.decoder, b.scaler, b.main, b.main_waiting) == expected


def test_usable_cpus_follow_the_affinity_mask():
    from actrec.extract.threads import usable_cpus

    if hasattr(os, "sched_getaffinity"):
        assert usable_cpus() == len(os.sched_getaffinity(0))


# -- the writer -----------------------------------------------------------------------------------


def written(partial: PartialCache) -> list[Path]:
    # not partial.segments(): that removes temporary files, the writer's among them
    return sorted(partial.dir.glob("segment-*.h5"))


def video(i: int) -> Video:
    return Video(id=f"v{i:02d}", features=np.full((2, 3), i, np.float32),
                 timestamps=np.array([0.0, 0.04]), label="", fps=25.0)  # fmt: skip


def test_the_writer_coalesces_segments_and_loses_nothing(tmp_path):
    partial = PartialCache(tmp_path / "c.h5", {"backbone": "test"}, 3, "float32")
    partial.start()
    try:
        with SegmentWriter(partial, every_s=30.0) as writer:
            writer.add([video(0)], {})
            deadline = time.monotonic() + 10
            while not written(partial):  # the first finished videos are written at once
                assert time.monotonic() < deadline
                time.sleep(0.01)
            for i in range(1, 20):
                writer.add([video(i)], {"bad": "why"} if i == 5 else {})
            time.sleep(0.1)
            assert len(written(partial)) == 1  # the rest waits for its time
        segments = partial.segments()
        assert len(segments) == 2  # and the end of the block writes it
        with open_cache(segments[1]) as c:
            assert c.index.ids == [f"v{i:02d}" for i in range(1, 20)]
            assert c.index.failed == {"bad": "why"}
            np.testing.assert_array_equal(c.video(3).features, np.full((2, 3), 4))  # v04
    finally:
        partial.release()


def test_the_writer_writes_a_segment_for_enough_videos_at_once(tmp_path):
    partial = PartialCache(tmp_path / "c.h5", {"backbone": "test"}, 3, "float32")
    partial.start()
    try:
        with SegmentWriter(partial, every_s=30.0, max_videos=5) as writer:
            for i in range(11):
                writer.add([video(i)], {})
                time.sleep(0.02)
            deadline = time.monotonic() + 10
            while len(written(partial)) < 3:  # v00 at once, then 5 and 5
                assert time.monotonic() < deadline
                time.sleep(0.01)
        assert len(partial.segments()) == 3
    finally:
        partial.release()


def test_a_writer_error_reaches_the_main_thread(tmp_path):
    class Full:
        def add(self, videos, failed):
            raise OSError(28, "No space left on device")

    writer = SegmentWriter(Full(), every_s=0.0)
    with pytest.raises(OSError, match="No space left"), writer:  # noqa: PT012
        writer.add([video(0)], {})
        deadline = time.monotonic() + 10
        while writer._error is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        writer.add([video(1)], {})
    writer = SegmentWriter(Full(), every_s=0.0)
    with pytest.raises(OSError, match="No space left"), writer:  # raised when the block ends
        writer.add([video(0)], {})


# -- the order of work ----------------------------------------------------------------------------


def test_longest_first_and_the_cache_sorted_by_id(source, tmp_path, monkeypatch):
    import actrec.extract.run as run_module
    from actrec.extract import ExtractConfig, run_extraction

    seen = []
    stream = run_module.stream_features

    def spy(items, *args, **kwargs):
        seen.extend(it.id for it in items)
        return stream(items, *args, **kwargs)

    monkeypatch.setattr(run_module, "stream_features", spy)
    monkeypatch.setattr(run_module, "load_backbone", lambda *a, **k: band_backbone())
    out = tmp_path / "c.h5"
    run_extraction(ExtractConfig(source=source, output=out, weights="none", workers=1,
                                 dtype="float32", progress=False, batch_size=8))  # fmt: skip
    sizes = {it.id: it.path.stat().st_size for it in find_items(source)}
    assert seen == sorted(sizes, key=lambda vid: -sizes[vid])
    assert seen[0] == "x/a.mp4"  # the longest video
    with open_cache(out) as c:
        assert c.index.ids == sorted(sizes)
        assert [len(v.features) for v in c.videos()] == [100, 7, 40, 1, 75]
