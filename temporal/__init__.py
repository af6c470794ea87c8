"""Stage two: read the cache, sample clips, train and evaluate temporal heads, write reports.

The public surface, for scripts and for the commands of other stages:

- :class:`TrainConfig`, :func:`train` (``train(config) -> run folder``): train a head, keep the best
  checkpoint by validation, evaluate it on test, write the whole run folder and its reports.
- :func:`evaluate_run` (``evaluate_run(run_dir, cache=None, split="test") -> metrics``).
- :func:`write_report` (one run), :func:`write_leaderboard` and :func:`leaderboard_text` (several).
- :func:`load_run` (the model in eval mode, classes, normalisation, config),
  :func:`predict_proba` (``(T, D) -> (C,)``) and :func:`predict_timeline` (sliding windows).
- :func:`import_sequences`: ``.npy`` sequences made elsewhere into a cache.
- :func:`register_head`, :func:`create_head`, :func:`list_heads`: the head registry.
"""

from actrec.temporal.evaluate import evaluate_run
from actrec.temporal.heads import create_head, list_heads, register_head
from actrec.temporal.importer import import_sequences
from actrec.temporal.metrics import compute_metrics
from actrec.temporal.model import Run, load_run, predict_proba, predict_timeline
from actrec.temporal.report import leaderboard, leaderboard_text, write_leaderboard, write_report
from actrec.temporal.train import TrainConfig, train

__all__ = [
    "Run",
    "TrainConfig",
    "compute_metrics",
    "create_head",
    "evaluate_run",
    "import_sequences",
    "leaderboard",
    "leaderboard_text",
    "list_heads",
    "load_run",
    "predict_proba",
    "predict_timeline",
    "register_head",
    "train",
    "write_leaderboard",
    "write_report",
]
