"""The model checklist, enforced for every model the built-in plugins register (issue 24).

Driven by the registry, not a hand list: a model registered through ``register_models`` or
``register_recipe_models`` must

1. name a model-card template (``card=``) that exists;
2. have a tiny builder in ``tests/hub_fixtures.py`` (``BUILDERS`` / ``RECIPE_BUILDERS``), and
   ``hub.build_card`` must render its card for the tiny saved model without ``card_template``;
3. load back from the saved folder with its registered transformers auto class and
   ``trust_remote_code=True`` in a process without hf_persona (offline), running the folder's own
   code, with the same weights (a recipe model, a plain transformers architecture, loads with
   transformers' own class and gives the same outputs).

The push/pull round trip of each model through a fake Hub is in tests/hub/test_hub_roundtrip.py.
"""

from __future__ import annotations

import json

import pytest
import torch

from hf_persona import hub, plugins
from tests.hub_fixtures import BUILDERS, RECIPE_BUILDERS


def _builtin_registries() -> tuple[dict, dict]:
    """The models and recipe models of hf_persona's own plugins (installed third-party plugins left out)."""
    plugins.reset_plugins()
    try:
        plugins.load_plugins(entry_points=False)
        return plugins.model_specs(), plugins.recipe_model_specs()
    finally:
        plugins.reset_plugins()


MODELS, RECIPES = _builtin_registries()


def test_the_registry_is_not_empty():
    assert {"cobert", "pal", "receiver", "transmitter"} <= set(MODELS)
    assert {"persona_extractor", "ppg", "drg", "critic"} <= set(RECIPES)


def _card_of(name: str) -> str:
    spec = MODELS[name] if name in MODELS else RECIPES[name]
    card = spec.card if name in MODELS else spec.card_name
    assert card, (f"model {name!r} is registered without card=: name its model-card template in the "
                  f"register(...) call of its plugin (templates: model_cards/)")
    return card


def _builder(name: str):
    table, where = (BUILDERS, "BUILDERS") if name in MODELS else (RECIPE_BUILDERS, "RECIPE_BUILDERS")
    assert name in table, (f"model {name!r} is registered but tests/hub_fixtures.py {where} has no tiny builder "
                           "for it; add build(backbone_dir, out_dir) -> (model, tokenizer) and "
                           "probe(model, tokenizer) -> tensor so its card and round trips are checked")
    return table[name]


ALL = sorted(MODELS) + sorted(RECIPES)


@pytest.mark.parametrize("name", ALL)
def test_card_template_exists(name):
    card = _card_of(name)
    assert hub.card_template_path(card).is_file(), \
        f"model {name!r} names the card {card!r}, but model_cards/{card}.md does not exist"


@pytest.mark.parametrize("name", ALL)
def test_card_renders_for_a_tiny_saved_model(name, tiny_bert_dir, tmp_path):
    build, _probe = _builder(name)
    torch.manual_seed(0)
    folder = tmp_path / f"checklist_{name}"
    build(tiny_bert_dir, folder)
    (folder / "eval.json").write_text(json.dumps({"checklist.score": 0.5}))
    card = hub.build_card(folder, "org/checklist", metrics_json=folder / "eval.json",  # no card_template
                          base_model="org/base")
    want = hub.render_card(hub.card_template_path(_card_of(name)), repo_id="org/checklist", base_model="org/base",
                           metrics={"checklist.score": 0.5}, metrics_source="eval.json")
    assert card == want, f"model {name!r}: the card build_card picked is not model_cards/{_card_of(name)}.md"
    assert "org/checklist" in card and "| checklist.score | 0.5 |" in card


