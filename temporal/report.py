"""Reports a person reads: `report.md` and a self-contained `report.html` per run; leaderboards.

Plots are drawn with matplotlib's Agg backend and embedded in the HTML as base64 PNGs, so a
report is one file that opens anywhere.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from actrec.common.atomic import write_text  # noqa: E402
from actrec.common.errors import ActrecError  # noqa: E402
from actrec.common.ownership import LEADERBOARD, RUN, check_file, folder_kind, mark_folder  # noqa: E402
from actrec.common.validate import (  # noqa: E402
    CONFIG_KEYS,
    METRICS_KEYS,
    read_history,
    read_json,
)

SUMMARY_KEYS = (
    ("accuracy", "accuracy"), ("balanced_accuracy", "balanced acc."), ("top5_accuracy", "top-5"),
    ("precision_macro", "precision (macro)"), ("recall_macro", "recall (macro)"),
    ("f1_macro", "F1 (macro)"),
)  # fmt: skip
# config keys that do not make two runs different experiments
# not what makes an experiment: runs that differ only in these are seeds of one experiment
# (`cache_attrs` holds e.g. when the cache was made; `cache_fingerprint` stands for its features)
_NOT_SETTINGS = {
    "seed", "out", "force", "progress", "device", "workers", "lazy", "versions", "device_used",
    "lazy_used", "best_epoch", "epochs_run", "parameters", "cache_attrs", "best_step", "steps_run",
    "steps_planned", "steps_per_epoch", "eval_every_used", "interrupted", "best_val_step",
}  # fmt: skip


def _read_run(run_dir: Path) -> tuple[dict, dict, list[dict]]:
    # one reader per file: any damage is one line naming the file (validate.py)
    config = read_json(run_dir / "config.json", CONFIG_KEYS)
    metrics = read_json(run_dir / "metrics.json", METRICS_KEYS)
    return config, metrics, read_history(run_dir / "history.csv")


def png_base64(fig: plt.Figure) -> str:
    """A figure as base64 PNG for an <img> data URL; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def confusion_png(matrix: list[list[int]], classes: list[str]) -> str:
    """The confusion matrix as a heat map of row-normalised rates, counts written in the cells."""
    import numpy as np

    m = np.asarray(matrix, dtype=float)  # (C, C)
    rates = m / np.maximum(m.sum(1, keepdims=True), 1)  # (C, C)
    size = min(14.0, 2.5 + 0.45 * len(classes))
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(ticks, classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= 25:
        for i in ticks:
            for j in ticks:
                if m[i, j]:
                    ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 else "black")  # fmt: skip
    return png_base64(fig)


def curves_png(history: list[dict]) -> str:
    """Loss and accuracy per epoch, train and validation."""
    epochs = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(epochs, [r["train_loss"] for r in history], label="train")
    a.plot(epochs, [r["val_loss"] for r in history], label="val")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.legend()
    b.plot(epochs, [r["train_accuracy"] for r in history], label="train")
    b.plot(epochs, [r["val_accuracy"] for r in history], label="val")
    b.set_xlabel("epoch")
    b.set_ylabel("accuracy")
    b.set_ylim(0, 1.02)
    b.legend()
    return png_base64(fig)


_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|&])")


def md_escape(value: object) -> str:
    """``value`` as Markdown text that shows as written: a name can end no table cell (``|``),
    start no row (a line break), open no code span, link or HTML tag; as html.escape does for
    the pages."""
    text = re.sub(r"[\r\n\t]+", " ", str(value))
    return _MD_SPECIAL.sub(r"\\\1", text)


def md_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table, every cell escaped."""
    lines = ["| " + " | ".join(md_escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_escape(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list]) -> str:
    """An HTML table, every cell escaped."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
