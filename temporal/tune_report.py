"""What `actrec tune` writes: `trials.csv`, and `leaderboard.md` / `leaderboard.html` with plots.

Plots are drawn as temporal/report.py draws them (matplotlib's Agg, embedded as base64 PNGs), so
the HTML is one self-contained file.
"""

from __future__ import annotations

import csv
import html
import json
import math
import re
import statistics
from pathlib import Path

from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from actrec.common.atomic import replacing, write_text
from actrec.common.ownership import TUNE
from actrec.temporal.report import (  # plt: the backend report chose
    html_page,
    html_table,
    md_table,
    plt,
    png_base64,
)
from actrec.temporal.search_space import COMMON, PER_HEAD, Range
from actrec.temporal.train import TrainConfig

# every setting a trial may carry, in the order the tables show them
SETTINGS = ("head", *COMMON, "hidden", "layers", "bidirectional")
TOP = 15  # trials in the leaderboard
COLOURS = {"gru": "C0", "lstm": "C1", "tcn": "C2", "transformer": "C3", "mean": "C7"}


def trial_rows(study) -> list[dict]:
    """One dict per trial of an Optuna study, in trial order, the numbers 1-based; trials
    queued but not started (the defaults of a head not reached yet) are left out."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "WAITING":
            continue
        settings = t.user_attrs.get("settings") or {"head": t.params.get("head", "")}
        scores = list(t.user_attrs.get("scores", []))
        steps = t.intermediate_values
        # a pruned trial's score is its last validation pass; a failed one has none
        score = t.value if t.state.name == "COMPLETE" else None
        if t.state.name == "PRUNED" and steps:
            score = steps[max(steps)]
        rows.append({
            "trial": t.number + 1, "state": t.state.name, "head": settings.get("head", ""),
            "settings": settings, "score": score,
            "score_std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
            "scores": scores, "val_loss": t.user_attrs.get("val_loss"),
            "seconds": t.duration.total_seconds() if t.duration else None,
            "started": t.datetime_start, "finished": t.datetime_complete, "train_defaults": bool(t.user_attrs.get("train_defaults")),
            "pruned_after": (max(steps) % 10_000) if t.state.name == "PRUNED" and steps else None,
            "error": t.user_attrs.get("error", ""),
        })  # fmt: skip
    return rows


def _setting_names(rows: list[dict]) -> list[str]:
    seen = {k for r in rows for k in r["settings"]}
    return [k for k in SETTINGS if k in seen] + sorted(seen - set(SETTINGS))


def write_trials_csv(rows: list[dict], path: Path) -> Path:
    """Every trial: its settings (blank where its head has no such setting), scores, seconds."""
    names = _setting_names(rows)
    header = ["trial", "state", *names, "score", "score_std", "scores", "val_loss", "seconds",
              "started", "train_defaults", "pruned_after_pass", "error"]  # fmt: skip
    with replacing(path, kind=TUNE) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for r in rows:
            w.writerow([
                r["trial"], r["state"], *[setting_text(r["settings"].get(k, "")) for k in names],
                _num(r["score"]), _num(r["score_std"]), ";".join(f"{s:.4f}" for s in r["scores"]),
                _num(r["val_loss"]), _num(r["seconds"], 1),
                r["started"].isoformat(timespec="seconds") if r["started"] else "",
                str(r["train_defaults"]).lower(), r["pruned_after"] or "", r["error"],
            ])  # fmt: skip
    return path


def _num(value, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def setting_text(value) -> str:
    """A setting as trials.csv, the leaderboard and the progress lines show it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def ranked(rows: list[dict]) -> list[dict]:
    """Completed trials, best first: validation accuracy, then the lower validation loss."""
    done = [r for r in rows if r["state"] == "COMPLETE"]
    return sorted(done, key=lambda r: (-r["score"], r["val_loss"] if r["val_loss"] is not None
                                       else math.inf, r["trial"]))  # fmt: skip


def varying(rows: list[dict]) -> list[str]:
    """The settings that take more than one value in the completed trials that have them
    (head first; a setting of one head only, the same in all its trials, is no column)."""
    done = [r for r in rows if r["state"] == "COMPLETE"]
    return [k for k in _setting_names(done)
            if len({json.dumps(r["settings"][k]) for r in done if k in r["settings"]}) > 1]  # fmt: skip


