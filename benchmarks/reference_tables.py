"""The Markdown tables of benchmarks/reference_results.py, from its results.json and
ablation.json (pure functions of those dicts, so the tables can be rendered again from a
finished run without TensorFlow or Ray)."""

from __future__ import annotations

from typing import Any

#: Each ablation variant's reference: the variant it adds one lever to.
ABLATION_AGAINST = {
    "cosine": "base",
    "batch128": "base",
    "photo": "base",
    "mixup": "base",
}
ABLATION_METRICS = ("val_auc", "facecom_tune_auc")


def _ci(ci: dict[str, float]) -> str:
    return f"{ci['low']:.3f}-{ci['high']:.3f}"


def render_markdown(results: dict[str, Any]) -> str:
    """The Markdown docs/benchmarks.md's "Reference results" section shows."""
    splits = results["splits"]
    tune_on = results["tune_on"]
    lines: list[str] = []
    for objective, by_domain in results["objectives"].items():
        first = by_domain["utkface"]["rows"]["ensemble"]["val"]
        acc_keys = [k for k in first if k.startswith("acc_")]
        lines += [
            f"`{objective}`: members at their own threshold for the objective, the ensemble"
            " at its own; 95% bootstrap intervals for the ensemble:",
            "",
            "| model | tuned on | scored | AUC | accuracy | macro F1 | "
            + " | ".join(f"acc {k[4:]}" for k in acc_keys)
            + " | FAR | FRR |",
            "| --- | --- | --- | ---: | ---: | ---: | "
            + " | ".join("---:" for _ in acc_keys)
            + " | ---: | ---: |",
        ]
        for domain, res in by_domain.items():
            for name, by_split in res["rows"].items():
                for split, row in by_split.items():
                    label = f"**{name}** ({res['method']})" if name == "ensemble" else name
                    cells = [f"{row['auc']:.3f}", f"{row['accuracy']:.3f}"]
                    rates = [row["macro_f1"], *(row[k] for k in acc_keys), row["far"], row["frr"]]
                    if "ci" in row:
                        keys = ["macro_f1", *(f"accuracy_{k[4:]}" for k in acc_keys), "far", "frr"]
                        cells += [
                            f"{v:.3f} ({_ci(row['ci'][k])})"
                            for v, k in zip(rates, keys, strict=True)
                        ]
                    else:
                        cells += [f"{v:.3f}" for v in rates]
                    lines.append(
                        f"| {label} | {splits[tune_on[domain]]} | {splits[split]} | "
                        + " | ".join(cells)
                        + " |"
                    )
        lines.append("")
    lines += _render_targets(results["targets"])
    lines += _render_tune_size(results.get("tune_size"))
    lines += _render_subgroups(results.get("subgroups"))
    lines += _render_training(results)
    lines += _render_int8(results)
    return "\n".join(lines)


def _render_targets(targets: dict[str, Any]) -> list[str]:
    def mark(ok: bool) -> str:
        return "met" if ok else "**missed**"

    lines = ["| aim | measured | |", "| --- | --- | --- |"]
    t = targets["ensemble_auc_facecom_test"]
    lines.append(
        f"| ensemble AUC >= 0.95, FACECOM test half | {t['value']:.3f} | {mark(t['met'])} |"
    )
    if "macro_f1_eer_facecom_test" in targets:
        t = targets["macro_f1_eer_facecom_test"]
        lines.append(
            "| macro F1 >= 0.90 at the `eer` threshold tuned on the FACECOM tune half |"
            f" {t['value']:.3f} ({_ci(t['ci'])}) | {mark(t['met'])} |"
        )
    for key, t in targets.items():
        if key.endswith("_target_facecom_test"):
            lines.append(
                f"| `{t['objective']}` tuned on the FACECOM tune half holds on the test half"
                f" (within its interval) | {t['value']:.3f} ({_ci(t['ci'])}) | {mark(t['met'])} |"
            )
    for split, t in targets["ensemble_above_members"].items():
        name = "UTKFace val" if split == "val" else "FACECOM test half"
        lines.append(
            f"| ensemble AUC above every member, {name} | {t['ensemble']:.3f} against"
            f" {t['best_member']:.3f} | {mark(t['met'])} |"
        )
    t = targets["ensemble_auc_val"]
    lines.append(f"| ensemble AUC >= 0.97, UTKFace val | {t['value']:.3f} | {mark(t['met'])} |")
    return [*lines, ""]


