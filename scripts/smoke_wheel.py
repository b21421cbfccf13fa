"""Smoke test of a plain ``pip install .`` (a built wheel, not an editable install).

Run it with the Python of a venv where the wheel is installed, from a folder outside the
repository (so that ``import hf_persona`` finds the installed copy): ``make test-newest`` does.
It checks that hf_persona comes from site-packages with its model-card templates (the package
``hf_persona.model_cards``, mapped from the repository's top-level ``model_cards/``: one card for
every registered model), builds PAL over a tiny random BERT with the packaged MiniLM tokenizer, and
decodes with the strategy contrastive processor (greedy, sampling, beams), comparing alpha = 0 with
plain ``generate`` token for token.
"""

import os
import sys
import tempfile
from importlib.metadata import version

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    import torch
    import transformers
    from transformers import AutoTokenizer, BertConfig, BertModel, LogitsProcessorList

    import hf_persona
    from hf_persona.backbones import resolve
    from hf_persona.models.pal import PALCollator, PALForConditionalGeneration, build_pal_example

    where = os.path.dirname(hf_persona.__file__)
    if "site-packages" not in where:
        print(f"hf_persona was imported from {where}, not from an installed wheel", file=sys.stderr)
        return 1
    import hf_persona.model_cards as cards_package
    from hf_persona.hub import available_card_templates
    from hf_persona.plugins import model_specs

    cards = set(available_card_templates())
    missing = sorted(spec.card for spec in model_specs().values()
                     if spec.card and not os.path.isabs(spec.card) and spec.card not in cards)
    if "site-packages" not in os.path.dirname(cards_package.__file__) or not cards or missing:
        print(f"the wheel's model cards are incomplete: {sorted(cards)} from {cards_package.__file__}; "
              f"missing {missing}", file=sys.stderr)
        return 1
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve("minilm"))
    with tempfile.TemporaryDirectory() as tiny:
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=128)
        BertModel(config).save_pretrained(tiny)
        tokenizer.save_pretrained(tiny)
        model = PALForConditionalGeneration.from_backbone(tiny, tokenizer).eval()
    examples = [
        build_pal_example(["i lost my job", "that sounds hard", "i cannot sleep"], ["usr", "sys", "usr"],
                          ["", "Reflection of feelings", ""], ["i am a teacher ."], tokenizer=tokenizer),
        build_pal_example(["my dog died"], ["usr"], None, [], tokenizer=tokenizer),
    ]
    batch = PALCollator(tokenizer)(examples)
    x = {k: batch[k] for k in ("input_ids", "attention_mask", "persona_input_ids", "persona_attention_mask")}
    settings = {
        "greedy": dict(do_sample=False),
        "sampling": dict(do_sample=True, top_k=10, temperature=0.7, num_return_sequences=2),
        "beams": dict(num_beams=3, do_sample=False),
    }
    for name, kw in settings.items():
        torch.manual_seed(1)
        plain = model.generate(**x, max_new_tokens=6, **kw)
        torch.manual_seed(1)
        zero = hf_persona.get_logits_processor("strategy_contrast", model=model, alpha=0.0)
        same = model.generate(**x, max_new_tokens=6, logits_processor=LogitsProcessorList([zero]), **kw)
        torch.manual_seed(1)
        high = model.strategy_contrast_processor(alpha="high", unknown_strategy_alpha=0.75)
        model.generate(**x, max_new_tokens=6, logits_processor=LogitsProcessorList([high]), **kw)
        if not torch.equal(plain, same):
            print(f"{name}: alpha = 0 differs from plain generate", file=sys.stderr)
            return 1
        if high.last_alpha is None or not bool((high.last_alpha == 0.75).all()):
            print(f"{name}: the contrastive processor did not run at alpha 0.75 ({high.last_alpha})", file=sys.stderr)
            return 1
    print(f"wheel smoke ok: hf-persona {version('hf-persona')} from {where}, transformers {transformers.__version__}, "
          f"torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
