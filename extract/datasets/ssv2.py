"""Something-Something v2: ``<id>.webm`` files and the JSON labels: ``labels.json`` (template ->
class index), ``train.json`` and ``validation.json`` (lists of ``{"id", "label", "template",
"placeholders"}``). The class is the template with its brackets dropped ("Pushing [something]
from left to right" -> "Pushing something from left to right"), as ``labels.json`` spells it.
The test labels are not public: ``test.json``'s clips are left out. Each clip is its own group.
"""

from __future__ import annotations

import json
from pathlib import Path

from actrec.common.errors import ActrecError
from actrec.extract.datasets.base import (
    DatasetManifest,
    Entry,
    ManifestOptions,
    find_annotations,
    match,
    video_files,
)
from actrec.extract.datasets.registry import register_dataset

SPLITS = {"train.json": "train", "validation.json": "val"}


@register_dataset("ssv2")
def ssv2(root: Path, annotations: Path | None, options: ManifestOptions) -> DatasetManifest:
    folder = find_annotations(
        annotations,
        [root / "labels", root.parent / "labels", root / "labels.json"],
        "Something-Something v2's labels/ folder",
    )
    if folder.is_file():
        folder = folder.parent
    labels = _load(folder / "labels.json", dict, '{"Approaching something with your camera": "0"}')
    # the class names as labels.json spells them, found whatever the template's case
    classes = {str(name).lower(): str(name) for name in labels}
    result = DatasetManifest("ssv2", root, [folder / "labels.json"])
    named: dict[str, Entry] = {}
    for name, split in SPLITS.items():
        path = folder / name
        result.annotations.append(path)
        for n, item in enumerate(_load(path, list, '[{"id": ..., "template": ...}]')):
            if not isinstance(item, dict) or "id" not in item or "template" not in item:
                raise ActrecError(
                    f"{path}: item {n} has no id and template; expected SSv2's {name} "
                    '([{"id": "78687", "label": ..., "template": "Holding [something] ..."}])'
                )
            template = str(item["template"])
            label = classes.get(template.replace("[", "").replace("]", "").lower(), "")
            if not label:
                raise ActrecError(
                    f"{path}: item {n} ({item['id']}): {template!r} is not a class of labels.json"
                )
            vid = str(item["id"])
            named[vid] = Entry(Path(f"{vid}.webm"), label, split, vid)
    unused: set[str] = set()
    if (folder / "test.json").is_file():
        unused = {str(it.get("id")) for it in _load(folder / "test.json", list, "[{...}]")}
        result.left_out["test (labels not public)"] = len(unused)
    on_disk = {f.stem: f for f in video_files(root, skip=[folder])}
    match(result, {k: f for k, f in on_disk.items() if k not in unused}, named)
    return result


def _load(path: Path, kind: type, example: str):  # noqa: ANN202 - json's own types
    if not path.is_file():
        raise ActrecError(
            f"{path}: not found; --annotations must be SSv2's labels/ folder "
            "(labels.json, train.json, validation.json)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ActrecError(f"{path}: not JSON ({e}); expected SSv2's {path.name}") from None
    if not isinstance(data, kind):
        raise ActrecError(f"{path}: expected a JSON {kind.__name__} like {example}")
    return data
