"""The contract every registered model meets in every scenario it says it supports.

Like scikit-learn's common estimator checks: the cases are built at collection time from
``available_models()`` x each model's ``supports``, so a model registered later is checked
without touching this file. Data are the shipped real samples, cut to a few hundred users, and
every model trains with a tiny budget derived from its own config (:func:`small_params`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest
import torch
from pydantic import BaseModel

from cdrec.data.catalog import load_sample
from cdrec.models import available_models, build_model
from cdrec.scenarios import build_scenario, scenario_names
from cdrec.train import FitContext, seed_everything

if TYPE_CHECKING:
    from cdrec.data.dataset import CrossDomainData
    from cdrec.split import Split

SEED = 0

# ---------------------------------------------------------------------------------------------
# Scenarios: the one place that knows how a split is built (switch to a new registry here).
# ---------------------------------------------------------------------------------------------

# Per scenario, its variants in order of preference: (implicit, sample, scenario params). A model
# is fitted on the first variant it can serve (ranking-only models need ``implicit``).
SCENARIO_VARIANTS: dict[str, list[tuple[bool, str, dict[str, Any]]]] = {
    "coldstart": [
        (False, "douban", {"source": "book", "target": "music"}),
        (True, "douban", {"source": "book", "target": "music", "implicit": True}),
    ],
    "kfold_rating": [(False, "douban", {"k": 5})],
    "leave_one_out": [(True, "amazon_implicit", {"n_neg": 99})],  # always binarised
}
# Users kept from each sample (seeded random subset), so the whole file stays fast.
SAMPLE_USERS = {"douban": 200, "amazon_implicit": 400}


def registered_scenarios() -> list[str]:
    return scenario_names()


@functools.cache
def make_split(scenario: str, implicit: bool, seed: int = SEED) -> Split:
    """The split of ``scenario``'s variant with labels ``implicit`` (cached: splits are shared
    by every model and check)."""
    sample, params = next((s, p) for imp, s, p in SCENARIO_VARIANTS[scenario] if imp == implicit)
    return build_scenario(scenario, params).split(sample_data(sample), seed)


@functools.cache
def sample_data(name: str) -> CrossDomainData:
    """A shipped sample restricted to a seeded random subset of its users (their rows in every
    domain, shipped test rows included); the user index space is unchanged."""
    data = load_sample(name)
    keep = torch.randperm(data.n_users, generator=torch.Generator().manual_seed(0))
    keep = keep[:SAMPLE_USERS[name]]

    def rows(table):
        return None if table is None else table.select(torch.isin(table.user, keep))

    return data.replace_domains({
        domain: dom.with_interactions(rows(dom.interactions), given_test=rows(dom.given_test))
        for domain, dom in data.domains.items()})


# ---------------------------------------------------------------------------------------------
# Models: tiny budgets and the scenario variant each can serve, derived from class and config.
# ---------------------------------------------------------------------------------------------

# Budget-like fields and the value every model trains with here (sizes only for speed).
# Federated models run their rounds vectorised here; the Flower engine has its own tests
# (tests/test_federated.py), each of which starts Ray once.
SMALL = {"epochs": 2, "patience": 1, "dim": 8, "engine": "vectorised", "warmup_epochs": 1}


def _shrink(config: type[BaseModel]) -> dict[str, Any]:
    """The budget fields of ``config`` at their tiny values, and the same for every nested
    config it holds (a multi-stage method's per-stage settings: UCLR's pge, autoencoder, ...)."""
    params = {name: value for name, value in SMALL.items() if name in config.model_fields}
    for name, field in config.model_fields.items():
        kind = field.annotation
        if name != "base_config" and isinstance(kind, type) and issubclass(kind, BaseModel):
            nested = _shrink(kind)
            if nested:
                params[name] = nested
    return params


def small_params(cls: type) -> dict[str, Any]:
    """Tiny training settings for any model, from the fields of its ``Config``; a nested
    ``base_config`` is shrunk with the fields of the base's own config (which validates it)."""
    params = _shrink(cls.Config)
    if "base_config" in cls.Config.model_fields:
        base_config = type(cls(**params).config.base_settings())
        params["base_config"] = _shrink(base_config)
    return params


