"""Result tables (mean ± std over seeds, with paired significance marks) and training-curve plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cdrec.metrics import higher_is_better
from cdrec.stats import align_per_user, paired_tests

REFERENCE = "TGT"
MARK_FLOOR, MARK_TGT, MARK_LOSS = "†", "‡", "▽"


def significance_table(per_user: pd.DataFrame, results: dict[str, dict[str, dict[str, Any]]],
                       names: dict[str, str], metrics: list[str], *, alpha: float = 0.05,
                       compare: list[tuple[str, str]] | None = None,
                       floors: list[str] | None = None,
                       selection_metric: str | None = None,
                       per_domain: bool = False) -> dict[str, Any]:
    """Paired tests of every model against the best floor and against TGT, per metric, and of
    each ``(model, baseline)`` of ``compare`` head to head (``head_to_head``).

    Pairs are (seed, test user): each seed's split has its own test users and every model is
    evaluated on the same ones, so pooling seeds keeps the pairing. ``floors`` are the labels of
    the non-personalised models (their classes say ``is_floor``); the best is the one with the
    best mean ``validation_<selection_metric>`` (validation users, never test users). Only if a
    floor lacks that score (a result saved by an older version) is it the best test mean, and
    ``best_floor_chosen_on`` says so.

    A group's metric (``low/NDCG@10``: see :func:`metric_groups`) is NaN for the users outside
    the group, so its tests pair the group's users only. With ``per_domain`` and a ``domain``
    column, ``per_domain`` maps each domain to the same tests over its own (seed, user) pairs,
    its metrics named ``{domain}/{metric}`` as in ``results`` (the per-domain tables of
    :func:`group_tables`).
    """
    floors = [label for label in names if label in set(floors or [])]
    main = metrics[0]
    best_floor, chosen_on = None, None
    if floors:
        on_validation = selection_metric is not None and all(
            f"validation_{selection_metric}" in results[f] for f in floors)
        key_metric = f"validation_{selection_metric}" if on_validation else main
        direction = selection_metric if on_validation else main
        key = [results[f][key_metric]["mean"] for f in floors]
        pick = max if higher_is_better(str(direction)) else min
        best_floor = floors[key.index(pick(key))]
        chosen_on = "validation" if on_validation else "test"
    tgt = next((label for label, name in names.items() if name == REFERENCE), None)
    # Multi-domain protocols evaluate a user once per domain: pair on (seed, domain, user).
    keys = ("seed", "domain", "user") if "domain" in per_user.columns else ("seed", "user")
    out: dict[str, Any] = {"best_floor": best_floor, "best_floor_chosen_on": chosen_on,
                           "reference": tgt, "alpha": alpha,
                           "metrics": metrics,
                           "higher_is_better": {m: higher_is_better(m) for m in metrics},
                           "pairs": f"({', '.join(keys)})", "tests": {}}
    for label in names:
        rows: dict[str, Any] = {}
        for ref in (best_floor, tgt):
            if ref is None or ref == label:
                continue
            rows[ref] = {}
            for metric in metrics:
                a, b = align_per_user(per_user[per_user.model == label],
                                      per_user[per_user.model == ref], metric, keys)
                rows[ref][metric] = paired_tests(a, b, higher_is_better=higher_is_better(metric),
                                                 alpha=alpha)
        out["tests"][label] = rows
    out["head_to_head"] = []
    for label, ref in compare or []:
        missing = [m for m in (label, ref) if m not in names]
        if missing:
            raise ValueError(f"compare names {', '.join(missing)}, not among the models")
        tests = {}
        for metric in metrics:
            a, b = align_per_user(per_user[per_user.model == label],
                                  per_user[per_user.model == ref], metric, keys)
            tests[metric] = paired_tests(a, b, higher_is_better=higher_is_better(metric),
                                         alpha=alpha)
        out["head_to_head"].append({"model": label, "baseline": ref, "tests": tests})
    if per_domain and "domain" in per_user.columns:
        out["per_domain"] = {}
        for domain in dict.fromkeys(per_user["domain"]):
            own = per_user[per_user["domain"] == domain].rename(
                columns={m: f"{domain}/{m}" for m in metrics})
            out["per_domain"][str(domain)] = significance_table(
                own, results, names, [f"{domain}/{m}" for m in metrics], alpha=alpha,
                compare=compare, floors=floors, selection_metric=selection_metric)
    return out


def metric_groups(metrics: list[str]) -> dict[str, list[str]]:
    """The user groups among per-user metric names: ``{group: its metrics}``, a group's metric
    being named ``{group}/{metric}`` (e.g. ``low/NDCG@10``: the low-activity users of
    ``leave_one_out``), in order of appearance. Plain metrics hold no ``/``."""
    groups: dict[str, list[str]] = {}
    for metric in metrics:
        if "/" in metric:
            groups.setdefault(metric.split("/", 1)[0], []).append(metric)
    return groups


def head_to_head_table(signif: dict[str, Any]) -> str:
    """Markdown lines of the ``compare`` pairs: both means, the difference and the p-values."""
    rows = signif.get("head_to_head") or []
    if not rows:
        return ""
    header = "| model | baseline | metric | model mean | baseline mean | Wilcoxon p | t-test p |"
    lines = [header + " verdict |", "|" + "---|" * 8]
    for row in rows:
        for metric, t in row["tests"].items():
            verdict = ("better" if t["significant"] else
                       "worse" if not t["better"] and t["wilcoxon_p"] < t["alpha"] else "level")
            lines.append(f"| {row['model']} | {row['baseline']} | {metric} | {t['mean_a']:.4f} | "
                         f"{t['mean_b']:.4f} | {t['wilcoxon_p']:.2g} | {t['ttest_p']:.2g} | "
                         f"{verdict} |")
    return "\n".join(lines) + "\n"


def _cell(stats: dict[str, Any], signif: dict[str, Any], label: str, metric: str,
          results: dict[str, dict[str, dict[str, Any]]]) -> str:
    text = f"{stats['mean']:.4f} ± {stats['std']:.4f}"
    tests = signif["tests"].get(label, {})
    marks = ""
    floor, tgt = signif.get("best_floor"), signif.get("reference")
    higher = signif["higher_is_better"][metric]

    def beats(ref: str) -> bool:  # the table's own mean must agree with the per-user test
        return (stats["mean"] > results[ref][metric]["mean"]) == higher

    if floor is not None and floor in tests and metric in tests[floor]:
        t = tests[floor][metric]
        if t["significant"] and beats(floor):
            marks += MARK_FLOOR
        elif not t["better"] and not beats(floor) and t["wilcoxon_p"] < signif["alpha"]:
            marks += MARK_LOSS
    if (tgt is not None and tgt in tests and metric in tests[tgt]
            and tests[tgt][metric]["significant"] and beats(tgt)):
        marks += MARK_TGT
    return text + (f" {marks}" if marks else "")


def markdown_table(results: dict[str, dict[str, dict[str, Any]]], signif: dict[str, Any],
                   metrics: list[str] | None = None, *, prefix: str = "",
                   costs: bool = True, legend: bool = True) -> str:
    """One row per model: mean ± std over seeds of each of ``metrics`` (default: the tested
    metrics that belong to no group, i.e. name no ``/``), with significance marks, then the
    costs (chosen epoch, fit seconds) unless ``costs`` is false, then a legend unless ``legend``
    is false. ``prefix`` (a domain's ``phone/``) is left out of the column headers."""
    if metrics is None:
        metrics = [m for m in signif["metrics"] if "/" not in m]
    extra = [m for m in ("chosen_epoch", "fit_seconds")
             if costs and any(m in r for r in results.values())]
    header = ["model", *(m.removeprefix(prefix) for m in metrics), *extra]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, res in results.items():
        cells = [label]
        cells += [_cell(res[m], signif, label, m, results) if m in res else "" for m in metrics]
        cells += [f"{res[m]['mean']:.1f}" if m in res else "–" for m in extra]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    if not legend:
        return table
    direction = ", ".join(f"{m} {'higher' if signif['higher_is_better'][m] else 'lower'}"
                          for m in metrics)
    refs = [f"{MARK_FLOOR} better than the best floor ({signif['best_floor']})"
            if signif["best_floor"] else "",
            f"{MARK_TGT} better than {signif['reference']}" if signif["reference"] else "",
            f"{MARK_LOSS} worse than the best floor" if signif["best_floor"] else ""]
    text = (f"mean ± std over seeds; better is {direction}. Paired Wilcoxon signed-rank test "
            f"over {signif['pairs']} pairs at {signif['alpha']}: "
            + ", ".join(r for r in refs if r)
            + "; a mark needs the table's mean to agree. The test pairs per-user values "
            "(per-user RMSE for RMSE). p-values of Wilcoxon and the paired t-test: "
            "significance.json.")
    return table + "\n" + text + "\n"


def _group_title(group: str, info: dict[str, Any]) -> str:
    if group == "low" and "low_activity" in info:  # leave_one_out's low_activity
        return (f"Low-activity users: test users with at most {info['low_activity']} training "
                "interactions in the domain (UCLR's refined analysis, Table 3)")
    return f"Group `{group}`: its test users only"


def _group_size(group: str, domain: str, info: dict[str, Any]) -> str:
    users = info.get(f"{domain}_low_activity_users") if group == "low" else None
    return f"; {users} such test users in the first seed" if users is not None else ""


def group_tables(results: dict[str, dict[str, dict[str, Any]]], signif: dict[str, Any],
                 info: dict[str, Any]) -> str:
    """Markdown of each user group's metrics beside the overall ones (see
    :func:`metric_groups`), or ``""`` when the run has no group.

    Per group, one table of the means over domains (or of the one evaluated domain) with the
    pooled tests' marks, then one table per domain with that domain's tests
    (``signif["per_domain"]``): left the metrics over all test users, right ``{group}/...`` over
    the group's users alone, so each domain's low-activity numbers sit beside its overall
    ones. ``info`` (the first seed's split info) names the group's threshold.
    """
    groups = metric_groups(list(signif["metrics"]))
    if not groups:
        return ""
    overall = [m for m in signif["metrics"] if "/" not in m]
    per_domain: dict[str, Any] = signif.get("per_domain") or {}
    parts = []
    for group, metrics in groups.items():
        parts.append(f"## {_group_title(group, info)}\n")
        where = "Mean over domains" if per_domain else "The evaluated domain"
        parts.append(f"{where} (tested on {signif['pairs']} pairs):\n\n"
                     + markdown_table(results, signif, [*overall, *metrics], costs=False,
                                      legend=False))
        for domain, sig in per_domain.items():
            columns = [f"{domain}/{m}" for m in (*overall, *metrics)]
            parts.append(f"{domain} (tested on the (seed, user) pairs of {domain}"
                         f"{_group_size(group, domain, info)}):\n\n"
                         + markdown_table(results, sig, columns, prefix=f"{domain}/",
                                          costs=False, legend=False))
        parts.append(f"Left: every test user; right (`{group}/...`): the group's users alone, "
                     "their tests pairing those users only. Marks and directions as in the first "
                     "table; a mean over domains averages the domains' means. An empty cell: no "
                     "such user in any seed.\n")
    return "\n".join(parts)


def write_markdown(path: Path, name: str, results: dict[str, Any], signif: dict[str, Any],
                   split_info: dict[int, Any]) -> str:
    """``results.md``: the main table (metrics over all test users; the means over domains of
    a multi-domain protocol), the ``compare:`` pairs (every tested metric, groups' included;
    pooled, then per domain), each user group's tables (:func:`group_tables`) and the first
    seed's split info."""
    table = markdown_table(results, signif)
    duels = head_to_head_table(signif)
    if duels:
        table += (f"\nHead to head (config `compare:`; paired over {signif['pairs']}; the means "
                  f"are of per-user values, so they differ from pooled MAE/RMSE):\n\n{duels}")
    # A multi-target method must win in every domain, not only on the pooled pairs.
    for domain, sig in (signif.get("per_domain") or {}).items():
        own = head_to_head_table(sig)
        if own:
            table += (f"\n{domain} head to head (paired over the (seed, user) pairs of "
                      f"{domain}):\n\n{own}")
    first: dict[str, Any] = next(iter(split_info.values()), {}) or {}
    groups = group_tables(results, signif, first)
    if groups:
        table += "\n" + groups
    info = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in first.items())
    path.write_text(f"# {name}\n\n{table}\nSplit (first seed): {info}\n")
    return table


