"""UCLR and its ablations: what each stage trains and keeps, and transfer on clustered data."""

from __future__ import annotations

import pytest
import torch
from conftest import two_domain_clusters

from cdrec.data.dataset import CrossDomainData
from cdrec.models import available_models, build_model
from cdrec.models.multitarget.uclr import UCLR, combined_loss
from cdrec.scenarios.leave_one_out import LeaveOneOut
from cdrec.train import FitContext

ABLATIONS = ["PGE", "PGE+AE", "PGE+CL-AE", "PGE+UCL-AE", "UCLR"]


@pytest.fixture(scope="module")
def split():
    return LeaveOneOut(n_neg=50, ks=(10,)).split(two_domain_clusters(), 0)


SMALL = {"pge": {"dim": 16, "epochs": 40, "lr": 0.01, "batch_size": 256},
         "autoencoder": {"hidden": [16, 8], "epochs": 10, "batch_size": 64, "lr": 0.003},
         "finetune": {"epochs": 10, "batch_size": 256, "lr": 0.003, "rank": 4}}


@pytest.fixture(scope="module")
def fitted(split):
    return {name: build_model(name, **SMALL).fit(split.train, split.validation,
                                                 FitContext(progress=False))
            for name in ABLATIONS}


def test_the_ablations_are_registered_for_leave_one_out() -> None:
    models = available_models()
    for name in ABLATIONS:
        assert issubclass(models[name], UCLR)
        assert models[name].supports == frozenset({"leave_one_out"})


def test_each_variant_has_exactly_its_stages(fitted) -> None:
    stages = {name: [s.stage for s in model.stages_] for name, model in fitted.items()}
    assert stages["PGE"] == ["pge"]
    assert stages["PGE+AE"] == stages["PGE+CL-AE"] == stages["PGE+UCL-AE"] == [
        "pge", "autoencoder"]
    assert stages["UCLR"] == ["pge", "autoencoder", "finetune_a", "finetune_b"]
    assert fitted["PGE"].autoencoder is None
    assert fitted["PGE+AE"].temperatures is None


def test_lora_keeps_the_pretrained_table_and_moves_each_domain(fitted) -> None:
    model = fitted["UCLR"]
    table = model.pge.user_factors.weight
    assert not table.requires_grad  # frozen after stage 1
    for name in ("a", "b"):
        head = model.heads[name]
        assert torch.equal(head.users.weight_0, table)  # W_0 is the PGE table, unchanged
        assert head.users.lora_b.abs().max() > 0  # B left zero: the finetune moved the users
        assert not torch.equal(head.users.merged(), table)
    assert not torch.equal(model.heads["a"].users.lora_b, model.heads["b"].users.lora_b)


def test_the_finetune_gradient_reaches_lora_items_and_autoencoder_only(fitted) -> None:
    model = fitted["UCLR"]
    head = model.heads["a"]
    model.zero_grad(set_to_none=True)  # leftovers of the fit's last step
    model.train()
    users = torch.tensor([0, 1, 2, 3])
    rows = head.users(users)
    score = (head.autoencoder(rows) * head.items(torch.tensor([0, 1, 2, 3]))).sum()
    loss = score + combined_loss(head.autoencoder, head.temperatures, rows,
                                 torch.tensor([True, False, False, True]), users, 1e-3)
    loss.backward()
    model.eval()
    assert head.users.lora_b.grad is not None and head.users.lora_b.grad.abs().sum() > 0
    assert head.items.weight.grad is not None
    assert all(p.grad is not None for p in head.autoencoder.parameters())
    assert model.pge.user_factors.weight.grad is None
    assert "weight_0" not in dict(head.named_parameters())


