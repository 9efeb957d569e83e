"""DisenCDR: disentangled domain-shared and domain-specific user representations (Cao, Lin, Cong,
Ya, Liu, Wang, "DisenCDR: Learning Disentangled Representations for Cross-Domain
Recommendation", SIGIR 2022), a joint model of two domains X and Y that share their users; both
domains are trained together and both are evaluated (the multi-target leave-one-out protocol).

The paper's PDF was not available here; the model below is the authors' code
(``cjx96/DisenCDR``, commit 4e6d60bad4d5185c99ab60423b48f87f88aa03a3, read in full) checked
against secondary summaries of the paper, and the equations are written out instead of cited by
number (``docs/dev/disencdr_notes.md`` says what comes from where and lists the code's bugs).

The model, per domain D in {X, Y}, on D's user-item graph with the row-normalised blocks
``Norm(A^D)`` (users x items, each user's row the mean over their items) and ``Norm(A^D^T)``:

- **VBGE**, the variational bipartite graph encoder. A layer takes a node type's features H
  (users, say) to the other side and back, and joins the result with H::

      M   = LeakyReLU(Norm(A^T) H W1 + b1)                         (users -> items)
      H'  = LeakyReLU(Norm(A) M W2 + b2)                           (items -> users)
      out = ReLU([H' ; H] W3 + b3)                                 (inner layers)
      mu  = [H'_mu ; H] W_mu + b_mu,  sigma = 0.1 + 0.9 softplus([H'_s ; H] W_s + b_s)   (last)

  where the last layer has two second hops (H'_mu, H'_s), one per output. Items are encoded the
  same way (items -> users -> items); users' and items' paths have their own weights, and the
  input to each layer is dropped out at rate ``dropout``. Z = mu + sigma * eps, eps ~ N(0, I),
  while training; Z = mu when scoring.
- **Domain-specific** representations: a VBGE per domain over its own embeddings U^D, V^D gives
  q(Z_u^D | A^D) and q(Z_v^D | A^D), for users and items.
- **Domain-shared** representation: the cross VBGE runs a user path over each domain's graph
  from its own table of shared user embeddings, and mixes the two after every layer with
  lambda_u = N_u^X / (N_u^X + N_u^Y), the user's share of their items in X::

      H_{l+1} = lambda_u ReLU(out_l^X) + (1 - lambda_u) ReLU(out_l^Y)     (inner layers)
      mu^S = lambda_u mu^X + (1 - lambda_u) mu^Y,  sigma^S = lambda_u sigma^X + (1 - lambda_u) sigma^Y

  giving q(Z_u^S | A^X, A^Y). A third encoder per domain, a user-only VBGE over that domain's
  graph from its specific user table U^D, gives q(Z_u^S | A^D): the single-domain estimate of
  the shared part that the disentangling terms compare against.
- **Decoder / scoring**: p(A^D_uv = 1) = sigmoid((Z_u^S + Z_u^D) . Z_v^D); a user's domain-D
  vector is the sum of the shared and the domain's specific part, scored against D's items by
  inner product (means when scoring).
- **Objective** (minimised, per batch)::

      L = sum_D [ BCE(positives of D) + BCE(negatives of D) ]                  (reconstruction)
          + sum_D [ KL(q(Z_u^D) || N(0, I)) + KL(q(Z_v^D) || N(0, I)) ]        (specific)
          + (1 - beta) KL(q(Z_u^S | A^X, A^Y) || N(0, I))                       (shared prior)
          + beta sum_D KL(q(Z_u^S | A^X, A^Y) || q(Z_u^S | A^D))                (disentangling)

  the objective of the authors' code (``CrossTrainer.reconstruct_graph``). The paper reaches it
  through variational bounds of its two mutual-information regularisers: the exclusive one,
  minimising I(Z_u^X; Z_u^S) + I(Z_u^Y; Z_u^S) so that the specific parts hold what the shared
  one does not, and one that keeps in Z_u^S the information the two domains share, beta
  trading them off (the derivation and its equation numbers are the paper's; not re-checked
  here). Each KL is summed over the latent dimensions and averaged over all users (items) of
  the graph; each BCE is a mean over the batch rows. ``kl_weight`` (cdrec's, default 1, the
  objective as written) multiplies every KL term.
- **Training**: the whole graph is encoded at every batch (gradients reach every embedding and
  weight through the sparse products); a batch row is one training interaction of either
  domain, with its user's positive in the other domain drawn uniformly from that user's
  training items there, fresh every epoch, and ``n_neg`` sampled negatives per domain. The first
  ``warmup_epochs`` epochs train the specific encoders only (users score with Z_u^D alone and
  the loss has only the reconstruction and specific KL terms); then the whole model trains.

Defaults are the authors' script (``train_rec.py``): 128-dimensional features and hidden layers
(``hidden`` follows ``dim`` unless set), 2 VBGE layers, dropout 0.3, LeakyReLU slope 0.1, beta
0.9, one negative per positive, Adam at 1e-3, batches of 1024, 50 epochs of which the first 9
are the warm-up (``epoch < 10``): ``warmup_epochs`` 9 plus at most ``epochs`` 41. Embeddings
start N(0, 1) (PyTorch's default, which the code keeps), graph convolutions uniform in
+-1/sqrt(fan_out) (the code's ``GraphConvolution``), linear layers in PyTorch's default range,
all drawn from the fit's generator.

Where the authors' code differs from the model above (bugs, kept out here; details and the
lines in the notes):

- ``sigma = exp(0.1 + 0.9 softplus(s))`` enters the KL terms, but the sample is
  ``mu + eps * exp(sigma)``: a second exponential, so the sampling noise has std >= e^1.105 ~ 3
  and is not the distribution the KL terms measure. The "N(0, I)" prior is built by passing
  zeros and ones through the same transform as a posterior, so it is N(0, 3.6^2). cdrec uses
  one sigma = 0.1 + 0.9 softplus(s) (the form the code leaves commented out, without its inner
  exp) for both the sample and the KL, and the standard normal prior.
- lambda is one number for every user: ``DataLoader.rate`` overwrites its result in a loop over
  users, so the ratio of the *last* user is used for all. cdrec computes lambda_u per user (as
  the paper defines it; a user with no training item in either domain gets 1/2), and mixes the
  branches' standard deviations as the paper writes sigma^S (the code mixes the raw outputs
  before the transform).
- The script parses ``weight_decay`` 5e-4 but never passes it to the optimiser: training runs
  without it, and so does cdrec by default (``weight_decay`` 0).

Test-set selection in the authors' code: the "dev" set it evaluates every 10 epochs *is the test
file*; the best test NDCG@10 over those evaluations is what it reports, and a learning-rate decay
is keyed to the test score (x0.9 when it fails to improve, once more than 10 evaluations are
logged, which the default 50 epochs never reach). cdrec early-stops on the scenario's
validation positives (one more held-out item per user and domain, with its own sampled
negatives), restores the best validation epoch, and has no learning-rate schedule. The code
also ranks against 999 sampled negatives; the UCLR protocol here uses 99.

cdrec's other choices: the KL means run over every user and item of the train view (the code's
graphs hold only users with data; in a leave-one-out pair every user has some); a row whose user
has no training item in the other domain leaves that domain's reconstruction terms out (the
authors' pairs have no such user); dropout is applied before every VBGE layer of every encoder
(the code skips it before the last layer of the user-only and cross encoders); each graph hop
multiplies in the cheaper order (aggregate then transform when the receiving side is the
smaller, the same product); the warm-up stage has its own Adam state and is not validated (the
code does not evaluate before epoch 10 either); ``patience`` 10 is cdrec's.

How it behaves (``docs/dev/disencdr_notes.md``): on the 240-user clustered data of the tests the
weight-1 KL terms keep every latent at its prior for the whole budget (ranking at the floor), so
the tests fit with ``kl_weight`` 1e-3; on the Amazon Phone-Electronic sample weight 1 does learn
(validation NDCG@10 rising each epoch) and 0.01 learned less in the same first epochs. The whole
graph is encoded at every step, so an epoch costs about 156 full passes over both graphs at the
default sizes (about 6 minutes per epoch on one CPU core for the sample).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple, Self, cast

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from cdrec.data.dataset import Interactions
from cdrec.data.sampling import observed_keys, sample_negatives
from cdrec.models.bases.batching import epoch_batches
from cdrec.models.bases.lightgcn import bipartite_blocks, normalized_adjacency
from cdrec.models.joint.conet import PartnerSampler
from cdrec.models.recommender import Recommender, validator
from cdrec.models.registry import register
from cdrec.models.training import TrainingConfig, fit_stage
from cdrec.split import Evaluator, TrainView
from cdrec.train import FitContext, StageResult

STD_FLOOR = 0.1  # sigma = STD_FLOOR + (1 - STD_FLOOR) softplus(s)


class DisenCDRConfig(TrainingConfig):
    """Defaults from the authors' script (module docstring); ``patience`` is cdrec's, and
    ``weight_decay`` stays 0 as the script in effect runs."""

    training_defaults: ClassVar[dict[str, Any]] = {"epochs": 41, "batch_size": 1024, "lr": 1e-3,
                                                   "patience": 10}

    dim: int = Field(128, ge=1, description=(
        "feature_dim: size of the embeddings and of every latent representation Z"))
    hidden: int | None = Field(None, ge=1, description=(
        "hidden_dim: size after the first graph convolution of each VBGE layer (None: dim; "
        "the code's defaults are 128 and 128)"))
    n_layers: int = Field(2, ge=1, description="VBGE layers of every encoder (the code's GNN)")
    dropout: float = Field(0.3, ge=0, lt=1, description="dropout on the input of each layer")
    leaky: float = Field(0.1, ge=0, description="slope of the LeakyReLU after each convolution")
    beta: float = Field(0.9, ge=0, le=1, description=(
        "weight of the disentangling KL terms KL(q(Z^S|X,Y) || q(Z^S|D)); the shared prior "
        "KL gets 1 - beta"))
    kl_weight: float = Field(1.0, ge=0, description=(
        "cdrec's multiplier of every KL term (1: the objective as the paper and the authors' "
        "code weigh it, each KL a mean over nodes added to batch-mean BCE terms)"))
    warmup_epochs: int = Field(9, ge=0, description=(
        "epochs training the domain-specific encoders alone before the whole model"))
    n_neg: int = Field(1, ge=1, description="sampled negatives per positive, in each domain")
    init_std: float = Field(1.0, gt=0, description="std of the embeddings' normal init")


# -- building blocks ----------------------------------------------------------------------------


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator | None
             ) -> torch.Tensor:
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


def _linear(n_in: int, n_out: int, generator: torch.Generator | None) -> nn.Linear:
    """A linear layer in PyTorch's default range (+-1/sqrt(fan_in)), drawn from ``generator``."""
    layer = nn.Linear(n_in, n_out)
    with torch.no_grad():
        for p in (layer.weight, layer.bias):
            p.copy_(_uniform(tuple(p.shape), n_in ** -0.5, generator))
    return layer


