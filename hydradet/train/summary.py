"""What a finished run made, said at its end: the best epoch and why, its per-head table, the threshold each detect
head will use in predict, the files written and the time spent."""

from __future__ import annotations

from pathlib import Path

from hydradet.config.schema import Config
from hydradet.eval.calibration import calibrated_conf
from hydradet.eval.evaluate import format_table
from hydradet.train.checkpoint import Progress

_PICTURES = ("*.png", "*.jpg")


def run_summary(cfg: Config, progress: Progress, run_dir: Path) -> list[str]:
    """The summary's lines. progress: the finished run's (rows = results.csv; best_epoch / best_metrics: the
    evaluation that chose best.safetensors, None / {} when no epoch was evaluated)."""
    rows = progress.rows
    evaluated = evaluated_epochs(rows)
    weights = run_dir / "weights"
    lines = [f"summary of {run_dir}:"]
    if progress.best_fitness is None:
        lines.append(f"  best: no epoch was evaluated, so best.safetensors is the last weights (epoch {len(rows)})")
        lines.append(f"  predict conf: {cfg.predict.conf} = predict.conf for every detect head (nothing calibrated)")
    elif progress.best_epoch is None:  # a run started before the summary existed keeps no best epoch
        lines.append(f"  best: fitness {progress.best_fitness:.4f} (its epoch is in best.safetensors' metadata)")
    else:
        lines.append(
            f"  best: epoch {progress.best_epoch} of {len(rows)}, fitness {progress.best_fitness:.4f}, the highest of "
            f"{len(evaluated)} evaluated epoch(s) (eval.fitness: mean over heads of mAP50-95 / accuracy / "
            "1 / (1 + MAE / std))"
        )
        lines += ["  " + line for line in format_table(progress.best_metrics).splitlines()]
        lines += _thresholds(cfg, progress.best_metrics)
    best_epoch = progress.best_epoch or (len(rows) if progress.best_fitness is None else "?")
    lines.append(f"  weights: {weights / 'best.safetensors'} (epoch {best_epoch}), last.safetensors ({len(rows)})")
    pictures = sorted({p.name for pattern in _PICTURES for p in run_dir.glob(pattern)})
    if pictures:
        of_best = f" (evaluation pictures of best, epoch {progress.best_epoch})" * (progress.best_epoch is not None)
        names = ", ".join(pictures[:6]) + ", ..." * (len(pictures) > 6)
        lines.append(f"  pictures: {len(pictures)} in {run_dir}{of_best}: {names}")
    train_s = sum(float(r.get("time_s") or 0) for r in rows)
    eval_s = sum(float(r.get("eval_s") or 0) for r in rows)
    lines.append(
        f"  time: {_duration(train_s + eval_s)} ({_duration(train_s)} training, {_duration(eval_s)} evaluating); "
        f"results: {run_dir / 'results.csv'}"
    )
    return lines


def evaluated_epochs(rows: list[dict]) -> list[int]:
    """The epochs of results.csv's rows that were evaluated (their `eval_s` cell is filled)."""
    return [int(r["epoch"]) for r in rows if str(r.get("eval_s", "")) != ""]


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def _thresholds(cfg: Config, metrics: dict[str, dict[str, float]]) -> list[str]:
    """Per detect head, the conf predict will use by default: the calibrated one kept in the weights, or
    predict.conf with why the calibration was not kept (eval/calibration.py)."""
    kept, refused = calibrated_conf(metrics)
    lines = []
    for head, conf in kept.items():
        m = metrics[head]
        lines.append(
            f"  predict conf {head}: {conf:.3f} (calibrated: peak F1 {m['f1']:.3f} on {int(m['objects'])} val objects)"
        )
    for head, why in refused.items():
        lines.append(f"  predict conf {head}: {cfg.predict.conf} = predict.conf (calibrated {why}: not kept)")
    return lines