def test_temperatures_per_user_or_one_global(fitted) -> None:
    individual = fitted["PGE+UCL-AE"].user_temperatures()
    bounds = torch.tensor([1e-5, 1.0], dtype=individual.dtype)  # as float32 holds them
    assert bool((individual >= bounds[0]).all()) and bool((individual <= bounds[1]).all())
    assert float(individual.std()) > 0  # users got their own temperatures
    fixed = fitted["PGE+CL-AE"].temperatures.tau  # CL-AE: one global temperature, never moved
    assert torch.equal(fixed, torch.full_like(fixed, 0.1))
    for name in ("PGE+AE", "PGE+CL-AE"):
        with pytest.raises(ValueError, match="no per-user temperatures"):
            fitted[name].user_temperatures()
    with pytest.raises(KeyError, match="no finetuned domain 'a'"):
        fitted["PGE+UCL-AE"].user_temperatures("a")


def test_scores_are_the_reconstruction_stream_dotted_with_items(fitted) -> None:
    model = fitted["PGE+UCL-AE"]
    users = torch.tensor([3, 7])
    with torch.no_grad():
        expected = model.autoencoder(model.pge.user_factors.weight[users]) @ \
            model.pge.item_factors.weight[model.offsets_["b"]:].T
    assert torch.allclose(model.score_users("b", users, 100), expected, atol=1e-6)
    items = torch.tensor([5, 60])
    assert torch.allclose(model.predict("b", users, items), expected[[0, 1], items], atol=1e-6)


def test_cross_domain_pretraining_helps_the_sparse_domain(split, fitted) -> None:
    """On "b" a user has three items; the global embedding also sees their dozen in "a", which
    names their cluster: PGE and UCLR beat BPR trained on each domain alone, and Popularity."""
    context = FitContext(progress=False)
    bpr = build_model("BPR", dim=16, epochs=40, lr=0.01, batch_size=256, n_neg=1).fit(
        split.train, split.validation, context)
    popularity = build_model("Popularity").fit(split.train)
    metric = "b/NDCG@10"
    base = split.test.evaluate(bpr)[metric]
    floor = split.test.evaluate(popularity)[metric]
    for name in ("PGE", "UCLR"):
        value = split.test.evaluate(fitted[name])[metric]
        assert value > base + 0.05, (name, value, base)
        assert value > floor + 0.1, (name, value, floor)


def test_save_and_load_predict_the_same(fitted, tmp_path) -> None:
    from cdrec import load

    model = fitted["UCLR"]
    path = model.save(tmp_path / "uclr.pt")
    loaded = load(path)
    users = torch.arange(10)
    for name in ("a", "b"):
        assert torch.equal(loaded.score_users(name, users, 100), model.score_users(name, users, 100))
    for domain in (None, "a", "b"):
        assert torch.equal(loaded.user_temperatures(domain), model.user_temperatures(domain))
    ablation = fitted["PGE+UCL-AE"]
    loaded = load(ablation.save(tmp_path / "ucl_ae.pt"))
    assert torch.equal(loaded.score_users("a", users, 100), ablation.score_users("a", users, 100))
    assert torch.equal(loaded.user_temperatures(), ablation.user_temperatures())


def test_the_family_trains_one_pge_per_split_through_the_base_cache(split) -> None:
    from cdrec.models.bases.cache import BaseCache
    from cdrec.train import seed_everything

    def fit(name: str, cache: BaseCache | None, **params) -> tuple[UCLR, FitContext]:
        seed_everything(0)
        context = FitContext(seed=0, progress=False, base_cache=cache)
        model = build_model(name, **{**SMALL, **params})
        model.fit(split.train, split.validation, context)
        return model, context

    cache = BaseCache()
    fit("PGE", cache)
    reused, context = fit("PGE+UCL-AE", cache)
    assert (cache.hits, cache.misses) == (1, 1)
    trained, plain = fit("PGE+UCL-AE", None)
    # Exact: the same PGE, the same autoencoder after it, the same stage results.
    assert torch.equal(reused.pge.user_factors.weight, trained.pge.user_factors.weight)
    users, items = torch.arange(20), torch.arange(20) % 5
    assert torch.equal(reused.predict("a", users, items), trained.predict("a", users, items))
    assert [(s.stage, s.best_epoch) for s in context.stages] == [
        (s.stage, s.best_epoch) for s in plain.stages]
    # Other PGE settings, or another validation set, train their own PGE.
    fit("PGE", cache, pge={**SMALL["pge"], "reg": 0.1})
    assert cache.misses == 2
    other_validation = LeaveOneOut(n_neg=50, ks=(10,)).split(two_domain_clusters(), 0).validation
    seed_everything(0)
    build_model("PGE", **SMALL).fit(split.train, other_validation,
                                    FitContext(seed=0, progress=False, base_cache=cache))
    assert (cache.hits, cache.misses) == (1, 3)


