"""Figures shared by ``models evaluate`` and the ensemble report (matplotlib, no display)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
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
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set_xlabel("false positive rate (FAR)")
    ax.set_ylabel("true positive rate (1 - FRR)")
    ax.set_title("ROC")
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