def base_registry() -> dict[str, type]:
    from cdrec.models.bases import BASES

    return BASES


def ranking_only(cls: type) -> bool:
    """Whether the model learns from implicit feedback only: it says so (``implicit_only``),
    or an embedding base it fits (``base_name``, its config's ``base``) is a ranking model."""
    if getattr(cls, "implicit_only", False):
        return True
    config = cls(**small_params(cls)).config
    names = {getattr(cls, "base_name", None), getattr(config, "base", None)} - {None, ""}
    return any(getattr(base_registry()[n], "implicit_only", False) for n in names)


@functools.cache
def served_variant(name: str, scenario: str) -> bool | None:
    """``implicit`` of the first variant of ``scenario`` the model can be fitted on, or None."""
    needs_implicit = ranking_only(available_models()[name])
    for implicit, _, _ in SCENARIO_VARIANTS.get(scenario, []):
        if implicit or not needs_implicit:
            return implicit
    return None


class _PairRecorder:
    """Stands in for a fitted model so an evaluator reveals the (domain, users, items) it
    scores: the real test pairs, whatever the protocol."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.calls: list[tuple[str, torch.Tensor, torch.Tensor]] = []

    def check_fitted(self) -> None:
        pass

    def predict(self, domain: str, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        self.calls.append((domain, users.clone(), items.clone()))
        return torch.zeros(users.shape)


@functools.cache
def evaluated_pairs(scenario: str, implicit: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per evaluated domain, the (users, items) the split's test evaluator scores."""
    recorder = _PairRecorder()
    make_split(scenario, implicit).test.evaluate(recorder)
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for domain, users, items in recorder.calls:
        u, i = pairs.get(domain, (users[:0], items[:0]))
        pairs[domain] = (torch.cat([u, users]), torch.cat([i, items]))
    return pairs


def predict_all(model, scenario: str, implicit: bool) -> dict[str, torch.Tensor]:
    return {domain: model.predict(domain, users, items)
            for domain, (users, items) in evaluated_pairs(scenario, implicit).items()}


def fit(name: str, scenario: str, implicit: bool, context: FitContext):
    """Build and fit a model as the runner does (``_fit_one``): global seeds set first."""
    split = make_split(scenario, implicit)
    seed_everything(SEED)
    model = build_model(name, **small_params(available_models()[name]))
    return model, model.fit(split.train, split.validation, context)


@dataclass(frozen=True)
class Reference:
    """One uninterrupted fit, shared by every check of a (model, scenario)."""

    model: Any
    returned: Any
    history: list[dict[str, Any]]
    predictions: dict[str, torch.Tensor]
    implicit: bool


@functools.cache
def reference_fit(name: str, scenario: str) -> Reference:
    implicit = served_variant(name, scenario)
    context = FitContext(seed=SEED, progress=False)
    model, returned = fit(name, scenario, implicit, context)
    return Reference(model, returned, list(context.history),
                     predict_all(model, scenario, implicit), implicit)


def cases() -> Iterator[Any]:
    for name, cls in available_models().items():
        for scenario in sorted(cls.supports):
            yield pytest.param(name, scenario, id=f"{name}-{scenario}")


CASES = list(cases())
MODELS = list(available_models())


@pytest.fixture
def ref(request: pytest.FixtureRequest) -> Reference:
    """The reference fit of the test's (name, scenario). A pair that cannot be fitted is
    reported once, by the test named in the skip reason, and skipped by the other checks."""
    params = request.node.callspec.params
    name, scenario = params["name"], params["scenario"]
    if scenario not in registered_scenarios():
        pytest.skip(f"{scenario!r} is not registered "
                    "(see test_supports_names_registered_scenarios)")
    if served_variant(name, scenario) is None:
        pytest.skip(f"{name} cannot be fitted on any variant of {scenario} "
                    "(see test_supported_scenario_is_servable)")
    return reference_fit(name, scenario)


# ---------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_supports_names_registered_scenarios(name: str) -> None:
    unknown = set(available_models()[name].supports) - set(registered_scenarios())
    assert not unknown, f"{name}.supports names unregistered scenarios {sorted(unknown)}"


