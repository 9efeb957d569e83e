"""Every method, registered by name when its family package is imported.

Families follow the inheritance tree: ``floors`` (non-personalised), ``bases`` (single-domain
embedding bases and their recommenders), ``coldstart`` (transfer to cold-start users),
``joint`` (domains trained together), ``multitarget`` and ``adaptation``. ``bases`` comes first
so that the per-base variants of the transfer methods exist for every base.
"""

from cdrec.models import adaptation, bases, coldstart, floors, joint, multitarget  # noqa: F401
from cdrec.models.bases import BPR, CML, DNN, GMF, MF, TGT, ListRankMF
from cdrec.models.coldstart import CST, DCDCSR, EMCDR, PTUPCDR, SSCDR, TMCDR
from cdrec.models.floors import GlobalMean, ItemMean, Popularity
from cdrec.models.joint import CMF
from cdrec.models.recommender import ModelConfig, Recommender
from cdrec.models.registry import register, register_variants, registered


def available_models() -> dict[str, type[Recommender]]:
    """Name -> class of every registered model, sorted by name."""
    return registered()


def build_model(name: str, **params: object) -> Recommender:
    """The model registered as ``name`` with hyper-parameters ``params`` (validated: an unknown
    key or a bad value is pydantic's ``ValidationError``; a misspelt name is a ``KeyError``
    suggesting the closest registered names)."""
    import difflib

    models = available_models()
    if name not in models:
        close = difflib.get_close_matches(name, list(models), n=3)
        hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        raise KeyError(f"unknown model {name!r}{hint}; available: {', '.join(models)}")
    return models[name](**params)


__all__ = ["BPR", "CMF", "CML", "CST", "DCDCSR", "DNN", "EMCDR", "GMF", "MF", "PTUPCDR", "SSCDR",
           "TGT", "TMCDR", "GlobalMean", "ItemMean", "ListRankMF", "ModelConfig", "Popularity",
           "Recommender", "available_models", "build_model", "register", "register_variants"]
