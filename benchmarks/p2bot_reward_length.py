"""Which self-play reward follows reply length? Rewards of sampled self-play turns against their length.

Plays self-play episodes exactly as training does (the Transmitter as agent and as frozen user, agent
replies sampled, at most 32 new tokens, 3 turns) from the first ``--seeds`` training seed dialogues,
scores every agent turn with the four P2Bot rewards (paper weights) and reports, per reward, its mean,
standard deviation, weighted standard deviation (how much of the advantage it can drive) and Spearman
correlation with the turn's length in tokens, plus the share of turns that ended with ``<eos>``.

    OMP_NUM_THREADS=1 python benchmarks/p2bot_reward_length.py --model /tmp/p2bot_kl/sft --receiver runs/receiver_40min
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ranks(x):
    """1-based ranks, tied values sharing their average rank."""
    import numpy as np

    _, inverse, counts = np.unique(np.asarray(x, dtype=float), return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    return (last - (counts - 1) / 2.0)[inverse]


def spearman(a, b) -> float:
    """Spearman rank correlation: the Pearson correlation of the ranks (nan when either side is constant)."""
    import numpy as np

    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="Transmitter folder (agent and frozen user)")
    ap.add_argument("--receiver", default="minilm", help="Receiver folder for RS.3 (default: zero-shot MiniLM)")
    ap.add_argument("--data", default=None, help="PERSONA-CHAT both-personas file (default: shared data)")
    ap.add_argument("--seeds", type=int, default=48, help="training seed dialogues to play")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "p2bot_reward_length.json"))
    a = ap.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from hf_persona.data import shared_data_file
    from hf_persona.evaluation import format_table
    from hf_persona.training.selfplay import (PAPER_WEIGHTS, REWARD_NAMES, build_rewards, episode_columns,
                                              persona_scorer_from_receiver, selfplay_seeds, simulate_episodes)
    from hf_persona.training.transmitter import load_transmitter, training_dialogues
    from hf_persona.utils import atomic_write_json, command_line, machine_description, set_seed

    data = shared_data_file(a.data)
    set_seed(a.seed)
    seeds = selfplay_seeds(training_dialogues(data, 800))[: a.seeds]
    agent, tok = load_transmitter(a.model)
    user, _ = load_transmitter(a.model)
    agent.eval()
    user.eval()
    tok.padding_side = "left"
    rewards = build_rewards(REWARD_NAMES, user, tok, persona_scorer=persona_scorer_from_receiver(a.receiver))
    episodes = []
    for start in range(0, len(seeds), 16):
        episodes += simulate_episodes(agent, user, tok, seeds[start:start + 16], turns=3, agent_decoding="sample",
                                      max_new_tokens=a.max_new_tokens)
    cols = episode_columns(episodes)
    completions = cols.pop("completion")
    responses = [r for e in episodes for r in e["response_ids"]]
    lengths = np.array([len(r) for r in responses], dtype=float)
    ended = np.array([bool(r) and r[-1] == tok.eos_token_id for r in responses])

    result = {"model": a.model, "receiver": a.receiver, "data": os.path.basename(data), "seed_dialogues": len(seeds),
              "turns": len(completions), "mean_tokens": float(lengths.mean()), "ended_with_eos": float(ended.mean()),
              "max_new_tokens": a.max_new_tokens, "weights": dict(PAPER_WEIGHTS)}
    total = np.zeros(len(completions))
    rows = []
    for name, fn in zip(REWARD_NAMES, rewards):
        values = np.array(fn([""] * len(completions), completions, **cols), dtype=float)
        total += PAPER_WEIGHTS[name] * values
        stats = {"mean": float(values.mean()), "std": float(values.std()),
                 "weighted_std": float(PAPER_WEIGHTS[name] * values.std()),
                 "spearman_with_length": spearman(values, lengths)}
        result[name] = stats
        rows.append({"reward": name, **stats})
    result["total"] = {"std": float(total.std()), "spearman_with_length": spearman(total, lengths)}
    rows.append({"reward": "weighted total", "mean": float(total.mean()), **result["total"]})
    result["machine"] = machine_description()
    result["command"] = command_line("benchmarks/p2bot_reward_length.py", argv)
    atomic_write_json(a.out, result)
    print(format_table(rows))
    print(f"{len(completions)} turns, {lengths.mean():.1f} tokens on average, {100 * ended.mean():.0f}% ended with <eos>")


if __name__ == "__main__":
    main()
