"""The CSV manifest reader both stages share."""

import pytest

from actrec.common.errors import ActrecError
from actrec.common.manifest import read_manifest


def test_rows_resolved_against_the_csv_folder(tmp_path):
    csv = tmp_path / "m.csv"
    # a spreadsheet's byte-order mark, blanks, a row longer than the header, an empty path
    csv.write_text(
        "\ufeffpath, label ,split\n ./a/1.mp4 , run ,train,extra\n,walk,\nb/2.mp4,walk,test\n"
    )
    rows = read_manifest(csv)
    assert [(r.line, r.path, r.label, r.split, r.group) for r in rows] == [
        (2, "a/1.mp4", "run", "train", ""),
        (3, "", "walk", "", ""),
        (4, "b/2.mp4", "walk", "test", ""),
    ]
    assert rows[0].file == (tmp_path / "a" / "1.mp4").resolve()


def test_a_manifest_without_a_path_column_is_refused(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("file,label\na.mp4,run\n")
    with pytest.raises(
        ActrecError, match=r"m.csv: no 'path' column \(the header must be path,label"
    ):
        read_manifest(csv)
