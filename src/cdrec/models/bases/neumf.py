"""NeuMF: neural matrix factorisation (He, Liao, Zhang, Nie, Hu, Chua, "Neural Collaborative
Filtering", WWW 2017, Sec. 3.4), the "NCF" baseline of DML and the NeuMF baseline of UCLR.

NeuMF fuses two towers that learn *separate* embeddings (Sec. 3.4, Fig. 3):

- the GMF tower (Eq. 8): phi^GMF = p^G_u * q^G_i (element-wise), GMF's interaction;
- the MLP tower (Eq. 10): phi^MLP = a_L(W_L^T(... a_2(W_2^T [p^M_u; q^M_i] + b_2) ...) + b_L),
  the concatenated user and item embeddings through a ReLU tower (ReLU after every layer,
  the last included);
- prediction (Eq. 12): y_hat = a_out(h^T [phi^GMF; phi^MLP]), one linear layer without bias
  over both towers' outputs, a_out the logistic function on implicit feedback.

Losses are those of the other bases: on implicit feedback the log loss of NCF (Eq. 7) over each
positive and its sampled negatives (the bases' default binary cross-entropy, sigmoid of the
score, labels 1 / 0, ``n_neg`` = 4 negatives per positive as in the paper's Sec. 4.1); on
explicit ratings (DML's rating prediction, not in the NCF paper) squared error on
r_hat = mu + b_i + h^T [phi^GMF; phi^MLP], a_out the identity plus a global mean and an item
bias, as GMF and DNN do.

Sizes follow the paper's "predictive factors" setup (Sec. 4.1; factors 8, 16, 32, 64): with
``dim`` = k predictive factors, the GMF embeddings have k entries and the MLP tower is the
pyramid [4k, 2k, k] whose input is the concatenation of a 2k user and a 2k item embedding (the
paper's example: 8 factors give the tower 32 -> 16 -> 8 over 16-entry embeddings). cdrec's
default is k = 16: GMF embeddings of 16, MLP embeddings of 32 per side, tower [64, 32, 16], and
h over 16 + 16 outputs. ``layers`` sets another tower (its first entry, the concatenation, must
be even: half per side).

Reused pieces: GMF's base (its h, item bias, global mean, penalty, Eq. 8 interaction), DNN's
seeded ReLU ``tower`` (``cdrec.nn.MLP``), the shared batching, loss and training loop.

Choices of cdrec:

- the two towers' embeddings are separate parameters held side by side in one row per user and
  item (``[p^G_u, p^M_u]``, ``[q^G_i, q^M_i]``): the user state that a transfer method maps is
  that whole row, and the per-row machinery of the bases (sparse rows, L2 penalty on the rows a
  batch touches, resetting users without data to the prior) applies unchanged. A user at the
  prior (zero row) scores phi^GMF = 0 and the MLP on [0; q^M_i], an item-side prediction;
- h starts as GMF's h (ones) on the GMF outputs and in PyTorch's default range (uniform in
  +-1/sqrt(fan_in)) on the MLP outputs, drawn from the fit's generator, like the tower weights;
  embeddings start at N(0, 0.01^2) as in the paper (Sec. 4.1);
- the L2 penalty covers both towers' embedding rows of a batch, the item biases and h (GMF's
  reasoning), not the tower weights (DNN's);
- training defaults: Adam with lr 0.001 and batches of 256, from the paper's grids (Sec. 4.1:
  lr in {0.0001, 0.0005, 0.001, 0.005}, batch size in {128, 256, 512, 1024}; the authors'
  code uses these two values), up to 100 epochs with early stopping (patience 5).

Left out: the paper's pretraining (Sec. 3.4.1: GMF and MLP trained alone, then NeuMF started from
both with h = [alpha h^GMF; (1 - alpha) h^MLP], alpha = 0.5, and fine-tuned with SGD). NeuMF here
is trained from random initialisation with Adam, the paper's "NeuMF without pre-training".
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field, PositiveInt, model_validator
from torch import nn

from cdrec.models.bases.dnn import tower
from cdrec.models.bases.gmf import GMFBase
from cdrec.models.bases.interface import BaseConfig, EmbeddingBase
from cdrec.models.bases.registry import register_base
from cdrec.models.bases.single_domain import SingleDomain
from cdrec.models.registry import register


class NeuMFConfig(BaseConfig):
    """NeuMF's settings; the sizes follow the paper's predictive-factors pyramid."""

    training_defaults: ClassVar[dict[str, Any]] = {"epochs": 100, "batch_size": 256,
                                                   "lr": 0.001, "patience": 5}

    dim: int = Field(16, ge=1, description=(
        "predictive factors k: the GMF embedding size and, by default, the MLP tower's last "
        "layer (tower [4k, 2k, k] over 2k-entry user and item embeddings)"))
    layers: list[PositiveInt] | None = Field(None, min_length=2, description=(
        "MLP tower sizes, the first being the concatenated user and item MLP embeddings (even: "
        "half per side), e.g. [64, 32, 16] (default [4 dim, 2 dim, dim])"))

    @model_validator(mode="after")
    def _even_input(self) -> NeuMFConfig:
        if self.layers is not None and self.layers[0] % 2:
            raise ValueError(f"layers[0] is the concatenation of the user and item MLP "
                             f"embeddings and must be even, got {self.layers[0]}")
        return self

    def tower_sizes(self) -> list[int]:
        return list(self.layers or [4 * self.dim, 2 * self.dim, self.dim])

    @property
    def mlp_dim(self) -> int:
        """Size of each side's MLP embedding (p^M_u, q^M_i)."""
        return self.tower_sizes()[0] // 2


