"""Figures of fitted models: t-SNE of a transfer method's transformed against true target
embeddings (MetaEM's Fig. 2, for MetaEM and PTUPCDR alike), and learned per-user temperatures
against user activity (UCLR's Fig. 5).

For the training overlap users, the true target embedding is the one the target model learned
from their target ratings, and the transformed one is what the method maps from their source
embedding. Cold-start test users have no target embedding in the model, because their target
ratings were held out. Their "true" embedding is therefore what the frozen target model gives
them from those held-out ratings (``serving.fold_in``: the item side fixed, the base's own loss).
It lies in the same space as every other target embedding. A separately trained model would not:
its embedding space is rotated arbitrarily.

The figure only reads the test ratings and feeds nothing back into the model or its metrics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cdrec.data.dataset import CrossDomainData
from cdrec.models.coldstart.transfer import TransferMethod
from cdrec.models.serving import NewHistory, fold_in
from cdrec.split import Split


def _sample(users: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    return users[torch.randperm(users.numel(), generator=generator)[:n]]


@torch.no_grad()
def transfer_embeddings(model: TransferMethod, split: Split, data: CrossDomainData,
                        n_users: int = 256, seed: int = 0) -> dict[str, torch.Tensor]:
    """``{"train_true", "train_mapped", "test_true", "test_mapped"}`` (each ``[n, D]``): the
    target embeddings of up to ``n_users`` training overlap users and test users, true and
    transformed (module docstring). ``data`` is the full dataset the split was made from."""
    source, target = model.domains_
    generator = torch.Generator().manual_seed(seed)
    overlap = split.train.data.overlap_users(source, target)
    train_users = _sample(overlap, n_users, generator)
    test_users = _sample(torch.as_tensor(np.unique(split.test.per_user(model)["user"])),
                         n_users, generator)
    device = model.device
    ordered = test_users.sort().values
    rows = data[target].interactions
    rows = rows.select(torch.isin(rows.user, ordered))
    slot = torch.searchsorted(ordered, rows.user)  # which test user each held-out row is
    true_test = fold_in(model.target_, NewHistory(slot, rows.item, rows.rating, ordered.numel()))
    return {"train_true": model.target_.user_state(train_users.to(device)).cpu(),
            "train_mapped": model.transferred_state(train_users.to(device)).cpu(),
            "test_true": true_test.cpu(),
            "test_mapped": model.transferred_state(ordered.to(device)).cpu()}


def plot_transfer_tsne(embeddings: dict[str, torch.Tensor], path: Path, title: str,
                       seed: int = 0) -> np.ndarray:
    """One t-SNE (scikit-learn) of all four groups together, drawn as two panels (training
    users, test users): true target embeddings red, transformed ones green. Returns the 2-D
    coordinates in the order train_true, train_mapped, test_true, test_mapped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise ValueError("the t-SNE figure needs scikit-learn: pip install scikit-learn") \
            from None
    order = ["train_true", "train_mapped", "test_true", "test_mapped"]
    points = torch.cat([embeddings[k] for k in order]).double().numpy()
    perplexity = float(min(30.0, max(2.0, (len(points) - 1) / 3)))
    coords: np.ndarray = TSNE(n_components=2, perplexity=perplexity, init="pca",
                              random_state=seed).fit_transform(points)
    bounds = np.cumsum([0, *(len(embeddings[k]) for k in order)])
    parts = {k: coords[bounds[i]:bounds[i + 1]] for i, k in enumerate(order)}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), sharex=True, sharey=True)
    for ax, group, label in ((axes[0], "train", "training overlap users"),
                             (axes[1], "test", "cold-start test users")):
        true, mapped = parts[f"{group}_true"], parts[f"{group}_mapped"]
        ax.scatter(true[:, 0], true[:, 1], s=8, c="tab:red", label="target embedding")
        ax.scatter(mapped[:, 0], mapped[:, 1], s=8, c="tab:green",
                   label="transformed embedding")
        ax.set_title(f"{label} ({len(true)})")
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return coords


def temperature_groups(counts: torch.Tensor, temperatures: torch.Tensor, groups: int = 9
                       ) -> pd.DataFrame:
    """Users with at least one training interaction ranked from the most to the least active
    (``counts``) and cut into ``groups`` groups of (nearly) equal size, as UCLR's Fig. 5 groups
    its users; per group the range of counts and the mean and standard deviation of the
    learned ``temperatures``."""
    if counts.shape != temperatures.shape:
        raise ValueError(f"counts {tuple(counts.shape)} and temperatures "
                         f"{tuple(temperatures.shape)} must have one entry per user")
    active = (counts > 0).nonzero().squeeze(1)
    if active.numel() < groups:
        raise ValueError(f"{active.numel()} active users cannot fill {groups} groups")
    order = active[torch.argsort(counts[active], descending=True, stable=True)]
    rows = []
    for g, members in enumerate(torch.tensor_split(order, groups), start=1):
        tau, c = temperatures[members].double(), counts[members]
        rows.append({"group": g, "users": members.numel(), "max_interactions": int(c.max()),
                     "min_interactions": int(c.min()), "tau_mean": float(tau.mean()),
                     "tau_std": float(tau.std()) if members.numel() > 1 else 0.0})
    return pd.DataFrame(rows)


def plot_temperatures(table: pd.DataFrame, path: Path, title: str) -> None:
    """Mean +- std of the temperature per activity group (from :func:`temperature_groups`),
    the most active group first, each labelled with its range of interaction counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar(table["group"], table["tau_mean"], yerr=table["tau_std"], capsize=3,
           color="#4c72b0")
    labels = [f"{lo}-{hi}" if lo != hi else f"{lo}"
              for lo, hi in zip(table["min_interactions"], table["max_interactions"], strict=True)]
    ax.set_xticks(table["group"], labels, rotation=30, fontsize=8)
    ax.set_xlabel("training interactions of the group's users (most active first)")
    ax.set_ylabel("learned temperature")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
