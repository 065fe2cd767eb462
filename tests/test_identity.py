"""One identity function: a runtime field (how or where a cell runs) changes no key of any built-in kind, a
hashed field changes the cell key, and a shared scorer's key ignores how the cell evaluates it."""

import dataclasses
import importlib
import json
import typing
from pathlib import Path

import pytest

from nfjobs import identity, typed
from nfjobs.config import BUILTIN_PIXELS, DataConfig
from nfjobs.jobs import score
from nfjobs.kinds import KINDS


def _config(kind: str) -> type:
    return importlib.import_module(KINDS[kind]).Config


def _other(tp, value):
    """A value of type `tp` other than `value`, or None when none is made up here."""
    if typing.get_origin(tp) is typing.Literal:
        return next((c for c in typing.get_args(tp) if c != value), None)
    if tp is bool:
        return not value
    if tp is int:
        return value + 1
    if tp is float:
        return value / 2 if value else 0.5
    if tp is str:
        return "cpu" if value == "auto" else value + "x"
    return None


def _replace(config, dotted: str, value):
    head, _, rest = dotted.partition(".")
    if not rest:
        return dataclasses.replace(config, **{head: value})
    return dataclasses.replace(config, **{head: _replace(getattr(config, head), rest, value)})


def _get(config, dotted: str):
    for name in dotted.split("."):
        config = getattr(config, name)
    return config


def _variants(cls: type, leaves):
    """(leaf, config with only that leaf changed to another valid value) for each of `leaves` one can be made for."""
    base, types = cls(), typed.leaf_fields(cls)
    for leaf in sorted(leaves):
        value = _other(types[leaf], _get(base, leaf))
        if value is None:
            continue
        try:
            yield leaf, _replace(base, leaf, value)
        except ValueError:  # a combination the config refuses
            continue


def _content_keys(kind: str, config) -> dict[str, str]:
    """Every key a cell of `kind` derives from `config`: its cell key, a score cell's scorer key and what a cache
    records as its config (the content a scorer of it hashes)."""
    keys = {"cell": identity.cell_key(kind, config)}
    if kind == "score":
        keys["scorer"] = score.scorer_key(config, None)
    if kind == "cache":
        keys["cache meta"] = json.dumps(identity.without_runtime(config), sort_keys=True)
    return keys


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_runtime_field_changes_no_key(kind):
    cls = _config(kind)
    runtime = identity.runtime_leaves(cls)
    base = _content_keys(kind, cls())
    varied = list(_variants(cls, runtime))
    assert [leaf for leaf, _ in varied] == sorted(runtime), "every runtime field is varied"
    for leaf, config in varied:
        assert _content_keys(kind, config) == base, f"{kind}: {leaf} is runtime but changed a key"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_hashed_field_changes_the_cell_key(kind):
    cls = _config(kind)
    hashed = set(identity.hashed_leaves(cls)) | {"seed"}
    base = identity.cell_key(kind, cls())
    varied = list(_variants(cls, hashed))
    assert varied
    for leaf, config in varied:
        assert identity.cell_key(kind, config) != base, f"{kind}: changing {leaf} kept the cell key"


def _scorer_key(**changes) -> str:
    return score.scorer_key(score.Config(scorer="kmeans", **changes), None)


def test_how_a_score_cell_evaluates_or_runs_leaves_its_scorer_key():
    base = _scorer_key()
    for changes in [dict(pictures_top_k=0), dict(eval_split="test"), dict(n_train=100), dict(device="cpu"),
                    dict(precision="fp32"), dict(batch_patches=7), dict(data=DataConfig(workers=0))]:
        assert _scorer_key(**changes) == base, changes
    for evaluation in [dict(eval_split="test"), dict(n_train=100)]:  # still another cell, with other results
        assert identity.cell_key("score", score.Config(**evaluation)) != identity.cell_key("score", score.Config())


def test_what_a_scorer_is_trained_on_changes_its_key():
    base = _scorer_key()
    for changes in [dict(seed=1), dict(n_prototypes=64), dict(train_patches=1000), dict(kmeans_iters=3),
                    dict(data=DataConfig(builtin_seed=1))]:
        assert _scorer_key(**changes) != base, changes
    assert score.scorer_key(score.Config(scorer="pca"), None) != base


def test_a_cache_is_named_by_its_content_not_by_the_reference(tmp_path):
    """A cell key and a path naming the same cache give one scorer; another cache's meta.json another."""
    (tmp_path / "cache-1" / "train").mkdir(parents=True)
    (tmp_path / "cache-1" / "train" / "meta.json").write_text('{"label": "a"}')

    class Ctx:
        def resolve(self, ref: str) -> Path:
            return tmp_path / ref if "/" not in ref else Path(ref)

    by_key = score.scorer_key(score.Config(activations="cache-1"), Ctx())
    assert by_key == score.scorer_key(score.Config(activations=str(tmp_path / "cache-1")), Ctx())
    (tmp_path / "cache-1" / "train" / "meta.json").write_text('{"label": "b"}')
    assert score.scorer_key(score.Config(activations="cache-1"), Ctx()) != by_key
    assert by_key != score.scorer_key(score.Config(activations=BUILTIN_PIXELS), None)