class Gaussian(NamedTuple):
    """A diagonal Gaussian per row: ``mean`` and ``std``, both ``[rows, dim]``."""

    mean: torch.Tensor
    std: torch.Tensor

    def sample(self) -> torch.Tensor:
        """mean + std * eps (the reparameterisation), eps from torch's global generator (which
        the training loop checkpoints)."""
        return self.mean + self.std * torch.randn_like(self.mean)


def positive_std(raw: torch.Tensor) -> torch.Tensor:
    """sigma = 0.1 + 0.9 softplus(s): positive, at least 0.1."""
    return STD_FLOOR + (1 - STD_FLOOR) * F.softplus(raw)


def gaussian_kl(q: Gaussian, p: Gaussian | None = None) -> torch.Tensor:
    """KL(q || p) of diagonal Gaussians, summed over dimensions and averaged over rows;
    ``p=None`` is the standard normal N(0, I)::

        KL = log(s_p / s_q) + (s_q^2 + (m_q - m_p)^2) / (2 s_p^2) - 1/2   (per dimension)
    """
    if p is None:
        terms = -torch.log(q.std) + 0.5 * (q.std ** 2 + q.mean ** 2) - 0.5
    else:
        terms = (torch.log(p.std / q.std)
                 + (q.std ** 2 + (q.mean - p.mean) ** 2) / (2 * p.std ** 2) - 0.5)
    return terms.sum(-1).mean()


