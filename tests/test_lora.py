"""The shared LoRA adapter: starts as the identity, trains only A and B, keeps W_0."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cdrec.nn.lora import LoRAEmbedding, LoRALinear, adapt_linears


def _table() -> torch.Tensor:
    return torch.randn(7, 5, generator=torch.Generator().manual_seed(0))


def test_an_untrained_adapter_is_the_identity() -> None:
    table = _table()
    lora = LoRAEmbedding(table, rank=2, generator=torch.Generator().manual_seed(1))
    index = torch.tensor([0, 3, 6, 3])
    assert torch.equal(lora(index), table[index])
    assert torch.equal(lora.merged(), table)
    linear = nn.Linear(5, 4)
    adapted = LoRALinear(linear, rank=2)
    x = torch.randn(3, 5)
    assert torch.allclose(adapted(x), linear(x), atol=0, rtol=0)


def test_training_moves_the_rows_and_never_w0() -> None:
    table = _table()
    lora = LoRAEmbedding(table, rank=2, generator=torch.Generator().manual_seed(1))
    assert {name for name, _ in lora.named_parameters()} == {"lora_a", "lora_b"}
    target = torch.randn(7, 5, generator=torch.Generator().manual_seed(2))
    opt = torch.optim.Adam(lora.parameters(), lr=0.05)
    index = torch.arange(7)
    first = None
    for _ in range(50):
        loss = (lora(index) - target).pow(2).mean()
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(lora.weight_0, table)  # W_0 untouched, bit for bit
    assert float((lora(index) - target).pow(2).mean().detach()) < 0.9 * first
    update = lora.merged() - table
    assert update.abs().max() > 1e-3
    assert int(torch.linalg.matrix_rank(update, atol=1e-5)) <= 2  # a rank-r update


def test_a_lookup_sends_gradient_to_the_rows_it_reads_only() -> None:
    lora = LoRAEmbedding(_table(), rank=3, generator=torch.Generator().manual_seed(1))
    lora(torch.tensor([1, 4])).sum().backward()
    assert lora.lora_b.grad is not None
    touched = lora.lora_b.grad.abs().sum(1) > 0
    assert touched.tolist() == [False, True, False, False, True, False, False]


def test_lora_linear_keeps_the_frozen_layer_and_learns() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(6, 4)
    w0, b0 = linear.weight.detach().clone(), linear.bias.detach().clone()
    adapted = LoRALinear(linear, rank=2, generator=torch.Generator().manual_seed(3))
    x, y = torch.randn(32, 6), torch.randn(32, 4)
    opt = torch.optim.Adam(adapted.parameters(), lr=0.05)
    for _ in range(30):
        loss = (adapted(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(adapted.weight_0, w0) and torch.equal(adapted.bias_0, b0)
    expected = x @ (w0 + adapted.delta()).T + b0  # the merged weight gives the same outputs
    assert torch.allclose(adapted(x), expected, atol=1e-5)
    assert adapted.delta().abs().max() > 1e-3


def test_adapt_linears_replaces_every_wide_enough_layer() -> None:
    net = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Sequential(nn.Linear(6, 1)))
    adapt_linears(net, rank=2)
    assert isinstance(net[0], LoRALinear)
    inner = net[2][0]
    assert isinstance(inner, nn.Linear) and not inner.weight.requires_grad  # 1 < rank: frozen
    trainable = {name for name, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"0.lora_a", "0.lora_b"}


def test_bad_ranks_are_refused() -> None:
    with pytest.raises(ValueError, match="rank must be >= 1"):
        LoRAEmbedding(_table(), rank=0)
    with pytest.raises(ValueError, match="exceeds"):
        LoRAEmbedding(_table(), rank=6)
    with pytest.raises(ValueError, match="2-d table"):
        LoRAEmbedding(torch.zeros(3), rank=1)


def test_a_shared_table_is_neither_copied_nor_saved_by_the_adapter() -> None:
    table = torch.randn(6, 4)
    shared = LoRAEmbedding(table, 2, share=True)
    assert shared.weight_0.data_ptr() == table.data_ptr()
    assert "weight_0" not in shared.state_dict()
    with torch.no_grad():
        table[1] += 1.0  # the owner loads new values in place: the adapter reads them
    assert torch.equal(shared(torch.tensor([1])), table[1:2])
    copied = LoRAEmbedding(table, 2)
    assert copied.weight_0.data_ptr() != table.data_ptr() and "weight_0" in copied.state_dict()


def test_a_shared_adapter_loads_a_state_that_still_holds_a_copy_of_w0() -> None:
    # UCLR files saved before its heads shared the PGE table carry each head's W_0 copy.
    table = torch.randn(6, 4)
    old = LoRAEmbedding(table, 2).state_dict()
    shared = LoRAEmbedding(table, 2, share=True)
    shared.load_state_dict(old)  # strict: the copy is neither unexpected nor loaded over W_0
    assert torch.equal(shared.lora_a, old["lora_a"])
    assert shared.weight_0.data_ptr() == table.data_ptr()
