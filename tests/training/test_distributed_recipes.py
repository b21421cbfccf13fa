"""Every Trainer-based recipe under ``torchrun --nproc_per_node 2`` on CPU (gloo): one run of world
size 2, the summary printed and the model written once, each warning said once (by rank 0)."""

import json

import pytest

from tests.training.test_distributed import torchrun_cli

RECIPES = {
    "cobert": ["--eval-steps", "2"],
    "receiver": ["--eval-steps", "2"],
    "persona-extractor": ["--eval-steps", "2"],
    "critic": [],
    "ppg": ["--max-prompt-tokens", "80"],  # TRL's SFTTrainer
}
#: where each recipe's summary keeps its step count
STEP_KEY = {"critic": "steps", "ppg": "steps"}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_under_torchrun_is_one_run_of_world_size_two(recipe, tiny_bert_dir, tmp_path):
    from hf_persona.data import sample_path

    out = torchrun_cli(["train", recipe, "--data", sample_path("personachat"), "--backbone", tiny_bert_dir,
                     "--output-dir", tmp_path / "model", "--max-steps", 2, "--batch-size", 4,
                     "--json", tmp_path / "summary.json", *RECIPES[recipe]], tmp_path, 2)
    assert out.count("saved to") == 1, out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary[STEP_KEY.get(recipe, "global_step")] == 2
    assert summary["examples_seen"] == 2 * 4 * 2  # steps x rows per process x processes
    assert any((tmp_path / "model").glob("*.safetensors"))


def test_the_other_ranks_say_nothing_rank_0_says(tiny_bert_dir, tmp_path):
    """The CoBERT recipe warns about the small held-back set: once, not once per process."""
    from hf_persona.data import sample_path

    out = torchrun_cli(["train", "cobert", "--data", sample_path("personachat"), "--backbone", tiny_bert_dir,
                     "--output-dir", tmp_path / "model", "--max-steps", 1, "--batch-size", 4, "--eval-steps", 1],
                    tmp_path, 2, stderr=True)
    assert out.count("held-back set too small") == 1, out