@pytest.mark.parametrize("name", MODELS)
def test_unknown_config_key_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not_a_param"):  # pydantic's ValidationError included
        build_model(name, not_a_param=1)
    if "base_config" in available_models()[name].Config.model_fields:
        # The nested base settings are a config too: a typo there must not pass silently.
        with pytest.raises(ValueError, match="not_a_param"):
            build_model(name, base_config={"not_a_param": 1})


@pytest.mark.parametrize(("name", "scenario"), CASES)
def test_supported_scenario_is_servable(name: str, scenario: str) -> None:
    if scenario not in registered_scenarios():
        pytest.skip(f"{scenario!r} is not registered "
                    "(see test_supports_names_registered_scenarios)")
    if served_variant(name, scenario) is not None:
        return
    errors = []
    for implicit, _, _ in SCENARIO_VARIANTS[scenario]:  # show how the model really fails
        try:
            fit(name, scenario, implicit, FitContext(seed=SEED, progress=False))
        except Exception as err:  # noqa: BLE001  (any failure is the evidence reported)
            errors.append(f"{'implicit' if implicit else 'explicit'}: {type(err).__name__}: {err}")
        else:
            pytest.fail(f"ranking_only() misjudged {name}: it fits {scenario} "
                        f"(implicit={implicit}); fix the detection")
    pytest.fail(f"{name} declares {scenario!r} in supports but is ranking-only, and "
                f"{scenario!r} has no implicit-feedback form; fitting it gives\n"
                + "\n".join(errors))


@pytest.mark.parametrize(("name", "scenario"), CASES)
def test_fit_returns_self(name: str, scenario: str, ref: Reference) -> None:
    assert ref.returned is ref.model


@pytest.mark.parametrize(("name", "scenario"), CASES)
def test_predictions_and_metrics_are_finite(name: str, scenario: str, ref: Reference) -> None:
    pairs = evaluated_pairs(scenario, ref.implicit)
    assert pairs, "the test evaluator scored no pairs"
    for domain, pred in ref.predictions.items():
        users = pairs[domain][0]
        assert isinstance(pred, torch.Tensor) and pred.is_floating_point(), (
            f"{domain}: predict returned {type(pred).__name__} {getattr(pred, 'dtype', '')}")
        assert pred.shape == users.shape, f"{domain}: shape {tuple(pred.shape)}"
        assert bool(torch.isfinite(pred).all()), f"{domain}: non-finite predictions"
    metrics = make_split(scenario, ref.implicit).test.evaluate(ref.model)
    assert metrics, "evaluate returned no metrics"
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    assert not bad, f"non-finite metrics {bad}"


@pytest.mark.parametrize(("name", "scenario"), CASES)
def test_same_seed_same_predictions(name: str, scenario: str, ref: Reference) -> None:
    model, _ = fit(name, scenario, ref.implicit, FitContext(seed=SEED, progress=False))
    again = predict_all(model, scenario, ref.implicit)
    for domain, pred in ref.predictions.items():
        assert torch.equal(again[domain], pred), f"{domain}: a second fit with seed {SEED} differs"


@pytest.mark.parametrize(("name", "scenario"), CASES)
def test_predict_before_fit_raises(name: str, scenario: str, ref: Reference) -> None:
    model = build_model(name, **small_params(available_models()[name]))
    domain, (users, items) = next(iter(evaluated_pairs(scenario, ref.implicit).items()))
    with pytest.raises(RuntimeError, match="fit"):
        model.predict(domain, users[:8], items[:8])


class _Interrupted(Exception):
    """Raised from inside the training loop to simulate a killed fit."""


