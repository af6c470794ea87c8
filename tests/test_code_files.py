"""No file actrec loads runs code of its own (issue 18): a torch.export archive (.pt2) whose
members would be unpickled with Python's full unpickler is refused before torch sees it; a
TorchScript file is read by TorchScript's own unpickler, which knows no Python function; a run
folder's model.pt loads tensors only. Each malicious file is a pickle whose ``__reduce__``
would write a file: the file must not appear, and the refusal is one line, exit 2.
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn
from videos import make_video

from actrec.cli import main
from actrec.common.errors import ActrecError
from actrec.extract.backbones import check_no_code


class Conv(nn.Module):
    """A small convolutional extractor: (N, 3, H, W) -> (N, 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


class WritesAFile:
    """Unpickled, it calls os.system: what a hostile model file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def rewritten(src: Path, dst: Path, replace: dict[str, bytes]) -> Path:
    """A copy of the zip archive ``src`` with the members ending in each key replaced."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            for suffix, new in replace.items():
                if info.filename.endswith(suffix):
                    data = new
            zout.writestr(info, data)
    return dst


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pt2") / "conv.pt2"
    program = torch.export.export(
        Conv().eval(), (torch.randn(2, 3, 16, 16),),
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
    )  # fmt: skip
    torch.export.save(program, path)
    return path


def extract(tmp_path: Path, backbone: Path) -> object:
    video = make_video(tmp_path / "videos" / "a" / "v.mp4", 3, width=32, height=32)
    assert video.is_file()
    args = ["extract", tmp_path / "videos", "-o", tmp_path / "out.h5", "--backbone", backbone,
            "--input-size", "16", "--mean", "0", "0", "0", "--std", "1", "1", "1",
            "--workers", "0", "--quiet"]  # fmt: skip
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_a_plain_export_loads_and_extracts(tmp_path, exported):
    members = zipfile.ZipFile(exported).namelist()
    # what torch 2.x writes for a small conv model: raw tensors, JSON, and sample inputs saved
    # with torch.save (a pickle of tensors, which the safe unpickler reads)
    assert any(n.endswith("data/sample_inputs/model.pt") for n in members)
    check_no_code(exported, exported.read_bytes())  # no refusal
    r = extract(tmp_path, exported)
    assert r.exit_code == 0, r.output
    from actrec.common.cache import open_cache

    with open_cache(tmp_path / "out.h5") as c:
        assert len(c) == 1 and c.dim == 4 and len(c.features(0)) == 3


@pytest.mark.parametrize("member", ["data/sample_inputs/model.pt", "models/model.json"])
def test_a_pickle_that_runs_code_in_a_pt2_is_refused_before_loading(tmp_path, exported, member):
    marker = tmp_path / "PWNED"
    buf = io.BytesIO()
    torch.save(WritesAFile(marker), buf)
    evil = tmp_path / "evil.pt2"
    if member.endswith(".pt"):
        rewritten(exported, evil, {member: buf.getvalue()})
    else:  # a legacy weights file beside the program: torch would unpickle it as well
        rewritten(exported, evil, {})
        with zipfile.ZipFile(evil, "a") as z:
            prefix = z.namelist()[0].split("/")[0]
            z.writestr(f"{prefix}/data/weights/model.pt", buf.getvalue())
    r = extract(tmp_path, evil)
    assert r.exit_code == 2
    line = one_line(r)
    assert "loading it would run the file's code" in line and "GLOBAL" in line, line
    assert not marker.exists()
    assert not (tmp_path / "out.h5").exists()


def test_script_objects_in_a_pt2_are_refused(tmp_path, exported):
    evil = rewritten(exported, tmp_path / "objects.pt2", {})
    with zipfile.ZipFile(evil, "a") as z:
        prefix = z.namelist()[0].split("/")[0]
        z.writestr(f"{prefix}/data/constants/custom_obj_0", b"\x80\x02N.")
    with pytest.raises(ActrecError, match="pickled object"):
        check_no_code(evil, evil.read_bytes())


def test_a_torchscript_file_runs_no_python_code(tmp_path):
    marker = tmp_path / "PWNED"
    good = tmp_path / "good.pt"
    with warnings.catch_warnings():  # TorchScript is deprecated, and still supported
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.trace(Conv().eval(), torch.randn(1, 3, 16, 16)), good)
    evil = rewritten(good, tmp_path / "evil.pt",
                     {"/data.pkl": pickle.dumps(WritesAFile(marker), protocol=2)})  # fmt: skip
    r = extract(tmp_path, evil)
    assert r.exit_code == 2
    assert "not a readable TorchScript (.pt) model" in one_line(r)
    assert not marker.exists()


def test_a_run_whose_model_pt_runs_code_is_refused(tmp_path):
    from actrec.common.validate import read_checkpoint

    marker = tmp_path / "PWNED"
    torch.save({"head": WritesAFile(marker)}, tmp_path / "model.pt")
    with pytest.raises(ActrecError, match="holds more than tensors"):
        read_checkpoint(tmp_path / "model.pt")
    assert not marker.exists()