def test_settings_are_checked_before_training(split) -> None:
    with pytest.raises(ValueError, match="exceeds pge.dim"):
        build_model("UCLR", pge={"dim": 8}, finetune={"rank": 16})
    data = two_domain_clusters()
    single = CrossDomainData(data.user_ids, {"a": data["a"]}, name="one domain")
    with pytest.raises(ValueError, match="two or more domains"):
        build_model("PGE", pge={"epochs": 1}).fit(LeaveOneOut(n_neg=50).split(single, 0).train)


def test_temperature_groups_rank_users_by_activity(tmp_path) -> None:
    from cdrec.figures import plot_temperatures, temperature_groups

    counts = torch.tensor([0, 9, 1, 5, 2, 7, 3, 8, 4, 6])  # user 0 never interacted
    tau = counts.float() / 10
    table = temperature_groups(counts, tau, groups=3)
    assert table["users"].tolist() == [3, 3, 3]  # the 9 active users, most active first
    assert table["max_interactions"].tolist() == [9, 6, 3]
    assert table["min_interactions"].tolist() == [7, 4, 1]
    assert table["tau_mean"].tolist() == pytest.approx([0.8, 0.5, 0.2])
    assert table["tau_std"].tolist() == pytest.approx([0.1, 0.1, 0.1])
    plot_temperatures(table, tmp_path / "t.png", "test")
    assert (tmp_path / "t.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="cannot fill"):
        temperature_groups(counts, tau, groups=10)


def test_plot_temperatures_command_from_a_run(tmp_path) -> None:
    """`cdrec run` then `cdrec plot-temperatures` on the shipped sample: the figure and its
    table are written, every active user lands in one of the groups."""
    import pandas as pd
    import yaml
    from typer.testing import CliRunner

    from cdrec.cli import app

    tiny = {"pge": {"dim": 8, "epochs": 1}, "autoencoder": {"hidden": [8, 4], "epochs": 1},
            "finetune": {"epochs": 1, "rank": 2}}
    config = {"name": "uclr_cli", "output_dir": str(tmp_path), "progress": False,
              "data": {"format": "amazon_implicit", "path": "sample:amazon_implicit",
                       "domains": ["phone", "electronic"]},
              "scenario": {"kind": "leave_one_out", "params": {"n_neg": 20, "ks": [10]}},
              "models": {"UCLR": tiny, "Popularity": {}}, "seeds": [0]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    runner = CliRunner()
    assert runner.invoke(app, ["run", str(path), "--quiet"]).exit_code == 0
    run_dir = tmp_path / "uclr_cli"
    res = runner.invoke(app, ["plot-temperatures", str(run_dir), "--groups", "4"])
    assert res.exit_code == 0, res.output
    assert (run_dir / "temperatures_UCLR_seed0.png").exists()
    table = pd.read_csv(run_dir / "temperatures_UCLR_seed0.csv")
    assert len(table) == 4 and table["users"].sum() == 3325  # every sample user is active
    res = runner.invoke(app, ["plot-temperatures", str(run_dir), "--model", "Popularity"])
    assert res.exit_code != 0 and "learns no per-user temperatures" in res.output