code{background:#f3f3f3;padding:1px 4px}"""


def html_page(title: str, body: str) -> str:
    """A self-contained page: the report style inline, nothing fetched."""
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")  # fmt: skip


def _summary_rows(metrics: dict) -> list[list]:
    return [[label, f"{metrics[key]:.4f}"] for key, label in SUMMARY_KEYS]


def _per_class_rows(metrics: dict) -> list[list]:
    return [
        [name, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1']:.4f}", v["support"]]
        for name, v in metrics["per_class"].items()
    ]


def _config_rows(config: dict) -> list[list]:
    # the cache's attributes get a table of their own (_feature_rows): one cell would be a wall
    return [
        [k, json.dumps(v) if isinstance(v, (dict, list)) else v]
        for k, v in config.items()
        if k != "cache_attrs"
    ]


def _feature_rows(config: dict) -> list[list]:
    """How the run's features were made: the cache's root attributes, as the run recorded them."""
    attrs = config.get("cache_attrs") or {}
    return [[k, json.dumps(v) if isinstance(v, (dict, list)) else v] for k, v in attrs.items()]


def _best(config: dict) -> str:
    if "best_step" in config:
        return (f"weights kept from step {config['best_step']} (epoch {config['best_epoch']:g}) "
                f"of {config.get('steps_run', '?')}")  # fmt: skip
    # runs from before the budget was counted in steps
    return f"best epoch {config.get('best_epoch', '?')} of {config.get('epochs_run', '?')}"


def write_report(run_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write `report.md` and `report.html` from the run's own files; returns their paths."""
    run_dir = Path(run_dir)
    config, metrics, history = _read_run(run_dir)
    title = f"actrec run {run_dir.name}: {config.get('head', '?')}"
    n, split = metrics["n_samples"], metrics["split"]

    def intro(code) -> str:  # noqa: ANN001 - one formatter per page kind
        return (f"Head {code(config.get('head'))} on {code(config.get('cache'))} "
                f"({config.get('dim')}-D, {len(metrics['classes'])} classes); {_best(config)}; "
                f"metrics on the {split} split ({n} videos).")  # fmt: skip

    md_intro = intro(md_escape)
    html_intro = intro(lambda v: f"<code>{html.escape(str(v))}</code>")
    pc_header = ["class", "precision", "recall", "F1", "support"]
    cm_header = ["true \\ predicted", *metrics["classes"]]
    cm_rows = [
        [c, *row] for c, row in zip(metrics["classes"], metrics["confusion_matrix"], strict=True)
    ]
    md = "\n\n".join([
        f"# {md_escape(title)}", md_intro,
        f"## Metrics ({md_escape(split)})", md_table(["metric", "value"], _summary_rows(metrics)),
        "## Per class", md_table(pc_header, _per_class_rows(metrics)),
        "## Confusion matrix (rows: true, columns: predicted)", md_table(cm_header, cm_rows),
        "## Learning curves",
        md_table(["step", "epoch", "train loss", "train acc.", "val loss", "val acc.", "lr", "seconds"],
                  [[int(r.get("step", r["epoch"])), f"{r['epoch']:g}", f"{r['train_loss']:.4f}", f"{r['train_accuracy']:.4f}",
                    f"{r['val_loss']:.4f}", f"{r['val_accuracy']:.4f}", f"{r['lr']:.2e}",
                    f"{r['seconds']:.1f}"] for r in history]),
        "## Configuration", md_table(["option", "value"], _config_rows(config)),
        "## Features (the cache's attributes)", md_table(["attribute", "value"], _feature_rows(config)),
    ]) + "\n"  # fmt: skip
    curves = (
        f"<img alt='learning curves' src='data:image/png;base64,{curves_png(history)}'>"
        if history
        else ""
    )
    body = "\n".join([
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html_intro}</p>",
        f"<h2>Metrics ({html.escape(split)})</h2>", html_table(["metric", "value"], _summary_rows(metrics)),
        "<h2>Confusion matrix</h2>",
        f"<img alt='confusion matrix' src='data:image/png;base64,"
        f"{confusion_png(metrics['confusion_matrix'], metrics['classes'])}'>",
        "<h2>Learning curves</h2>", curves,
        "<h2>Per class</h2>", html_table(pc_header, _per_class_rows(metrics)),
        "<h2>Configuration</h2>", html_table(["option", "value"], _config_rows(config)),
        "<h2>Features (the cache's attributes)</h2>",
        html_table(["attribute", "value"], _feature_rows(config)),
    ])  # fmt: skip
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    if folder_kind(run_dir) != RUN:
        raise ActrecError(f"{run_dir} is not a run folder of `actrec train`: no report written")
    write_text(md_path, md, kind=RUN)
    write_text(html_path, html_page(title, body), kind=RUN)
    return md_path, html_path


# -- several runs -------------------------------------------------------------------------------


def _unique(run_dirs: list[str | os.PathLike]) -> list[Path]:
    """The run folders in order, each once: the same run named twice is not two seeds."""
    seen, out = set(), []
    for d in run_dirs:
        key = Path(d).resolve()
        if key not in seen:
            seen.add(key)
            out.append(Path(d))
    return out


def leaderboard(run_dirs: list[str | os.PathLike]) -> list[dict]:
    """One row per experiment, best first: runs whose settings differ only by seed are one row,
    with the mean and standard deviation of each metric over their seeds. ``settings`` holds
    the options that differ between the rows (beside the head), so that a reader sees what
    each row is."""
    groups: dict[str, list[tuple[Path, dict, dict]]] = {}
    for d in _unique(run_dirs):
        config, metrics, _ = _read_run(d)
        settings = {k: v for k, v in config.items() if k not in _NOT_SETTINGS}
        if "max_len_used" in settings:  # the length a run used, given or the head's own
            settings["max_len"] = settings.pop("max_len_used")
        groups.setdefault(json.dumps(settings, sort_keys=True, default=str), []).append(
            (d, config, metrics)
        )
    keys = sorted({k for g in groups for k in json.loads(g)} - {"head", "cache_fingerprint"})
    first = [json.loads(g) for g in groups]
    differing = [k for k in keys if len({json.dumps(s.get(k), default=str) for s in first}) > 1]
    rows = []
    for settings_json, members in groups.items():
        config, settings = members[0][1], json.loads(settings_json)
        row = {
            "head": config.get("head", "?"),
            "settings": {k: settings.get(k) for k in differing},
            "runs": [str(d) for d, _, _ in members],
            "seeds": [c.get("seed") for _, c, _ in members],
            "split": members[0][2]["split"],
            "n_samples": members[0][2]["n_samples"],
        }
        for key, _ in SUMMARY_KEYS:
            values = [m[key] for _, _, m in members]
            row[key] = statistics.fmean(values)
            row[key + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    rows.sort(key=lambda r: -r["accuracy"])
    return rows


def leaderboard_warnings(run_dirs: list[str | os.PathLike]) -> list[str]:
    """What makes the runs' scores not comparable: other features, or another test set."""
    runs = _unique(run_dirs)
    configs = [_read_run(d)[0] for d in runs]
    notes = []
    if len(runs) < len(run_dirs):
        notes.append(f"{len(run_dirs) - len(runs)} run folder(s) named twice, counted once")
    caches = {(c.get("cache_fingerprint"), c.get("dim")) for c in configs}
    if len(caches) > 1:
        notes.append(
            f"WARNING: these runs were trained on {len(caches)} different caches (features made "
            "another way, or other data): their scores are not comparable"
        )
    splits = {json.dumps(c.get("split_sizes"), sort_keys=True) for c in configs}
    if len(caches) == 1 and len(splits) > 1:
        notes.append("WARNING: these runs split the cache differently: their test sets differ")
    return notes


def _cell(row: dict, key: str) -> str:
    if len(row["runs"]) > 1:
        return f"{row[key]:.4f} ± {row[key + '_std']:.4f}"
    return f"{row[key]:.4f}"


def _leaderboard_table(rows: list[dict]) -> tuple[list[str], list[list]]:
    differing = list(rows[0]["settings"]) if rows else []
    header = ["rank", "head", *differing, "runs", *[label for _, label in SUMMARY_KEYS], "split",
              "run folders"]  # fmt: skip
    body = [
        [i + 1, r["head"], *[_setting(r["settings"][k]) for k in differing], len(r["runs"]),
         *[_cell(r, k) for k, _ in SUMMARY_KEYS], f"{r['split']} ({r['n_samples']})",
         ", ".join(r["runs"])]
        for i, r in enumerate(rows)
    ]  # fmt: skip
    return header, body


def _setting(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def leaderboard_text(run_dirs: list[str | os.PathLike]) -> str:
    """The leaderboard as a Markdown table, for printing."""
    header, body = _leaderboard_table(leaderboard(run_dirs))
    return md_table(header, body)


def write_leaderboard(
    run_dirs: list[str | os.PathLike], out_dir: str | os.PathLike
) -> tuple[Path, Path]:
    """Write `leaderboard.md` and `leaderboard.html` into ``out_dir``; returns their paths.

    ``out_dir`` may be a new folder (marked as a leaderboard's), or any folder that is not
    another kind of actrec's; files of those names there are replaced only if actrec wrote them.
    """
    out_dir = Path(out_dir)
    check_leaderboard_dir(out_dir)
    rows = leaderboard(run_dirs)
    header, body = _leaderboard_table(rows)
    note = ("Mean ± standard deviation over seeds where runs differ only by seed; one column per "
            "setting that differs between rows. Best accuracy first.")  # fmt: skip
    warnings = leaderboard_warnings(run_dirs)
    if warnings:
        note += " " + " ".join(warnings)
    md_path, html_path = out_dir / "leaderboard.md", out_dir / "leaderboard.html"
    if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
        mark_folder(out_dir, LEADERBOARD)
    write_text(md_path, f"# actrec leaderboard\n\n{md_escape(note)}\n\n{md_table(header, body)}\n",
               kind=LEADERBOARD)  # fmt: skip
    write_text(html_path, html_page("actrec leaderboard", f"<h1>actrec leaderboard</h1><p>"
               f"{html.escape(note)}</p>" + html_table(header, body)), kind=LEADERBOARD)  # fmt: skip
    return md_path, html_path


def check_leaderboard_dir(out_dir: Path) -> None:
    """Refuse, before any work, a leaderboard folder where its files would replace others'."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ActrecError(f"{out_dir} exists and is not a folder: choose another -o")
    for name in ("leaderboard.md", "leaderboard.html"):
        check_file(out_dir / name, LEADERBOARD)
