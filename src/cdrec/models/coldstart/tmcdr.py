"""TMCDR: transfer-meta framework for cold-start users (Zhu et al., SIGIR 2021).

Transfer stage (Sec. 2.1): a source and a target base model (MF, BPR, ListRank-MF, CML, ...)
pretrained on all training data of their domain; both then stay fixed.

Meta stage (Sec. 2.2, Alg. 1): a task-oriented meta network f_theta (default one fully connected
layer, as in the paper's experiments) maps a user's source state into the target space. Tasks are
built from groups of overlap users: each sampled group U_i is split into disjoint U_a (learning
phase) and U_b (simulated cold-start phase), with D_a, D_b all their target interactions.
  Eq. 1:  L_theta    = sum_{x in D_a} L_task(x)       with f_theta(u^s) in place of u^t
  Eq. 2:  theta'     = theta - lambda * dL_theta/dtheta
  Eq. 3:  L_theta'   = sum_{x in D_b} L_task(x)
  Alg. 1, line 10: theta <- theta - alpha * sum_i dL_theta'_i/dtheta  (second order through Eq. 2)
L_task is the target base's own loss (``EmbeddingBase.loss_with``): squared error or BCE for MF,
BPR, the ListRank top-one cross-entropy, the CML hinge. cdrec averages the per-task losses over
a meta-batch instead of summing (Adam makes the two equivalent up to its step size) and uses the
per-task *mean* over D_a/D_b rather than the sum, so lambda does not depend on group sizes.

Batched: all tasks of a meta-batch run at once with ``torch.func`` (``vmap`` over tasks of
``grad`` of the functional meta network); each task's interactions are padded into fixed-size
tensors with a weight mask. There is no Python loop over tasks or users.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch.func import functional_call, grad, vmap

from cdrec.data.dataset import Interactions
from cdrec.data.sampling import observed_keys, sample_negatives
from cdrec.models.coldstart.transfer import TransferConfig, TransferMethod, mapping_network
from cdrec.models.recommender import validator
from cdrec.models.registry import register
from cdrec.models.training import TrainingConfig, fit_stage
from cdrec.split import Evaluator, TrainView
from cdrec.train import FitContext, trainable


class TMCDRConfig(TransferConfig, TrainingConfig):
    """``batch_size`` counts tasks per meta-update (each task a group of ``group_size`` users);
    ``lr`` is alpha, Adam's step size of the outer update; an epoch is a pass over the overlap
    users."""

    training_defaults: ClassVar[dict[str, Any]] = {"epochs": 200, "batch_size": 16, "lr": 0.005, "patience": 10}

    meta: Literal["linear", "mlp"] = Field("linear", description=(
        "f_theta: one fully connected layer (the paper) or an MLP with one tanh hidden layer"))
    hidden_factor: int = Field(2, ge=1)
    inner_lr: float = Field(0.005, gt=0, description="lambda of Eq. 2 (paper: 0.005)")
    first_order: bool = Field(False, description="drop the second-order term (FOMAML)")
    group_size: int = Field(32, ge=2, description="users per task group, halved into U_a/U_b")


class TaskTensors:
    """Target interactions of the overlap users, indexed per user (CSR) once, so each epoch's
    tasks are cut and padded with tensor ops only."""

    def __init__(self, rows: Interactions, users: torch.Tensor, n_items: int, implicit: bool,
                 n_neg: int) -> None:
        order = torch.argsort(rows.user, stable=True)
        self.rows = rows.select(order)
        self.users = users
        counts = torch.bincount(self.rows.user, minlength=int(users.max()) + 1)
        self.count = counts
        self.start = torch.cumsum(counts, 0) - counts
        self.n_items, self.implicit, self.n_neg = n_items, implicit, n_neg
        self.observed = observed_keys(rows.user, rows.item, n_items) if implicit else None

    def epoch(self, group_size: int, gen: torch.Generator) -> list[torch.Tensor]:
        """One epoch of tasks: users shuffled into groups, each halved into U_a and U_b; returns
        ``[users_a, slot_a, items_a, target_a, weight_a, users_b, ...]``, first dim = task."""
        users = self.users[torch.randperm(self.users.numel(), generator=gen)]
        n_tasks = users.numel() // group_size
        if n_tasks == 0:
            raise ValueError(f"{self.users.numel()} overlap users are fewer than one task group "
                             f"of {group_size}: lower group_size")
        groups = users[:n_tasks * group_size].view(n_tasks, group_size)
        half = group_size // 2
        target = None
        if self.observed is not None:  # implicit feedback (``observed`` is set exactly then)
            target = sample_negatives(self.rows.user.repeat_interleave(self.n_neg), self.n_items,
                                      self.observed, gen).view(-1, self.n_neg)
        return [*self._pad(groups[:, :half], target), *self._pad(groups[:, half:], target)]

    def _pad(self, users: torch.Tensor, negatives: torch.Tensor | None) -> list[torch.Tensor]:
        n_tasks, per_task = users.shape
        count = self.count[users]                                   # [T, U]
        per_task_rows = count.sum(1)
        width = int(per_task_rows.max())
        flat_count = count.reshape(-1)
        slot_of_row = torch.arange(n_tasks * per_task).repeat_interleave(flat_count)
        first_row = torch.cumsum(flat_count, 0) - flat_count
        offset_in_user = torch.arange(int(flat_count.sum())) - first_row[slot_of_row]
        source_row = self.start[users.reshape(-1)][slot_of_row] + offset_in_user
        task = slot_of_row // per_task
        task_start = torch.cumsum(per_task_rows, 0) - per_task_rows
        column = torch.arange(slot_of_row.numel()) - task_start[task]
        slot = torch.zeros(n_tasks, width, dtype=torch.long)
        items = torch.zeros(n_tasks, width, dtype=torch.long)
        weight = torch.zeros(n_tasks, width)
        slot[task, column] = slot_of_row % per_task
        items[task, column] = self.rows.item[source_row]
        weight[task, column] = 1.0
        if negatives is None:
            target = torch.zeros(n_tasks, width)
            target[task, column] = self.rows.rating[source_row]
        else:
            target = torch.zeros(n_tasks, width, negatives.shape[1], dtype=torch.long)
            target[task, column] = negatives[source_row]
        return [users, slot, items, target, weight]


@register("TMCDR")
class TMCDR(TransferMethod):
    """Pretrained bases + a meta network trained with MAML on the target task's own loss."""

    Config = TMCDRConfig
    config: TMCDRConfig

    def _fit_transfer(self, train: TrainView, overlap: torch.Tensor,
                      validation: Evaluator | None, context: FitContext) -> None:
        cfg = self.config
        self.transfer_ = self._new_transfer().to(context.device)
        _, target_name = train.transfer_domains()
        target = train.data[target_name]
        rows = target.interactions.select(torch.isin(target.interactions.user, overlap))
        tasks = TaskTensors(rows, overlap, target.n_items, train.implicit,
                            self.target_.config.n_neg)
        with torch.no_grad():
            source_states = self.source_.user_state(
                torch.arange(train.data.n_users, device=context.device))
        step = maml_objective(self.transfer_, self.target_.loss_with, source_states,
                              cfg.inner_lr, first_order=cfg.first_order)
        fit_stage(self, step, lambda gen: tasks.epoch(cfg.group_size, gen), cfg,
                  context=context, stage="meta", validate=validator(self, validation),
                  parameters=trainable(self.transfer_))


    def _new_transfer(self) -> torch.nn.Module:
        return mapping_network(self.config.meta, self.source_.user_dim, self.target_.user_dim,
                               self.config.hidden_factor)