def _fingerprint(model) -> dict:
    """``{parameter or buffer name: sha256 of its bytes}``: equal exactly when the weights are."""
    import hashlib

    return {key: hashlib.sha256(value.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
            for key, value in model.state_dict().items()}


_REMOTE_LOAD = """
import hashlib, json, traceback
import transformers
out = {{}}
for name, (folder, auto_class) in {jobs!r}.items():
    try:
        model = getattr(transformers, auto_class).from_pretrained(folder, trust_remote_code=True)
        out[name] = {{"class": type(model).__name__, "module": type(model).__module__,
                      "weights": {{k: hashlib.sha256(v.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
                                  for k, v in model.state_dict().items()}}}}
    except Exception:
        out[name] = {{"error": traceback.format_exc()[-3000:]}}
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def remote_loads(tiny_bert_dir, tmp_path_factory):
    """name -> (the model built in-process, what a process without hf_persona loaded from its saved folder
    with the registered auto class and trust_remote_code=True)."""
    from tests.helpers import run_without_hf_persona

    root = tmp_path_factory.mktemp("checklist_remote")
    built, jobs = {}, {}
    for name in sorted(set(MODELS) & set(BUILDERS)):
        torch.manual_seed(0)
        folder = root / f"remote_{name}"
        model, _tokenizer = BUILDERS[name][0](tiny_bert_dir, folder)
        built[name] = model
        jobs[name] = (str(folder), MODELS[name].auto_class)
    out = run_without_hf_persona(_REMOTE_LOAD.format(jobs=jobs), timeout=600)
    loaded = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    return {name: (built[name], loaded[name]) for name in built}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_remote_code_round_trip(name, remote_loads):
    _builder(name)
    model, got = remote_loads[name]
    auto_class = MODELS[name].auto_class
    assert "error" not in got, f"model {name!r}: {auto_class}.from_pretrained(folder, trust_remote_code=True) " \
                               f"failed without hf_persona:\n{got.get('error')}"
    assert got["class"] == type(model).__name__ and not got["module"].startswith("hf_persona"), got["module"]
    assert got["weights"] == _fingerprint(model), f"model {name!r}: the weights loaded through remote code differ"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_model_loads_with_plain_transformers(name, tiny_bert_dir, tmp_path):
    build, probe = _builder(name)
    torch.manual_seed(0)
    folder = tmp_path / f"recipe_{name}"
    model, tokenizer = build(tiny_bert_dir, folder)
    model.eval()
    assert RECIPES[name].holds(hub.read_sidecars(folder)), \
        f"the {name} builder did not write the sidecar {RECIPES[name].sidecar} its registration names"
    loaded = hub.load_model(folder).eval()  # transformers' own class (config.json names no custom code)
    assert type(loaded) is type(model) and type(loaded).__module__.startswith("transformers.")
    with torch.no_grad():
        torch.testing.assert_close(probe(loaded, tokenizer), probe(model, tokenizer), rtol=0, atol=0)


def test_a_registered_model_without_a_card_or_builder_fails_the_checklist(monkeypatch):
    """What a new model registered without its checklist items meets: a clear failure, not a skip."""
    from hf_persona.plugins import ModelSpec

    spec = ModelSpec("newcomer", "hf_persona.models.cobert:CoBERTConfig",
                     "hf_persona.models.cobert:CoBERTForResponseSelection")
    monkeypatch.setitem(MODELS, "newcomer", spec)
    with pytest.raises(AssertionError, match="registered without card="):
        _card_of("newcomer")
    with pytest.raises(AssertionError, match="has no tiny builder"):
        _builder("newcomer")
    monkeypatch.setitem(MODELS, "newcomer", ModelSpec("newcomer", spec._config_ref, spec._model_ref,
                                                      card="no_such_card"))
    with pytest.raises(AssertionError, match="model_cards/no_such_card.md does not exist"):
        test_card_template_exists("newcomer")


# ---------------------------------------------------------------- card and sidecar registrations of other plugins

@pytest.fixture
def fresh_plugins():
    plugins.reset_plugins()
    plugins.load_plugins(entry_points=False)
    yield
    plugins.reset_plugins()


def test_bogus_card_and_sidecar_registrations_are_rejected_with_clear_errors(fresh_plugins):
    from hf_persona import hookimpl

    cobert = "hf_persona.models.cobert"

    class Bogus:
        @hookimpl
        def register_models(self, register):
            register("empty_card", f"{cobert}:CoBERTConfig", f"{cobert}:CoBERTForResponseSelection", card="")
            register("string_sidecars", f"{cobert}:CoBERTConfig", f"{cobert}:CoBERTForResponseSelection",
                     sidecars="mine.json")
            register("folder_sidecar", f"{cobert}:CoBERTConfig", f"{cobert}:CoBERTForResponseSelection",
                     sidecars=("sub/mine.json",))

        @hookimpl
        def register_recipe_models(self, register):
            register("not_json", "meta.txt")
            register("bad_match", "meta.json", match=["task"])
            register("no_sidecar")
            register("fine_recipe", "meta.json", card="ppg", match={"task": "fine"})

    plugins.pm.register(Bogus(), name="bogus-cards")
    assert {"empty_card", "string_sidecars", "folder_sidecar"}.isdisjoint(plugins.model_specs())
    assert set(plugins.recipe_model_specs()) & {"not_json", "bad_match", "no_sidecar", "fine_recipe"} == \
        {"fine_recipe"}
    messages = sorted(e.message for e in plugins.plugin_errors() if e.plugin == "bogus-cards")
    expected = [
        "model 'empty_card': card must be the name of a model-card template (e.g. 'pal') or a path to one, got ''",
        "model 'string_sidecars': sidecars must be a tuple of JSON file names, got the string 'mine.json' "
        "(write ('mine.json',))",
        "model 'folder_sidecar': sidecars must be plain JSON file names such as 'pal_training.json' "
        "(no folders, not config.json), got 'sub/mine.json'",
        "recipe model 'not_json': sidecar must be plain JSON file names such as 'pal_training.json' "
        "(no folders, not config.json), got 'meta.txt'",
        "recipe model 'bad_match': match must map sidecar keys to JSON scalars (e.g. {'task': 'drg'}), "
        "got ['task']",
        "recipe model 'no_sidecar': register(name, sidecar, card=None, match=None): ",
    ]
    for text in expected:
        assert any(text in m for m in messages), (text, messages)
    assert len(messages) == len(expected)


def test_a_third_party_plugin_names_its_own_card_file_and_sidecar(fresh_plugins, tmp_path):
    from hf_persona import hookimpl

    card = tmp_path / "my_card.md"
    card.write_text("---\nlibrary_name: transformers\n---\n# my model {repo_id} on {base_model}\n{metrics_table}\n")

    class ThirdParty:
        @hookimpl
        def register_recipe_models(self, register):
            register("my_tagger", "my_tagger.json", card=str(card), match={"version": 2})

    plugins.pm.register(ThirdParty(), name="third-party")
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "base_model": "org/bert-tiny"}))
    with pytest.raises(hub.HFPersonaError, match="no model card template for model_type 'bert'"):
        hub.build_card(folder, "org/tagger")  # no sidecar yet: a plain BERT folder has no card
    (folder / "my_tagger.json").write_text(json.dumps({"version": 1}))
    with pytest.raises(hub.HFPersonaError, match="no model card template"):
        hub.build_card(folder, "org/tagger")  # the sidecar does not match
    (folder / "my_tagger.json").write_text(json.dumps({"version": 2}))
    assert hub.build_card(folder, "org/tagger").startswith(
        "---\nlibrary_name: transformers\n---\n# my model org/tagger on org/bert-tiny\n")
