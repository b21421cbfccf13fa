"""Fast start (issue 27, item 4): importing hf_persona, listing the plugins and building every help
text of the CLI import none of the heavy frameworks, and plugin models still reach the transformers
Auto classes once transformers is imported, in either order.

Each check runs in a fresh interpreter (the test process has long imported torch). No wall-clock
assertion: the import lists are what keeps ``hf-persona --help`` under a second, and they do not
depend on how busy the machine is.
"""

import json
import os
import subprocess
import sys
import textwrap

HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "sympy", "matplotlib")


def run_python(code: str) -> dict:
    env = dict(os.environ, HF_PERSONA_LOAD_PLUGINS="hf-persona-distinct")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_plugins_and_every_help_text_stay_light():
    got = run_python(f"""
        import json, sys
        HEAVY = {HEAVY!r}

        def heavy():
            return sorted(m for m in HEAVY if m in sys.modules)

        out = {{}}
        import hf_persona
        out["import"] = heavy()
        for name in hf_persona.__all__:  # every public name is there without a heavy import
            getattr(hf_persona, name)
        out["public names"] = heavy()
        listing = hf_persona.list_plugins()
        out["list_plugins"] = heavy()

        import click
        from click.testing import CliRunner
        from hf_persona.cli import register_plugin_commands, cli

        register_plugin_commands()
        runner = CliRunner()
        helps = []

        def walk(command, path):
            result = runner.invoke(cli, path + ["--help"])
            assert result.exit_code == 0, (path, result.output, result.exception)
            helps.append(" ".join(path))
            for name, sub in getattr(command, "commands", {{}}).items():
                walk(sub, path + [name])

        walk(cli, [])
        out["help"] = heavy()
        result = runner.invoke(cli, ["plugins"])
        assert result.exit_code == 0, result.output
        out["plugins command"] = heavy()
        out["plugins output"] = result.output
        out["helps"] = helps
        out["listing"] = listing
        out["errors"] = [str(e) for e in hf_persona.plugin_errors()]
        print(json.dumps(out))
    """)
    for stage in ("import", "public names", "list_plugins", "help", "plugins command"):
        assert got[stage] == [], f"{stage} imported {got[stage]}"
    assert got["errors"] == []
    assert {"train pal", "train cobert", "eval receiver", "train selfplay", "push", "data inspect"} <= set(got["helps"])
    # the listing is complete without importing any model code
    assert {"cobert", "persona_biencoder", "pal", "pal_causal", "receiver", "transmitter"} <= set(got["listing"]["models"])
    assert {"critic", "ppg_critic", "persona_perception", "language_style", "discourse_coherence",
            "repetition_penalty", "distinct_n"} <= set(got["listing"]["rewards"])
    assert "strategy_contrast" in got["listing"]["logits_processors"]
    assert "models: cobert, pal, pal_causal, persona_biencoder, receiver, transmitter" in got["plugins output"]


def test_console_script_help_imports_nothing_heavy():
    """``python -m hf_persona.cli --help`` as a user runs it, with -X importtime to see every module."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "hf_persona.cli", "--help"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Commands:" in proc.stdout
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


MODEL_TYPES = ("cobert", "persona_biencoder", "pal", "pal_causal", "p2bot_receiver", "p2bot_transmitter")

REGISTERED = f"""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    import hf_persona
    print(json.dumps({{"registered": [t for t in {MODEL_TYPES!r} if t in CONFIG_MAPPING],
                       "errors": [str(e) for e in hf_persona.plugin_errors()]}}))
"""


def test_models_reach_the_auto_classes_when_transformers_comes_after_hf_persona():
    got = run_python("import json\nimport hf_persona\nfrom transformers import AutoConfig\n" + textwrap.dedent(REGISTERED))
    assert got == {"registered": list(MODEL_TYPES), "errors": []}


def test_models_reach_the_auto_classes_when_a_model_module_imports_transformers_first():
    # the first import of transformers happens inside hf_persona.models.pal: registration (which imports
    # every model module, that one included) waits until that import has finished
    got = run_python("import json\nfrom hf_persona.models.pal import PALConfig\n" + textwrap.dedent(REGISTERED))
    assert got == {"registered": list(MODEL_TYPES), "errors": []}