def maml_objective(meta: torch.nn.Module, task_loss_fn, source_states: torch.Tensor,
                   inner_lr: float, *, first_order: bool = False):
    """The outer loss of a batch of tasks (Alg. 1 lines 5-10), as a ``loss_fn`` for the loop.

    ``task_loss_fn(states, items, target, weight)`` is the base's ``loss_with``. A batch is
    ``[users_a, slot_a, items_a, target_a, weight_a, users_b, slot_b, ...]`` with a leading task
    dimension; ``slot`` says which of the task's users a padded row belongs to.
    """

    def task_loss(params, users, slot, items, target, weight):
        mapped = functional_call(meta, params, (source_states[users],))  # f_theta(u^s), Eq. 1
        return task_loss_fn(mapped[slot], items, target, weight)

    def adapted_loss(params, *batch):
        a, b = batch[:5], batch[5:]
        g = grad(task_loss)(params, *a)                                   # dL_theta/dtheta
        if first_order:
            g = {k: v.detach() for k, v in g.items()}
        fast = {k: params[k] - inner_lr * g[k] for k in params}           # Eq. 2
        return task_loss(fast, *b)                                        # Eq. 3

    def loss_fn(batch: list[torch.Tensor]) -> torch.Tensor:
        params = dict(meta.named_parameters())
        losses = vmap(adapted_loss, in_dims=(None, *([0] * len(batch))))(params, *batch)
        return losses.mean()

    return loss_fn
