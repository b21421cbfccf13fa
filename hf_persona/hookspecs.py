"""The plugin contract of hf_persona.

Every hook receives a ``register`` callback (or the CLI group) and calls it once per thing it
adds. Built-in features in :mod:`hf_persona.default_plugins` implement these hooks exactly like
third-party distributions, which expose a module through the ``hf_persona`` entry-point group.
"""

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("hf_persona")
hookimpl = HookimplMarker("hf_persona")


@hookspec
def register_models(register):
    """Register model classes.

    ``register(name, config_class, model_class, auto_class="AutoModel", *, card=None, sidecars=())``:
    ``name`` is the user-facing name, ``config_class`` a ``PretrainedConfig`` subclass with a unique
    ``model_type``, ``model_class`` a ``PreTrainedModel`` subclass, ``auto_class`` the name of
    the transformers auto class (``"AutoModel"``, ``"AutoModelForSeq2SeqLM"``,
    ``"AutoModelForCausalLM"``, ...) the model is registered with in-process.

    ``card`` names the model-card template ``hf-persona push`` renders for the model: a packaged
    template (``model_cards/<card>.md`` of hf_persona) or an absolute path to a template file the
    plugin ships. Without it the packaged ``<model_type>.md`` or ``<name>.md`` is used; with neither,
    push stops with an error asking for ``--card``. ``sidecars`` is a tuple of JSON file names a
    recipe writes next to the model's weights (``("pal_training.json",)``): a folder holding one gets
    this model's card even when its ``config.json`` names another ``model_type``.

    Either class may be given by reference, ``"package.module:ClassName"``: it is imported only
    when a lookup needs it (``get_model_spec``, the Auto classes), so listing the plugins does not
    import torch or transformers. Rewards and logits processors stay light the same way when the
    factory imports its implementation inside.

    A registration that breaks these rules (a class of the wrong kind, a config without
    ``model_type``, an ``auto_class`` that is not a transformers auto class, a reference to a module
    or class that does not exist) is rejected: recorded in ``hf_persona.plugin_errors()`` under the
    plugin's name, listed by ``hf-persona plugins --json``, and not registered. The plugin's other
    registrations stand.
    """


@hookspec
def register_recipe_models(register):
    """Name the models a recipe saves as a plain transformers architecture.

    Such a folder's ``config.json`` says ``bert`` or ``encoder-decoder``, not what the model is (a
    persona extractor, a PPG generator); a sidecar JSON file the recipe writes beside it does.
    ``register(name, sidecar, card=None, match=None)``: a folder holding the file ``sidecar`` whose
    JSON object has every key of ``match`` with that value (``match={"task": "drg"}``; None: any
    object) holds the model ``name``, and ``hf-persona push`` renders its card ``card`` (default:
    ``name``; a packaged template name or an absolute path, as for ``register_models``). A bogus
    registration is rejected and recorded like a bogus model registration.
    """


@hookspec
def register_rewards(register):
    """Register reward functions.

    ``register(name, factory)``: ``factory(**options)`` returns a reward callable with the TRL
    convention ``reward(prompts, completions, **columns) -> list[float]`` (one float per
    completion; ``columns`` are the dataset's other columns, one value per completion).

    Document the reward's range and give an empty or whitespace-only completion its minimum, as the
    built-in rewards do (:class:`hf_persona.rewards.bounds.BoundedReward` does both for a reward
    class). A factory that raises when called gives a ``PluginCallError`` naming the plugin.
    """


@hookspec
def register_logits_processors(register):
    """Register logits processors.

    ``register(name, factory)``: ``factory(**options)`` returns a
    ``transformers.LogitsProcessor`` to pass to ``model.generate(logits_processor=...)``.
    """


@hookspec
def register_datasets(register):
    """Register dataset loaders.

    ``register(name, loader)``: ``loader(path=None, **options)`` returns a
    ``datasets.Dataset``; ``path=None`` loads the data the plugin ships or knows about. A loader
    that raises gives a ``PluginCallError`` naming the plugin and the dataset.
    """


@hookspec
def register_commands(cli):
    """Add CLI commands.

    ``cli`` is the root ``click.Group`` of ``hf-persona``; attach commands to it or to its
    ``train`` and ``eval`` groups (``cli.commands["train"]``).
    """