def _render_tune_size(curve: dict[str, Any] | None) -> list[str]:
    if not curve:
        return []
    rate = curve["rate"].upper()
    lines = [
        f"Threshold for `{curve['objective']}` tuned on n FACECOM tune images (seeded stratified"
        f" draws), its {rate} on the {curve['test_n']} test-half images:",
        "",
        f"| n tuned on (negatives) | draws | 95% CI width of {rate} on the tune set (median) |"
        f" {rate} on the test half: mean (10th-90th percentile) |",
        "| --- | ---: | ---: | --- |",
    ]
    for row in curve["rows"]:
        lines.append(
            f"| {row['n']} ({row['n_negative']}) | {row['draws']} | {row['ci_width_median']:.3f} |"
            f" {row['test_rate_mean']:.3f} ({row['test_rate_p10']:.3f}-{row['test_rate_p90']:.3f}) |"
        )
    return [*lines, ""]


def _render_subgroups(subgroups: dict[str, Any] | None) -> list[str]:
    if not subgroups:
        return []
    lines: list[str] = []
    for objective, audit in subgroups.items():
        lines += [
            f"Ensemble on UTKFace val by group, at its `{objective}` threshold (95% intervals):",
            "",
            "| column | group | n | FAR | FRR | AUC |",
            "| --- | --- | ---: | --- | --- | ---: |",
        ]
        for column, by in audit["by"].items():
            for g in by["tables"]["ensemble"]["groups"]:
                far, frr, auc = g["far"], g["frr"], g["auc"]
                lines.append(
                    f"| {column} | {g['group']} | {g['n']} | {far['estimate']:.3f} ({_ci(far)})"
                    f" | {frr['estimate']:.3f} ({_ci(frr)}) | {auc['estimate']:.3f} |"
                )
        lines.append("")
    return lines


