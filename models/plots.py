"""Figures shared by ``models evaluate`` and the ensemble report (matplotlib, no display)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
from sklearn import metrics as skm  # noqa: E402


def plot_confusion_matrix(
    cm: Sequence[Sequence[int]], class_names: Sequence[str], path: Path
) -> Path:
    """Counts and row percentages, true class on the rows."""
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(cm, cmap="Blues")
    rows = cm.sum(axis=1, keepdims=True).clip(min=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            color = "white" if cm[i, j] > cm.max() / 2 else "black"
            ax.text(
                j,
                i,
                f"{cm[i, j]}\n{100 * cm[i, j] / rows[i, 0]:.1f}%",
                ha="center",
                va="center",
                color=color,
            )
    ax.set_xticks(range(len(class_names)), class_names)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix")
    return _save(fig, path)


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """ROC curves, one per name -> (labels, scores), AUC in the legend."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for name, (y, s) in curves.items():
        fpr, tpr, _ = skm.roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{name} (AUC {skm.auc(fpr, tpr):.3f})")
    _diagonal(ax, "false positive rate (FAR)", "true positive rate (1 - FRR)", "ROC", "lower right")
    return _save(fig, path)


def plot_history(
    history: Mapping[str, Sequence[float]], path: Path, phase_starts: Sequence[int] = ()
) -> Path:
    """Training curves: accuracy and loss per epoch, training and validation side by side;
    dotted lines where a training phase (fine-tuning) starts."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            values = history.get(key)
            if values is not None and len(values):
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, style, marker="o", ms=3, label=key)
        for start in phase_starts:
            ax.axvline(start + 0.5, ls=":", color="grey")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title(metric)
        ax.legend(fontsize="small")
    return _save(fig, path)


def plot_predictions(
    images: Sequence[np.ndarray], titles: Sequence[str], path: Path, cols: int = 4
) -> Path:
    """Images in a grid, each titled with its prediction."""
    n = max(len(images), 1)
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, title in zip(axes.ravel(), images, titles, strict=False):
        if img is not None:
            ax.imshow(img)
        ax.set_title(title, fontsize="small")
    return _save(fig, path)


def plot_framed_predictions(
    photos: Sequence[tuple[np.ndarray, Sequence[float] | None] | None],
    crops: Sequence[np.ndarray | None],
    titles: Sequence[str],
    path: Path,
) -> Path:
    """One row per image: the photo with the face box found, and the crop the model saw."""
    from matplotlib.patches import Rectangle

    n = max(len(titles), 1)
    fig, axes = plt.subplots(n, 2, figsize=(5.2, 2.7 * n), squeeze=False)
    for (ax_photo, ax_crop), photo, crop, title in zip(axes, photos, crops, titles, strict=False):
        ax_photo.axis("off")
        ax_crop.axis("off")
        if photo is not None:
            pixels, box = photo
            ax_photo.imshow(pixels)
            if box is not None:
                x, y, w, h = box
                ax_photo.add_patch(Rectangle((x, y), w, h, fill=False, color="lime", lw=1.5))
            ax_photo.set_title("face found" if box is not None else "no face", fontsize="small")
        if crop is not None:
            ax_crop.imshow(crop)
        ax_crop.set_title(title, fontsize="small")
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_det(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: Path,
    points: Mapping[str, tuple[float, float]] | None = None,
    title: str = "DET",
) -> Path:
    """DET curves: FRR against FAR on normal-deviate axes, one per name -> (labels, scores);
    ``points`` marks operating points name -> (far, frr)."""
    from scipy.stats import norm

    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95])
    lo = 1e-4
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for name, (y, s) in curves.items():
        far, frr, _ = skm.det_curve(y, s)
        ax.plot(norm.ppf(np.clip(far, lo, 1 - lo)), norm.ppf(np.clip(frr, lo, 1 - lo)), label=name)
    for name, (far, frr) in (points or {}).items():
        ax.plot(
            norm.ppf(np.clip(far, lo, 1 - lo)),
            norm.ppf(np.clip(frr, lo, 1 - lo)),
            "o",
            color="black",
            ms=5,
        )
        ax.annotate(
            name,
            (norm.ppf(np.clip(far, lo, 1 - lo)), norm.ppf(np.clip(frr, lo, 1 - lo))),
            textcoords="offset points",
            xytext=(5, 5),
            fontsize="small",
        )
    labels = [f"{t:g}" for t in ticks]
    ax.set_xticks(norm.ppf(ticks), labels)
    ax.set_yticks(norm.ppf(ticks), labels)
    ax.set_xlim(norm.ppf(lo), norm.ppf(0.99))
    ax.set_ylim(norm.ppf(lo), norm.ppf(0.99))
    ax.set_xlabel("FAR (negatives accepted)")
    ax.set_ylabel("FRR (positives rejected)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    return _save(fig, path)


def plot_score_histograms(
    scores: Mapping[str, np.ndarray],
    y: np.ndarray,
    class_names: Sequence[str],
    path: Path,
    threshold: float | None = None,
) -> Path:
    """One panel per name: the score's histogram per true class (0 then 1 in ``class_names``);
    a dashed line at ``threshold`` on the panel named ``ensemble``."""
    n = len(scores)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    bins = np.linspace(0, 1, 41)
    y = np.asarray(y)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for ax, (name, s) in zip(axes.ravel(), scores.items(), strict=False):
        s = np.asarray(s, dtype=np.float64)
        for k, cls in enumerate(class_names):
            ax.hist(s[y == k], bins=bins, alpha=0.55, label=cls)
        if threshold is not None and name == "ensemble":
            ax.axvline(threshold, ls="--", color="black", lw=1)
        ax.set_title(name, fontsize="medium")
        ax.set_xlabel(f"P({class_names[1]})")
        ax.legend(fontsize="small")
    return _save(fig, path)


def plot_reliability(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, n_bins: int = 10
) -> Path:
    """Reliability diagram: observed positive rate against mean predicted probability per
    quantile bin, one line per name -> (labels, probabilities)."""
    from sklearn.calibration import calibration_curve

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for name, (y, p) in curves.items():
        frac, mean = calibration_curve(y, p, n_bins=n_bins, strategy="quantile")
        ax.plot(mean, frac, marker="o", ms=3, label=name)
    _diagonal(ax, "mean predicted probability", "observed share of positives", "Reliability")
    return _save(fig, path)


def _diagonal(ax: Any, xlabel: str, ylabel: str, title: str, legend: str = "upper left") -> None:
    """Finish a unit-square plot whose chance (or perfect calibration) line is the diagonal."""
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc=legend, fontsize="small")


def plot_group_rates(
    groups: Sequence[str],
    series: Mapping[str, Mapping[str, Sequence[tuple[float, float, float]]]],
    path: Path,
    title: str = "",
) -> Path:
    """One panel per rate (e.g. FAR, FRR): per group, each series' estimate with its interval
    as an error bar; ``series`` maps a name to rate -> one (estimate, low, high) per group
    (NaN where undefined). The first series is drawn in black, the others beside it."""
    rates = list(next(iter(series.values())))
    fig, axes = plt.subplots(
        1, len(rates), figsize=(max(4.2, 0.9 * len(groups) + 2.4) * len(rates) / 1.4, 3.8)
    )
    axes = np.atleast_1d(axes)
    x = np.arange(len(groups))
    width = 0.7 / max(len(series), 1)
    for ax, rate in zip(axes, rates, strict=True):
        for k, (name, by_rate) in enumerate(series.items()):
            est, low, high = np.asarray(by_rate[rate], dtype=np.float64).reshape(-1, 3).T
            err = np.vstack([est - low, high - est]).clip(min=0)
            ax.errorbar(
                x + (k - (len(series) - 1) / 2) * width,
                est,
                yerr=np.nan_to_num(err),
                fmt="o" if k == 0 else ".",
                color="black" if k == 0 else None,
                capsize=3,
                ms=6 if k == 0 else 4,
                label=name,
            )
        turn = len(groups) > 4
        ax.set_xticks(x, groups, rotation=30 if turn else 0, ha="right" if turn else "center")
        ax.set_ylabel(rate)
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(f"{rate} by group" + (f" ({title})" if title else ""), fontsize="medium")
    axes[0].legend(fontsize="small")
    return _save(fig, path)
