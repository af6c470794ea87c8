"""Progress off a terminal is whole lines, never carriage returns."""

from __future__ import annotations

from actrec.common.progress import LogLines, progress


def test_off_a_terminal_progress_is_plain_lines(capsys):
    bar = progress(3, "extract", "video")  # pytest's stderr is not a terminal
    assert isinstance(bar, LogLines)
    bar.interval = 0.0  # a line at every update
    bar.update()
    bar.set_postfix_str("34 frames/s")
    bar.update(2)
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines() == [
        "extract: 1/3 videos", "extract: 3/3 videos, 34 frames/s", "extract: 3/3 videos, 34 frames/s",
    ]  # fmt: skip
    quiet = progress(3, "extract", "video", enabled=False)
    quiet.update()
    quiet.close()
    assert capsys.readouterr().err == ""