def schedule_curves(history: pd.DataFrame) -> pd.DataFrame:
    """``history`` with the per-round stages of a schedule (``in_domain@3``) renamed to their
    stage (``in_domain``) and ``epoch`` counted across the rounds, in row order."""
    h = history.copy()
    scheduled = h.stage.str.fullmatch(r".+@\d+")
    if scheduled.any():
        h.loc[scheduled, "stage"] = h.loc[scheduled, "stage"].str.rsplit("@", n=1).str[0]
        h.loc[scheduled, "epoch"] = h[scheduled].groupby(["model", "seed", "stage"]).cumcount() + 1
    return h


def plot_curves(history: pd.DataFrame, path: Path) -> None:
    """Training loss per stage, and the validation metric where one drives early stopping,
    for the first seed of every model. The rounds of a stage schedule (stages named
    ``stage@round`` by :func:`cdrec.train.run_schedule`) are one line per stage, its epochs
    counted across the rounds (DML's Figure 6)."""
    seed = history["seed"].min()
    h = schedule_curves(history[history.seed == seed])
    val_cols = [c for c in h.columns if c.startswith("val_")]
    fig, axes = plt.subplots(1, 1 + bool(val_cols), figsize=(12 if val_cols else 6, 4.5),
                             squeeze=False)
    for (model, stage), g in h.groupby(["model", "stage"], sort=False):
        axes[0, 0].plot(g.epoch, g.train_loss, label=f"{model}: {stage}")
    axes[0, 0].set(title=f"training loss (seed {seed})", xlabel="epoch", yscale="log")
    axes[0, 0].legend(fontsize=7)
    if val_cols:
        ax = axes[0, 1]
        for (model, stage), g in h.groupby(["model", "stage"], sort=False):
            for col in val_cols:
                if col.startswith("val_holdout") or g[col].isna().all():
                    continue
                ax.plot(g.epoch, g[col], label=f"{model}: {stage} {col[4:]}")
        ax.set(title="validation metric (early stopping)", xlabel="epoch")
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no stage early-stopped on validation users", ha="center",
                    transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def method_pairs(labels: list[str], baseline: str = "EMCDR", method: str = "TMCDR",
                 extra: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    """``(base, baseline label, method label)`` for every base run both ways: EMCDR_X with
    TMCDR_X, plus ``extra`` pairs given as {method label: baseline label} (SSCDR for CML)."""
    pairs = []
    for label in labels:
        if label.startswith(f"{method}_"):
            base = label[len(method) + 1:]
            other = (extra or {}).get(label, f"{baseline}_{base}")
            if other in labels:
                pairs.append((base, other, label))
    return pairs


def plot_pairs(results: dict[str, dict[str, dict[str, Any]]], metrics: list[str], path: Path,
               pairs: list[tuple[str, str, str]], title: str = "") -> None:
    """Paired bars (mean ± std over seeds) of a baseline and a method for each base model:
    TMCDR's Figure 1 (EMCDR_X vs TMCDR_X)."""
    if not pairs:
        raise ValueError("no (baseline, method) pairs to plot: the run needs e.g. EMCDR_MF and "
                         "TMCDR_MF")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 4), squeeze=False)
    x = range(len(pairs))
    for ax, metric in zip(axes[0], metrics, strict=True):
        for offset, which, colour in ((-0.2, 1, "tab:red"), (0.2, 2, "tab:blue")):
            means = [results[p[which]][metric]["mean"] for p in pairs]
            stds = [results[p[which]][metric]["std"] for p in pairs]
            ax.bar([i + offset for i in x], means, width=0.4, yerr=stds, capsize=3,
                   color=colour, label="baseline (EMCDR / SSCDR)" if which == 1 else "TMCDR")
        lows = [results[p[w]][metric]["mean"] - results[p[w]][metric]["std"]
                for p in pairs for w in (1, 2)]
        ax.set_ylim(max(0.0, min(lows) - 0.05), None)
        ax.set_xticks(list(x), [p[0] for p in pairs])
        ax.set(title=metric, xlabel="base model")
    save_panels(fig, axes, path, title)