def leaderboard_table(rows: list[dict]) -> tuple[list[str], list[list]]:
    """The best trials, one column per setting that varies, mean ± std over folds x seeds."""
    names = varying(rows)
    header = ["rank", "trial", *names, "val accuracy", "val loss", "fits", "seconds"]
    body = []
    for i, r in enumerate(ranked(rows)[:TOP]):
        spread = f" ± {r['score_std']:.4f}" if len(r["scores"]) > 1 else ""
        mark = " (train's defaults)" if r["train_defaults"] else ""
        body.append([
            i + 1, f"{r['trial']}{mark}",
            *[setting_text(r["settings"][k]) if k in r["settings"] else "–" for k in names],
            f"{r['score']:.4f}{spread}", _num(r["val_loss"]), len(r["scores"]),
            _num(r["seconds"], 0),
        ])  # fmt: skip
    return header, body


def md_code(value: object) -> str:
    """``value`` as a Markdown code span that shows it as written, backticks and all."""
    text = re.sub(r"[\r\n\t]+", " ", str(value))
    runs = [len(m) for m in re.findall(r"`+", text)]
    fence = "`" * (max(runs, default=0) + 1)
    return f"{fence} {text} {fence}" if runs else f"{fence}{text}{fence}"


def html_code(value: object) -> str:
    return f"<code>{html.escape(str(value))}</code>"


def _intro(
    rows: list[dict],
    setup: dict,
    cache: str,
    best_run: Path | None,
    command: str | None,
    code=md_code,  # noqa: ANN001 - md_code or html_code
) -> list[str]:
    states = [r["state"] for r in rows]
    how = f"{setup['folds']} folds of train+val" if setup["folds"] else "the validation split"
    lines = [
        f"Search on {code(cache)}: {states.count('COMPLETE')} trials completed, "
        f"{states.count('PRUNED')} pruned, {states.count('FAIL')} failed. Each trial is scored on "
        f"{how} x {setup['seeds']} seed(s): validation accuracy, mean ± std over those fits. "
        "One column per setting that differs between the trials shown; – where a head has no "
        "such setting. The test split is used only by {code('best/')}."
    ]
    order = ranked(rows)
    if order:
        b = order[0]
        lines.append(
            f"Best: trial {b['trial']} ({b['head']}), validation {b['score']:.4f}"
            + (f" ± {b['score_std']:.4f}" if len(b["scores"]) > 1 else "")
            + "."
        )
        head = TrainConfig().head
        default = next((r for r in order if r["train_defaults"] and r["head"] == head), None)
        if default is not None:
            lines.append(f"{code('train')}'s defaults (head {head}): trial {default['trial']}, "
                         f"validation {default['score']:.4f}.")  # fmt: skip
    if best_run is not None and (best_run / "metrics.json").is_file():
        m = json.loads((best_run / "metrics.json").read_text())
        lines.append(f"Retrained as {code(best_run.name + '/')}: {m['split']} accuracy {m['accuracy']:.4f}, "
                     f"macro F1 {m['f1_macro']:.4f} ({m['n_samples']} sequences); its report is "
                     f"{code(best_run.name + '/report.html')}.")  # fmt: skip
    if command:
        lines.append(f"The same run by hand: {code(command)}")
    return lines


def history_png(rows: list[dict]) -> str:
    """Validation score of each trial against the minutes since the search began; best so far."""
    timed = [r for r in rows if r["finished"] is not None and r["score"] is not None]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    if timed:
        t0 = min(r["started"] for r in rows if r["started"] is not None)
        for head in sorted({r["head"] for r in timed}):
            for state, marker in (("COMPLETE", "o"), ("PRUNED", "x")):
                pts = [r for r in timed if r["head"] == head and r["state"] == state]
                if pts:
                    ax.scatter([(r["finished"] - t0).total_seconds() / 60 for r in pts],
                               [r["score"] for r in pts], marker=marker,
                               color=COLOURS.get(head, "k"),
                               label=head if state == "COMPLETE" else f"{head} (pruned)")  # fmt: skip
        done = sorted((r for r in timed if r["state"] == "COMPLETE"), key=lambda r: r["finished"])
        best, xs, ys = -math.inf, [], []
        for r in done:
            best = max(best, r["score"])
            xs.append((r["finished"] - t0).total_seconds() / 60)
            ys.append(best)
        ax.step(xs, ys, where="post", color="k", lw=1, label="best so far")
        ax.legend(fontsize=8, ncol=2)
    ax.set_xlabel("minutes since the search began")
    ax.set_ylabel("validation accuracy")
    return png_base64(fig)