class _InterruptingHistory(list):
    """``FitContext.history`` that raises on its ``at``-th record (1-based). The loop appends a
    record per epoch and checkpoints after the append, so epochs before it are on disk."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def append(self, record: dict[str, Any]) -> None:
        super().append(record)
        if len(self) >= self.at:
            raise _Interrupted(f"interrupted at history record {len(self)}")


class _CountingHistory(list):
    """``FitContext.history`` that counts appends: the loop appends one record per epoch it
    runs (records of checkpointed epochs come back with the checkpoint, not as new runs)."""

    appended = 0

    def append(self, record: dict[str, Any]) -> None:
        super().append(record)
        self.appended += 1


def interruption_points(history: list[dict[str, Any]]) -> list[int]:
    """1-based history records to interrupt at: the last epoch of each stage. Each stage is then
    cut mid-way (its earlier epochs checkpointed) and every later stage re-run, so RNG state that
    a checkpoint misses shows up wherever in the fit it is consumed."""
    last = {(h.get("label"), h["stage"]): i for i, h in enumerate(history, 1)}
    return sorted(set(last.values()))


@pytest.mark.parametrize(("name", "scenario"), CASES)
def test_resume_after_interruption_matches_uninterrupted_fit(
        name: str, scenario: str, ref: Reference, tmp_path: Path) -> None:
    if not ref.history:
        pytest.skip(f"{name} has no epoch loop: an uninterrupted fit recorded no history")
    n = len(ref.history)
    failures = []
    for at in interruption_points(ref.history):
        where = f"interrupted at epoch record {at} of {n} (stage {ref.history[at - 1]['stage']})"
        checkpoints = tmp_path / f"at{at}"
        interrupted = FitContext(seed=SEED, progress=False, checkpoint_dir=checkpoints,
                                 resume=False)
        interrupted.history = _InterruptingHistory(at)
        with pytest.raises(_Interrupted):
            fit(name, scenario, ref.implicit, interrupted)

        resumed = FitContext(seed=SEED, progress=False, checkpoint_dir=checkpoints, resume=True)
        resumed.history = _CountingHistory()
        model, _ = fit(name, scenario, ref.implicit, resumed)
        if resumed.history.appended != n - at + 1:  # else it refitted instead of resuming
            failures.append(f"{where}: the resumed fit ran {resumed.history.appended} epochs, "
                            f"not the {n - at + 1} left after the checkpointed ones")
        after = predict_all(model, scenario, ref.implicit)
        for domain, pred in ref.predictions.items():
            if not torch.equal(after[domain], pred):
                diff = (after[domain] - pred).abs().max().item()
                failures.append(f"{where}: {domain} predictions differ (max abs diff {diff:.3g})")
        epochs = [(h["stage"], h["epoch"]) for h in resumed.history]
        if epochs != [(h["stage"], h["epoch"]) for h in ref.history]:
            failures.append(f"{where}: the resumed history lists epochs {epochs}")
    assert not failures, "resumed fit differs from the uninterrupted one:\n" + "\n".join(failures)


@pytest.mark.parametrize(("name", "scenario"), CASES)
def test_save_load_gives_identical_predictions(name: str, scenario: str, ref: Reference,
                                               tmp_path: Path) -> None:
    from cdrec.models.persist import load_model

    path = ref.model.save(tmp_path / "model.pt")
    loaded = load_model(path)
    assert type(loaded) is type(ref.model) and not loaded.training
    after = predict_all(loaded, scenario, ref.implicit)
    for domain, pred in ref.predictions.items():
        assert torch.equal(after[domain], pred), f"{domain}: predictions differ after loading"
    domain, (users, _) = next(iter(evaluated_pairs(scenario, ref.implicit).items()))
    ids = ref.model.trained_on_.user_ids[torch.unique(users)[:3].numpy()]
    expected = ref.model.recommend(domain, ids, k=5)
    assert len(expected) == 15
    pd.testing.assert_frame_equal(loaded.recommend(domain, ids, k=5), expected)


@pytest.mark.parametrize(("name", "scenario"), CASES)
def test_scoring_every_item_agrees_with_predict(name: str, scenario: str, ref: Reference) -> None:
    """``score_users`` (what ``recommend`` ranks by, one state per user and a matrix product)
    gives ``predict``'s scores for every item."""
    model = ref.model
    for domain, (users, _) in evaluated_pairs(scenario, ref.implicit).items():
        chosen = torch.unique(users)[:4]
        n_items = len(model.trained_on_.item_ids[domain])
        fast = model.score_users(domain, chosen, n_items)
        pairs = model.predict(domain, chosen.repeat_interleave(n_items),
                              torch.arange(n_items).repeat(chosen.numel()))
        assert fast.shape == (chosen.numel(), n_items)
        assert torch.allclose(fast, pairs.view(chosen.numel(), n_items), atol=1e-4), domain