def save_panels(fig: Any, axes: Any, path: Path, title: str = "") -> None:
    """A row of panels written to ``path``: the legend on the first, ``title`` above them."""
    axes[0, 0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep_table(points: list[tuple[dict[str, Any], dict[str, dict[str, dict[str, Any]]]]]
                ) -> pd.DataFrame:
    """One row per (sweep point, model, metric): the swept keys' values, ``model``,
    ``metric``, ``mean``, ``std`` and ``seeds`` (from each point's :func:`aggregate` results)."""
    rows = []
    for point, results in points:
        for model, metrics in results.items():
            for metric, stats in metrics.items():
                rows.append({**{key: _shown(value) for key, value in point.items()},
                             "model": model, "metric": metric, "mean": stats["mean"],
                             "std": stats["std"], "seeds": len(stats["per_seed"])})
    return pd.DataFrame(rows)


def _shown(value: Any) -> Any:
    """A sweep value as a table cell: null is ``all`` (a null limit means no limit)."""
    if value is None:
        return "all"
    return "+".join(map(str, value)) if isinstance(value, list) else value


def plot_sweep(table: pd.DataFrame, key: str, metrics: list[str], path: Path, *,
               models: list[str] | None = None, marks: dict[float, str] | None = None,
               title: str = "") -> None:
    """Metric (mean ± std over seeds) against the swept ``key``, one line per model and one
    panel per metric (DML's Figures 3-4). The values sit at even steps in sweep order (a
    non-numeric value such as ``all`` has no place on a numeric axis); ``marks`` draws a
    dashed line at a numeric value, placed between its neighbours on a log scale."""
    if key not in table.columns:
        raise ValueError(f"the sweep has no key {key!r}; its keys: "
                         f"{[c for c in table.columns if c not in SWEEP_COLUMNS]}")
    missing = [m for m in metrics if m not in set(table.metric)]
    if missing:
        raise ValueError(f"the sweep has no metric {missing}; its metrics: "
                         f"{sorted(set(table.metric))}")
    table = table.assign(**{key: table[key].map(_as_number)})  # a CSV reads 8 and all as text
    repeated = table.duplicated(["model", "metric", key])
    if repeated.any():
        others = [c for c in sweep_keys(table) if c != key]
        raise ValueError(
            f"{key!r} does not alone fix a sweep point: the other swept keys {others} vary at "
            f"one of its values; choose a value of each with --where KEY=VALUE")
    values = list(dict.fromkeys(table[key]))
    models = models or list(dict.fromkeys(table.model))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.8 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        rows = table[table.metric == metric]
        for model in models:
            g = rows[rows.model == model].set_index(key).reindex(values)
            ax.errorbar(range(len(values)), g["mean"], yerr=g["std"], marker="o", capsize=3,
                        label=model)
        for value, label in (marks or {}).items():
            ax.axvline(_sweep_position(values, value), ls="--", color="grey")
            ax.text(_sweep_position(values, value), 1.0, f" {label}", color="grey",
                    transform=ax.get_xaxis_transform(), va="top", fontsize=8)
        ax.set_xticks(range(len(values)), [str(v) for v in values])
        ax.set(title=metric, xlabel=key.rsplit(".", 1)[-1])
    save_panels(fig, axes, path, title)


SWEEP_COLUMNS = frozenset({"model", "metric", "mean", "std", "seeds"})
# What the runner adds to a model's results besides the evaluator's metrics: costs and choices.
RUN_FIELDS = frozenset({"fit_seconds", "eval_seconds", "chosen_epoch"})


def sweep_keys(table: pd.DataFrame) -> list[str]:
    """The swept keys of a sweep table, in their order."""
    return [c for c in table.columns if c not in SWEEP_COLUMNS]


def axis_key(table: pd.DataFrame) -> str | None:
    """The first swept key that alone fixes a sweep point (every key of a one-key or a paired
    sweep; none of a product over several keys), or None."""
    for key in sweep_keys(table):
        if not table.duplicated(["model", "metric", key]).any():
            return key
    return None


def evaluation_metrics(table: pd.DataFrame) -> list[str]:
    """The unprefixed test metrics of a sweep table: not validation_*, not per domain
    (domain/...), not the runner's costs and choices (fit_seconds, chosen_epoch, selected_*)."""
    return [m for m in dict.fromkeys(table.metric)
            if "/" not in m and not m.startswith(("validation", "selected_"))
            and m not in RUN_FIELDS]


def _as_number(value: Any) -> Any:
    """``value`` as an int or float where it is one written as text, else unchanged."""
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
    return value


def _sweep_position(values: list[Any], mark: float) -> float:
    """Where ``mark`` falls on an axis of ``values`` at positions 0, 1, ...: interpolated in
    log(1 + x) between the numeric values around it (clamped to the numeric range)."""
    numeric = [(i, float(v)) for i, v in enumerate(values)
               if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numeric) < 2:
        raise ValueError(f"a mark needs at least two numeric sweep values, got {values}")
    positions, xs = zip(*sorted(numeric, key=lambda p: p[1]), strict=True)
    return float(np.interp(np.log1p(mark), np.log1p(xs), positions))