class GraphConv(nn.Module):
    """One graph convolution of the VBGE: LeakyReLU(Norm(A) H W + b), ``Norm(A)`` a sparse
    ``[receivers, senders]`` block of the row-normalised adjacency."""

    def __init__(self, n_in: int, n_out: int, slope: float,
                 generator: torch.Generator | None) -> None:
        super().__init__()
        bound = n_out ** -0.5  # the authors' GraphConvolution range
        self.weight = nn.Parameter(_uniform((n_in, n_out), bound, generator))
        self.bias = nn.Parameter(_uniform((n_out,), bound, generator))
        self.slope = slope

    def forward(self, adjacency: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        receivers, senders = adjacency.shape
        d_in, d_out = self.weight.shape
        nnz = adjacency.values().numel()
        # The same product in whichever order is cheaper: (A H) W when few nodes receive.
        if nnz * d_in + receivers * d_in * d_out < senders * d_in * d_out + nnz * d_out:
            z = torch.sparse.mm(adjacency, h) @ self.weight
        else:
            z = torch.sparse.mm(adjacency, h @ self.weight)
        return F.leaky_relu(z + self.bias, self.slope)


class Path(nn.Module):
    """One VBGE layer for one node type: its features H go to the other side and back, and the
    result is joined with H, ``[H' ; H] W + b``; one output (inner layers) or two (the last
    layer: mean and raw std, each with its own second hop)."""

    def __init__(self, dim: int, hidden: int, outputs: int, slope: float,
                 generator: torch.Generator | None) -> None:
        super().__init__()
        self.out = GraphConv(dim, hidden, slope, generator)
        self.back = nn.ModuleList(GraphConv(hidden, dim, slope, generator)
                                  for _ in range(outputs))
        self.join = nn.ModuleList(_linear(2 * dim, dim, generator) for _ in range(outputs))

    def forward(self, h: torch.Tensor, there: torch.Tensor, back: torch.Tensor
                ) -> list[torch.Tensor]:
        """``there``: the block from h's nodes to the other side ``[others, nodes]``; ``back``:
        the block back ``[nodes, others]``."""
        middle = self.out(there, h)
        return [cast(nn.Linear, join)(torch.cat([hop(back, middle), h], dim=-1))
                for hop, join in zip(self.back, self.join, strict=True)]


class NodeEncoder(nn.Module):
    """A VBGE for one node type of one graph: inner layers with ReLU, a last layer giving the
    Gaussian q(Z | A) of every node."""

    def __init__(self, dim: int, hidden: int, n_layers: int, slope: float,
                 generator: torch.Generator | None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            Path(dim, hidden, 2 if k == n_layers - 1 else 1, slope, generator)
            for k in range(n_layers))

    def layer(self, k: int) -> Path:
        return cast(Path, self.layers[k])

    def forward(self, h: torch.Tensor, there: torch.Tensor, back: torch.Tensor,
                dropout: float) -> Gaussian:
        last = len(self.layers) - 1
        for k in range(last):
            h = torch.relu(self.layer(k)(F.dropout(h, dropout, self.training), there, back)[0])
        mean, raw = self.layer(last)(F.dropout(h, dropout, self.training), there, back)
        return Gaussian(mean, positive_std(raw))


class CrossEncoder(nn.Module):
    """The cross VBGE: a user path per domain graph, mixed after every layer by each user's
    lambda_u, giving q(Z_u^S | A^X, A^Y) (module docstring)."""

    def __init__(self, dim: int, hidden: int, n_layers: int, slope: float,
                 generator: torch.Generator | None) -> None:
        super().__init__()
        self.branches = nn.ModuleList(NodeEncoder(dim, hidden, n_layers, slope, generator)
                                      for _ in range(2))

    def branch(self, d: int) -> NodeEncoder:
        return cast(NodeEncoder, self.branches[d])

    def forward(self, inputs: Sequence[torch.Tensor],
                graphs: Sequence[tuple[torch.Tensor, torch.Tensor]], share: torch.Tensor,
                dropout: float) -> Gaussian:
        """``inputs``: each domain's shared user table ``[n_users, dim]``; ``graphs``: each
        domain's (users -> items, items -> users) blocks; ``share``: lambda_u ``[n_users, 1]``."""
        hs = list(inputs)
        last = len(self.branch(0).layers) - 1
        for k in range(last):
            outs = [torch.relu(self.branch(d).layer(k)(
                F.dropout(hs[d], dropout, self.training), *graphs[d])[0]) for d in range(2)]
            mixed = share * outs[0] + (1 - share) * outs[1]
            hs = [mixed, mixed]
        (mean_x, raw_x), (mean_y, raw_y) = (
            self.branch(d).layer(last)(F.dropout(hs[d], dropout, self.training), *graphs[d])
            for d in range(2))
        return Gaussian(share * mean_x + (1 - share) * mean_y,
                        share * positive_std(raw_x) + (1 - share) * positive_std(raw_y))


class Latents(NamedTuple):
    """Every posterior of one full-graph pass. ``shared`` and ``single`` are absent in warm-up."""

    users: list[Gaussian]  # q(Z_u^D | A^D), per domain
    items: list[Gaussian]  # q(Z_v^D | A^D), per domain
    shared: Gaussian | None  # q(Z_u^S | A^X, A^Y)
    single: list[Gaussian]  # q(Z_u^S | A^D), per domain


def regularizer(latents: Latents, beta: float) -> torch.Tensor:
    """The KL terms of the objective: the specific users' and items' KL to N(0, I) in each
    domain, plus (after warm-up) (1 - beta) KL(q(Z^S|X,Y) || N(0, I)) and
    beta sum_D KL(q(Z^S|X,Y) || q(Z^S|D))."""
    total = sum((gaussian_kl(u) + gaussian_kl(v)
                 for u, v in zip(latents.users, latents.items, strict=True)),
                torch.zeros((), device=latents.users[0].mean.device))
    if latents.shared is not None:
        total = total + (1 - beta) * gaussian_kl(latents.shared)
        for single in latents.single:
            total = total + beta * gaussian_kl(latents.shared, single)
    return total


def reconstruction_loss(user_vectors: torch.Tensor, item_vectors: torch.Tensor,
                        pos: torch.Tensor, neg: torch.Tensor, weight: torch.Tensor
                        ) -> torch.Tensor:
    """BCE(sigmoid(r_u . z_pos), 1) + BCE(sigmoid(r_u . z_neg), 0) for one domain: ``user_vectors``
    ``[B, dim]`` (the batch's users), ``pos`` ``[B]``, ``neg`` ``[B, n_neg]`` item indices;
    weighted means over rows (``weight`` 0: the row has no positive in this domain), the
    negatives of a row averaged first."""
    pos_score = (user_vectors * item_vectors[pos]).sum(-1)
    neg_score = (user_vectors.unsqueeze(1) * item_vectors[neg]).sum(-1)
    pos_loss = F.binary_cross_entropy_with_logits(pos_score, torch.ones_like(pos_score),
                                                  reduction="none")
    neg_loss = F.binary_cross_entropy_with_logits(neg_score, torch.zeros_like(neg_score),
                                                  reduction="none").mean(-1)
    norm = weight.sum().clamp_min(1.0)
    return ((weight * pos_loss).sum() + (weight * neg_loss).sum()) / norm


# -- the recommender ----------------------------------------------------------------------------


@register("DisenCDR")
class DisenCDR(Recommender):
    """DisenCDR on two domains sharing users (module docstring)."""

    Config = DisenCDRConfig
    config: DisenCDRConfig
    supports = frozenset({"leave_one_out"})
    implicit_only = True
    transient_attributes = frozenset({"stages_"})  # the fit's record, not used to predict
    domains_: list[str]
    n_users_: int
    user_tables: nn.ModuleList  # U^D: each domain's specific user embeddings
    item_tables: nn.ModuleList  # V^D
    shared_tables: nn.ModuleList  # each domain's input to the cross VBGE
    user_encoders: nn.ModuleList  # q(Z_u^D | A^D)
    item_encoders: nn.ModuleList  # q(Z_v^D | A^D)
    single_encoders: nn.ModuleList  # q(Z_u^S | A^D)
    cross: CrossEncoder  # q(Z_u^S | A^X, A^Y)
    share: torch.Tensor  # buffer [n_users, 1]: lambda_u, the user's share of items in X
    stages_: list[StageResult]

    def __init__(self, **params: object) -> None:
        super().__init__(**params)
        self._warm = False  # in the warm-up stage: specific encoders only
        self._cache: tuple[tuple, list[tuple[torch.Tensor, torch.Tensor]]] | None = None

    # -- fitting --------------------------------------------------------------------------------

    def _fit(self, train: TrainView, validation: Evaluator | None, context: FitContext) -> None:
        cfg = self.config
        names = self._domains(train)
        inters = [train.data[n].interactions for n in names]
        n_items = [train.data[n].n_items for n in names]
        n_users = train.data.n_users
        self._build({"domains": names, "n_users": n_users, "n_items": n_items},
                    generator=context.generator)
        self.set_graphs(inters)
        self.to(context.device)
        epoch_data = self._epoch_data(inters, n_items, n_users)

        def loss(batch: Sequence[torch.Tensor]) -> torch.Tensor:
            users, pos_x, neg_x, pos_y, neg_y, w_x, w_y = batch
            latents = self.latents()
            shared = None if latents.shared is None else latents.shared.sample()
            total = cfg.kl_weight * regularizer(latents, cfg.beta)
            for d, (pos, neg, weight) in enumerate(((pos_x, neg_x, w_x), (pos_y, neg_y, w_y))):
                specific = latents.users[d].sample()
                vectors = specific if shared is None else shared + specific
                total = total + reconstruction_loss(vectors[users], latents.items[d].sample(),
                                                    pos, neg, weight)
            return total

        self.stages_ = []
        if cfg.warmup_epochs:
            self._warm = True
            try:
                self.stages_.append(fit_stage(
                    self, loss, epoch_data, cfg.model_copy(update={"epochs": cfg.warmup_epochs}),
                    context=context, stage="disencdr_warmup"))
            finally:
                self._warm = False
        self.stages_.append(fit_stage(self, loss, epoch_data, cfg, context=context,
                                      stage="disencdr", validate=validator(self, validation)))

    def _domains(self, train: TrainView) -> list[str]:
        if len(train.domains) != 2:
            raise ValueError(
                f"DisenCDR joins exactly two domains that share their users; the train view has "
                f"{len(train.domains)}: {train.domains}. Load two of them (the data section's "
                "domains: [x, y])")
        return list(train.domains)

    def set_graphs(self, inters: Sequence[Interactions]) -> None:
        """Each domain's row-normalised user-item blocks and every user's lambda_u, from the
        training interactions (non-persistent buffers: derived from the data)."""
        counts = []
        for d, x in enumerate(inters):
            n_items = self.item_table(d).num_embeddings
            adjacency = normalized_adjacency(x.user, x.item, self.n_users_, n_items,
                                             normalization="row")
            users_by_items, items_by_users = bipartite_blocks(adjacency, self.n_users_)
            setattr(self, f"user_rows_{d}", users_by_items)
            setattr(self, f"item_rows_{d}", items_by_users)
            keys = observed_keys(x.user, x.item, n_items)
            counts.append(torch.bincount(keys // n_items, minlength=self.n_users_).float())
        total = counts[0] + counts[1]
        share = torch.where(total > 0, counts[0] / total.clamp_min(1), torch.full_like(total, 0.5))
        self.share = share.unsqueeze(1)
        self._cache = None

    def _epoch_data(self, inters: list[Interactions], n_items: list[int], n_users: int
                    ) -> Callable[[torch.Generator], list[torch.Tensor]]:
        """Every training interaction of either domain is one row: its user, a positive and
        ``n_neg`` negatives in each domain (the other domain's positive drawn from the user's
        items there), and per domain a weight (0: the user has no item there)."""
        n_neg = self.config.n_neg
        observed = [observed_keys(x.user, x.item, n) for x, n in zip(inters, n_items, strict=True)]
        samplers = [PartnerSampler(x.user, n_users) for x in inters]
        draws = [epoch_batches(x, n, True, n_neg, keys)
                 for x, n, keys in zip(inters, n_items, observed, strict=True)]

        def epoch(gen: torch.Generator) -> list[torch.Tensor]:
            parts = []
            for d in range(2):
                e = 1 - d
                users, pos, neg = draws[d](gen)
                rows, has = samplers[e].draw(users, gen)
                other_pos = torch.where(has, inters[e].item[rows], 0)
                other_neg = sample_negatives(users.repeat_interleave(n_neg), n_items[e],
                                             observed[e], gen).view(-1, n_neg)
                cols = {d: (pos, neg, torch.ones(users.shape[0])),
                        e: (other_pos, other_neg, has.float())}
                parts.append([users, cols[0][0], cols[0][1], cols[1][0], cols[1][1],
                              cols[0][2], cols[1][2]])
            return [torch.cat(column) for column in zip(*parts, strict=True)]

        return epoch

    # -- the model ------------------------------------------------------------------------------

    def graph(self, d: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Domain ``d``'s blocks: (users x items, items x users), row-normalised."""
        return getattr(self, f"user_rows_{d}"), getattr(self, f"item_rows_{d}")

    def latents(self) -> Latents:
        """Every posterior, over the whole graphs (one pass; gradients where enabled)."""
        cfg = self.config
        users, items, single = [], [], []
        for d in range(2):
            user_rows, item_rows = self.graph(d)
            users.append(cast(NodeEncoder, self.user_encoders[d])(
                self.user_table(d).weight, item_rows, user_rows, cfg.dropout))
            items.append(cast(NodeEncoder, self.item_encoders[d])(
                self.item_table(d).weight, user_rows, item_rows, cfg.dropout))
        if self._warm:
            return Latents(users, items, None, [])
        for d in range(2):
            user_rows, item_rows = self.graph(d)
            single.append(cast(NodeEncoder, self.single_encoders[d])(
                self.user_table(d).weight, item_rows, user_rows, cfg.dropout))
        shared = self.cross([cast(nn.Embedding, t).weight for t in self.shared_tables],
                            [(self.graph(d)[1], self.graph(d)[0]) for d in range(2)],
                            self.share, cfg.dropout)
        return Latents(users, items, shared, single)

    def scoring_vectors(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per domain, (user vectors mu^S + mu_u^D, item vectors mu_v^D) of every node, as
        scoring reads them (means, no dropout); cached until a parameter, a graph, the device or
        the inference mode changes."""
        key = (tuple((p.data_ptr(), p._version) for p in self.parameters()),
               tuple(id(b) for b in self.buffers()), torch.is_inference_mode_enabled())
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        was_training = self.training
        self.train(False)
        try:
            with torch.no_grad():
                lat = self.latents()
        finally:
            self.train(was_training)
        vectors = []
        for d in range(2):
            user = lat.users[d].mean
            if lat.shared is not None:
                user = lat.shared.mean + user
            vectors.append((user, lat.items[d].mean))
        self._cache = (key, vectors)
        return vectors

    def train(self, mode: bool = True) -> Self:
        self._cache = None
        return super().train(mode)

    def user_table(self, d: int) -> nn.Embedding:
        return cast(nn.Embedding, self.user_tables[d])

    def item_table(self, d: int) -> nn.Embedding:
        return cast(nn.Embedding, self.item_tables[d])

    def _domain(self, domain: str) -> int:
        self.check_fitted()
        if domain not in self.domains_:
            raise KeyError(f"DisenCDR was fitted on {self.domains_}, not {domain!r}")
        return self.domains_.index(domain)

    @torch.no_grad()
    def predict(self, domain: str, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        d = self._domain(domain)  # checks the fit first
        user_vectors, item_vectors = self.scoring_vectors()[d]
        return (user_vectors[users] * item_vectors[items]).sum(-1)

    @torch.no_grad()
    def score_users(self, domain: str, users: torch.Tensor, n_items: int) -> torch.Tensor:
        d = self._domain(domain)
        user_vectors, item_vectors = self.scoring_vectors()[d]
        return user_vectors[users] @ item_vectors[:n_items].T

    # -- saving and loading ---------------------------------------------------------------------

    def architecture(self) -> dict[str, Any]:
        return {"domains": list(self.domains_), "n_users": int(self.n_users_),
                "n_items": [self.item_table(d).num_embeddings for d in range(2)]}

    def _build(self, architecture: Mapping[str, Any],
               generator: torch.Generator | None = None) -> None:
        cfg = self.config
        self.domains_ = list(architecture["domains"])
        self.n_users_ = n_users = int(architecture["n_users"])
        n_items = [int(n) for n in architecture["n_items"]]

        def table(n: int) -> nn.Embedding:
            emb = nn.Embedding(n, cfg.dim)
            with torch.no_grad():
                emb.weight.copy_(torch.randn((n, cfg.dim), generator=generator) * cfg.init_std)
            return emb

        hidden = cfg.hidden or cfg.dim

        def encoders() -> nn.ModuleList:
            return nn.ModuleList(NodeEncoder(cfg.dim, hidden, cfg.n_layers, cfg.leaky,
                                             generator) for _ in range(2))

        self.user_tables = nn.ModuleList(table(n_users) for _ in range(2))
        self.item_tables = nn.ModuleList(table(n) for n in n_items)
        self.shared_tables = nn.ModuleList(table(n_users) for _ in range(2))
        self.user_encoders = encoders()
        self.item_encoders = encoders()
        self.single_encoders = encoders()
        self.cross = CrossEncoder(cfg.dim, hidden, cfg.n_layers, cfg.leaky, generator)
        for d in range(2):
            self.register_buffer(f"user_rows_{d}", None, persistent=False)
            self.register_buffer(f"item_rows_{d}", None, persistent=False)
        self.register_buffer("share", None, persistent=False)
        self._cache = None