def _render_training(results: dict[str, Any]) -> list[str]:
    lines = [
        "| backbone | input | faces | schedule | batch | epochs run (best) | training time |"
        " train images | best val AUC |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, t in results["training"].items():
        lines.append(
            f"| {name} | {t['image_size'][0]} px | {t['faces']} | {t['lr_schedule']}"
            f" | {t['batch_size']} | {t['epochs_run']} ({t['best_epoch']})"
            f" | {t['train_seconds'] / 60:.0f} min | {t['train_images']} | {t['best_val_auc']:.3f} |"
        )
    lines.append("")
    no_face = results.get("counts", {}).get("facecom_no_face")
    if no_face:
        lines += [
            f"FACECOM photos with no face found: {no_face['no_face']} of {no_face['photos']}"
            " (framing `align` scores and trains on those whole).",
            "",
        ]
    return lines


def _render_int8(results: dict[str, Any]) -> list[str]:
    int8 = results.get("int8")
    if not int8:
        return []
    lines = [
        f"INT8 against fp32 on utkface/val ({int8['n']} images, ONNX Runtime alone on"
        f" pre-decoded images, batch {int8['batch']}):",
        "",
        "| model | AUC fp32 | AUC int8 | drop | label agreement | img/s fp32 | img/s int8 | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    entries = list(int8["models"].items())
    if int8.get("ensemble"):
        entries.append(("**ensemble**", int8["ensemble"]))
    for name, row in entries:
        if "auc_int8" not in row:
            decision = results.get("int8_decisions", {}).get(name, {})
            lines.append(
                f"| {name} | {row['auc_fp32']:.4f} | fp32 kept"
                f" ({_why_fp32(decision)}) | | | {row['img_s_fp32']:.0f} | | |"
            )
            continue
        lines.append(
            f"| {name} | {row['auc_fp32']:.4f} | {row['auc_int8']:.4f} | {row['auc_drop']:+.4f}"
            f" | {row['agreement']:.4f} | {row['img_s_fp32']:.0f} | {row['img_s_int8']:.0f}"
            f" | {row['speedup']:.2f}x |"
        )
    return [*lines, ""]


def _why_fp32(decision: dict[str, Any]) -> str:
    if "refused_by_gate" in decision:
        return "int8 refused by the gate"
    refused = decision.get("gate_refused", {})
    if refused:
        # The gate refused every int8 format fast enough to try: say by how much.
        best = max(refused.values(), key=lambda g: g["agreement"])
        return (
            f"int8 refused by the gate: {', '.join(refused)}; best label agreement"
            f" {best['agreement']:.1%}, {best['min_agreement']:.0%} needed"
        )
    speeds = decision.get("speed_img_per_s")
    if speeds:
        best = max(v for k, v in speeds.items() if k != "fp32")
        where = (
            f"batch {decision.get('speed_batch', 8)}, {decision.get('speed_threads', 2)} thread(s)"
        )
        return f"int8 {best / speeds['fp32']:.2f}x fp32 at {where}: below 1.15x"
    return "no int8 decision recorded"


def common_epoch(done: dict[str, Any]) -> int | None:
    """The last epoch every variant reached (None if a record lacks its per-epoch AUC)."""
    runs = [row.get("val_auc_by_epoch") for row in done.values()]
    if not runs or not all(runs):
        return None
    return min(len(r) for r in runs)


def _metrics(done: dict[str, Any], key: str) -> dict[str, float]:
    """A variant's compared figures: best AUCs within the budget, and the validation AUC at
    :func:`common_epoch` (``at_epoch``) when every record has it."""
    row, k = done[key], common_epoch(done)
    out = {m: row[m] for m in ABLATION_METRICS}
    if k is not None:
        out["at_epoch"] = row["val_auc_by_epoch"][k - 1]
    return out


def ablation_noise(done: dict[str, Any]) -> dict[str, float]:
    """The gap between two seeds of the base, per compared figure ({} without both seeds)."""
    if "base" not in done or "seed1" not in done:
        return {}
    base, seed1 = _metrics(done, "base"), _metrics(done, "seed1")
    return {k: abs(base[k] - seed1[k]) for k in base}


def lever_kept(done: dict[str, Any], key: str) -> bool | None:
    """Whether variant ``key``'s lever earns its place: within the budget, a gain over its
    reference above the seeds' noise on one AUC without a loss beyond the noise on the other,
    and, at equal epochs, no loss of validation AUC beyond the noise (so a lever is not
    credited with epochs a faster moment of a shared machine gave it). None: no reference or
    no noise measured."""
    noise, against = ablation_noise(done), ABLATION_AGAINST.get(key)
    if not noise or against not in done or key not in done:
        return None
    mine, ref = _metrics(done, key), _metrics(done, against)
    gain = {k: mine[k] - ref[k] for k in mine}
    within_budget = any(
        gain[k] > noise[k] and all(gain[o] > -noise[o] for o in ABLATION_METRICS if o != k)
        for k in ABLATION_METRICS
    )
    return within_budget and gain.get("at_epoch", 0.0) >= -noise.get("at_epoch", 0.0)


def render_ablation(done: dict[str, Any], budget_min: float, backbone: str) -> str:
    """The ablation table: AUC per variant within the budget and at equal epochs, its gain
    over its reference, whether the lever is kept (:func:`lever_kept`), the seeds' noise."""
    noise, k = ablation_noise(done), common_epoch(done)
    at = f"val AUC at epoch {k}" if k else None
    head = ["variant", "epochs", "s per epoch", *([at] if at else []), "UTKFace val AUC"]
    head += ["FACECOM tune AUC", "gain over", "val", "FACECOM", *(["at epoch"] if at else [])]
    head.append("kept")
    lines = [
        f"{backbone}, {budget_min:g} min of training per variant:",
        "",
        "| " + " | ".join(head) + " |",
        "| --- | "
        + " | ".join("---" if h in ("gain over", "kept") else "---:" for h in head[1:])
        + " |",
    ]
    for key, row in done.items():
        m = _metrics(done, key)
        cells = [row["label"], str(row["epochs_run"])]
        cells.append(
            f"{row['train_seconds'] / row['epochs_run']:.0f}" if "train_seconds" in row else ""
        )
        cells += [f"{m['at_epoch']:.3f}"] if at else []
        cells += [f"{row['val_auc']:.3f}", f"{row['facecom_tune_auc']:.3f}"]
        against = ABLATION_AGAINST.get(key)
        n_gain = 3 + (1 if at else 0)
        if against in done:
            ref = _metrics(done, against)
            kept = lever_kept(done, key)
            cells.append(done[against]["label"])
            cells += [
                f"{m[x] - ref[x]:+.3f}" for x in (*ABLATION_METRICS, *(["at_epoch"] if at else []))
            ]
            cells.append("" if kept is None else ("yes" if kept else "no"))
        else:
            cells += [""] * (n_gain + 1)
        lines.append("| " + " | ".join(cells) + " |")
    if noise:
        lines += [
            "",
            f"Noise between two seeds of the base: {noise['val_auc']:.3f} (UTKFace val AUC),"
            f" {noise['facecom_tune_auc']:.3f} (FACECOM tune AUC)"
            + (f", {noise['at_epoch']:.3f} (val AUC at epoch {k})" if at else "")
            + ". A lever is kept when, within the budget, it gains more than the noise on one"
            " AUC and loses no more than the noise on the other"
            + (", and at equal epochs loses no more than the noise." if at else "."),
        ]
    return "\n".join([*lines, ""])