def settings_png(rows: list[dict]) -> str | None:
    """Validation score against each setting that varies (pruned trials left out)."""
    done = [r for r in rows if r["state"] == "COMPLETE"]
    names = varying(rows)
    if not done or not names:
        return None
    cols = min(3, len(names))
    lines = -(-len(names) // cols)
    fig, axes = plt.subplots(lines, cols, figsize=(4 * cols, 2.8 * lines), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        have = [r for r in done if name in r["settings"]]
        values = [r["settings"][name] for r in have]
        numeric = all(isinstance(v, float) for v in values)
        if numeric:
            xs = values
            dist = COMMON.get(name)
            if isinstance(dist, Range):  # the whole range searched, so that gaps show
                pad = (dist.high / dist.low) ** 0.03 if dist.log else (dist.high - dist.low) * 0.03
                ax.set_xlim(*((dist.low / pad, dist.high * pad) if dist.log
                              else (dist.low - pad, dist.high + pad)))  # fmt: skip
                if dist.log:
                    ax.set_xscale("log")
                    ax.xaxis.set_minor_formatter(NullFormatter())  # decades only: no overlaps
        else:
            levels = sorted({json.dumps(v) for v in values}, key=_level_order)
            xs = [levels.index(json.dumps(v)) for v in values]
            ax.set_xticks(range(len(levels)), [json.loads(v) for v in levels], fontsize=8)
        ax.scatter(xs, [r["score"] for r in have], s=18, alpha=0.8,
                   c=[COLOURS.get(r["head"], "k") for r in have])  # fmt: skip
        ax.set_xlabel(name)
        ax.set_ylabel("val accuracy", fontsize=8)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    heads = [h for h in PER_HEAD if any(r["head"] == h for r in done)]
    fig.legend(handles=[Line2D([], [], ls="", marker="o", color=COLOURS[h], label=h) for h in heads],
               loc="upper center", ncol=len(heads), fontsize=8, bbox_to_anchor=(0.5, 1.04))  # fmt: skip
    fig.tight_layout()
    return png_base64(fig)


def _level_order(level: str):
    value = json.loads(level)
    heads = list(PER_HEAD)
    if isinstance(value, str) and value in heads:
        return (0, heads.index(value), "")
    if isinstance(value, (bool, int, float)):
        return (1, float(value), "")
    return (2, 0, str(value))


def write_tune_leaderboard(
    rows: list[dict],
    out: Path,
    setup: dict,
    *,
    cache: str,
    best_run: Path | None,
    command: str | None = None,
) -> tuple[Path, Path]:
    """`leaderboard.md` and a self-contained `leaderboard.html` in ``out``; ``command`` is the
    `actrec train` line of the best trial."""
    intro = _intro(rows, setup, cache, best_run, command)
    html_intro = _intro(rows, setup, cache, best_run, command, code=html_code)
    header, body = leaderboard_table(rows)
    md = "\n\n".join(["# actrec tune", *intro, "## Best trials", md_table(header, body),
                      f"Every trial, its settings and scores: {md_code('trials.csv')}."]) + "\n"  # fmt: skip
    plots = [f"<h2>Score per trial over time</h2><img alt='score per trial' "
             f"src='data:image/png;base64,{history_png(rows)}'>"]  # fmt: skip
    by_setting = settings_png(rows)
    if by_setting:
        plots.append(f"<h2>Score against each setting</h2><img alt='score against each setting' "
                     f"src='data:image/png;base64,{by_setting}'>")  # fmt: skip
    page = "\n".join([
        "<h1>actrec tune</h1>", *[f"<p>{line}</p>" for line in html_intro],
        "<h2>Best trials</h2>", html_table(header, body), *plots,
        "<p>Every trial, its settings and scores: <code>trials.csv</code>.</p>",
    ])  # fmt: skip
    md_path, html_path = out / "leaderboard.md", out / "leaderboard.html"
    write_text(md_path, md, kind=TUNE)
    write_text(html_path, html_page("actrec tune", page), kind=TUNE)
    return md_path, html_path