@register_base("NeuMF")
class NeuMFBase(GMFBase):
    """NeuMF: score h^T [p^G_u * q^G_i; MLP([p^M_u; q^M_i])] (+ mu + b_i on ratings)."""

    Config = NeuMFConfig
    config: NeuMFConfig

    def __init__(self, n_users: int, n_items: int, config: NeuMFConfig, *, implicit: bool,
                 global_mean: float = 0.0, generator: torch.Generator | None = None,
                 init_std: float = 0.01) -> None:
        super().__init__(n_users, n_items, config, implicit=implicit, global_mean=global_mean,
                         generator=generator, init_std=init_std)
        sizes = config.tower_sizes()
        self.mlp = tower(sizes, generator, output_activation=True)  # Eq. 10
        bound = (config.dim + sizes[-1]) ** -0.5
        h_mlp = (torch.rand(sizes[-1], generator=generator) * 2 - 1) * bound
        self.h = nn.Parameter(torch.cat([self.h.detach(), h_mlp]))  # GMF's ones, then MLP's

    @classmethod
    def row_width(cls, config: BaseConfig) -> int:
        assert isinstance(config, NeuMFConfig)
        return config.dim + config.mlp_dim  # [GMF embedding, MLP embedding]

    def interaction(self, state: torch.Tensor, item_rows: torch.Tensor) -> torch.Tensor:
        """[phi^GMF; phi^MLP] (Eq. 11) of user rows and item rows ``[GMF | MLP]``."""
        state, item_rows = torch.broadcast_tensors(state, item_rows)
        k = self.config.dim
        gmf = super().interaction(state[..., :k], item_rows[..., :k])  # Eq. 8
        mlp = self.mlp(torch.cat([state[..., k:], item_rows[..., k:]], -1))  # Eq. 10
        return torch.cat([gmf, mlp], -1)

    def score_items(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        # GMF's matrix product does not hold for the MLP tower: every (user, item) pair.
        return EmbeddingBase.score_items(self, state, items)


@register("NeuMF")
class NeuMF(SingleDomain):
    """NeuMF on each domain separately (squared error on ratings; NCF's log loss on implicit
    feedback); DML's "NCF" baseline (a run config names it so with ``NCF: {model: NeuMF}``)."""

    base_name = "NeuMF"
