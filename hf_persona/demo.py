"""The ``hf-persona demo`` body.

By default (:func:`run_pipeline_demo`) the demo holds a short, scripted support conversation
(:data:`SEEKER_TURNS`) with :class:`hf_persona.pipeline.SupportPipeline` over the shipped
checkpoints, no training: each turn prints as ``hf-persona chat`` prints it (inferred persona,
strategy and α, the reply, CoBERT's ranking, the Receiver's score, seconds). The report folder holds
``README.md`` (conversation table, timings, persona timeline), ``summary.json`` (with
``seconds_to_first_reply``, counted from the start of the command's process, model loading included,
and ``seconds_total``), the Receiver heat-map and ``persona_timeline.png``. ``quick=True`` builds
tiny random models in ``OUT/runs`` instead (seconds, nothing downloaded; the replies are noise).

``train=True`` (:func:`run_training_demo`, ``hf-persona demo --train``) is the older demo: train
small MiniLM models on the embedded sample, then hold the conversation with them. Stages run in
order and independently: the registered plugins and sample statistics; CoBERT; the Receiver; the
persona extractor and the PESConv annotation; PAL. A stage whose model code is not in the library
yet (its training module cannot be imported) prints one line saying so and the demo goes on; any
other error from a model that is there stops the demo with its traceback. The conversation uses
whatever was trained. Its report: ``README.md`` (summary and tables), ``training_curves.png`` (loss
per step from each run's ``trainer_state.json``) and the Receiver heat-maps. With ``quick`` it swaps
the MiniLM backbone for a tiny random BERT (MiniLM tokenizer) and trains a couple of steps per
model: the whole frame runs in seconds, for smoke tests; its numbers mean nothing.
"""

from __future__ import annotations

import importlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from .pipeline import candidate_pool, merge_persona, strategy_first_processor
from .tiny import tiny_bert
from .training.common import trainer_state
from .utils import atomic_write_bytes, atomic_write_text, get_logger, set_seed

logger = get_logger(__name__)

#: The seeker's side of the scripted support conversation (the supporter's side is generated).
SEEKER_TURNS = (
    "hi , i have been feeling really stressed lately and i can not sleep .",
    "i lost my job at the factory last month and i keep worrying about money .",
    "i have two kids and i am scared i can not pay for their school this year .",
    "i used to go running every morning but i stopped when all this started .",
    "my wife says i should talk to someone , so here i am .",
)

#: Training budgets per stage: optimizer steps (a cap) and wall-clock minutes (the run stops
#: at whichever comes first). The full demo stays within about 10 minutes on 2 CPU cores;
#: ``quick`` runs the frame in seconds.
BUDGETS = {
    "full": {"cobert": 40, "receiver": 40, "persona_extractor": 80, "pal": 80, "batch_size": 8,
             "minutes": {"cobert": 1.25, "receiver": 1.25, "persona_extractor": 1.75, "pal": 1.75},
             "esconv_dialogues": 12, "eval_dialogues": None, "turns": 5, "max_new_tokens": None},
    "quick": {"cobert": 2, "receiver": 2, "persona_extractor": 2, "pal": 2, "batch_size": 4,
              "minutes": {"cobert": None, "receiver": None, "persona_extractor": None, "pal": None},
              "esconv_dialogues": 4, "eval_dialogues": 4, "turns": 3, "max_new_tokens": 8},
}


class NotLanded(Exception):
    """A model's code is not in the library yet (its module or entry function is missing)."""

    def __init__(self, model: str, reason: str):
        self.model, self.reason = model, reason
        super().__init__(f"{model} has not landed yet ({reason}); skipping it")


def landed(model: str, module: str, *names: str):
    """Import ``module`` and return the attributes ``names``; :class:`NotLanded` when it is not there.

    Only the absence of ``module`` itself (or of a parent package) or of one of ``names`` counts
    as "not landed"; an ImportError raised *inside* an existing module is a real error and
    propagates.
    """
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise NotLanded(model, f"no module {module}") from exc
        raise
    missing = [n for n in names if not hasattr(mod, n)]
    if missing:
        raise NotLanded(model, f"{module} has no {', '.join(missing)}")
    values = tuple(getattr(mod, n) for n in names)
    return values[0] if len(values) == 1 else values


@dataclass
class DemoContext:
    out: Path
    quick: bool
    backbone: str
    budgets: dict
    models: dict = field(default_factory=dict)  # name -> loaded object
    runs: dict = field(default_factory=dict)  # name -> output folder of its training run
    training_rows: list = field(default_factory=list)
    sections: list = field(default_factory=list)  # markdown pieces of the report
    not_landed: list = field(default_factory=list)
    plots: list = field(default_factory=list)

    @property
    def work(self) -> Path:
        return self.out / "runs"


def _say(text: str = "") -> None:
    click.echo(text)


def _header(title: str) -> None:
    _say(f"\n== {title} ==")


# ---------------------------------------------------------------------------------------- stages

def section_overview(out_dir: Path) -> str:
    """Registered plugins and statistics of the embedded sample."""
    from . import list_plugins
    from .data import dialogue_statistics, read_dialogues, sample_path
    from .evaluation import format_table

    listing = list_plugins()
    lines = [f"{kind}: {', '.join(listing[kind]) or '(none)'}" for kind in ("models", "rewards", "logits_processors", "datasets")]
    rows = []
    for name in ("personachat", "esconv"):
        fmt, ds = read_dialogues(sample_path(name))
        rows.append(dialogue_statistics(ds, fmt))
    table = format_table(rows)
    click.echo("== Registered plugins ==\n" + "\n".join(lines))
    click.echo("\n== Embedded sample ==\n" + table)
    return "## Plugins\n\n" + "\n".join(f"- {l}" for l in lines) + "\n\n## Embedded sample\n\n```\n" + table + "\n```\n"


def _personachat_splits(ctx: DemoContext):
    from .data import read_personachat, sample_path, split_by_dialogue

    ds = read_personachat(sample_path("personachat"))
    train, dev = split_by_dialogue(ds, test_fraction=0.2, seed=0)
    if ctx.budgets["eval_dialogues"]:
        dev = dev.select(range(min(len(dev), ctx.budgets["eval_dialogues"])))
    return train, dev


def _record_run(ctx: DemoContext, name: str, run_dir: Path, seconds: float, extra: dict | None = None) -> None:
    state = trainer_state(run_dir)
    history = state.get("log_history", []) if state else []
    losses = [e["loss"] for e in history if "loss" in e]
    row = {"model": name, "steps": state.get("global_step") if state else None,
           "first loss": losses[0] if losses else None, "last loss": losses[-1] if losses else None,
           "seconds": f"{seconds:.1f}"}
    row.update(extra or {})
    ctx.training_rows.append(row)
    ctx.runs[name] = run_dir


def stage_cobert(ctx: DemoContext) -> None:
    train_cobert = landed("CoBERT", "hf_persona.training.cobert", "train_cobert")
    _header("Training CoBERT (persona-aware response selection) on the PERSONA-CHAT sample")
    train, dev = _personachat_splits(ctx)
    run_dir = ctx.work / "cobert"
    started = time.time()
    model = train_cobert(train, run_dir, backbone=ctx.backbone, eval_ds=dev, max_steps=ctx.budgets["cobert"],
                         budget_minutes=ctx.budgets["minutes"]["cobert"], batch_size=ctx.budgets["batch_size"],
                         warmup_ratio=0.0, eval_examples=8 if ctx.quick else 40, eval_candidates=10, seed=0, resume=False,
                         save_total_limit=1).model
    model.eval()
    ctx.models["cobert"] = model
    summary = _read_json(run_dir / "train_summary.json")
    hits = summary.get("best_eval_hits@1")
    _record_run(ctx, "CoBERT", run_dir, time.time() - started,
                {"dev metric": f"hits@1/10 = {hits:.3f}" if isinstance(hits, (int, float)) else ""})


def stage_receiver(ctx: DemoContext) -> None:
    train_receiver = landed("Receiver", "hf_persona.training.receiver", "train_receiver")
    _header("Training the Receiver (P2Bot persona perception) on the PERSONA-CHAT sample")
    train, dev = _personachat_splits(ctx)
    run_dir = ctx.work / "receiver"
    started = time.time()
    result = train_receiver(train, run_dir, backbone=ctx.backbone, eval_ds=dev,
                            max_steps=ctx.budgets["receiver"], batch_size=ctx.budgets["batch_size"],
                            logging_steps=1 if ctx.quick else 5, seed=0, resume=False,
                            progress=True, budget_minutes=ctx.budgets["minutes"]["receiver"],
                            eval_negatives=3 if ctx.quick else 7)
    model = result.model.eval()
    ctx.models["receiver"] = model
    shown = {k: v for k, v in result.items() if "hits" in k and isinstance(v, (int, float))}
    _record_run(ctx, "Receiver", run_dir, time.time() - started,
                {"dev metric": ", ".join(f"{k} = {v:.3f}" for k, v in sorted(shown.items())[:1])})
    # Paper Figure 6: the relevance grid of a held-out speaker's utterances vs their own persona.
    row = dev[0]
    utterances = [u for u, s in zip(row["utterances"], row["speakers"]) if s == "you"][:4]
    persona = list(row["your_persona"])
    path = _heatmap(ctx, model, utterances, persona, "receiver_heatmap.png",
                    "Receiver relevance U: held-out PERSONA-CHAT speaker vs own persona")
    _say(f"Receiver heat-map written to {path}")


def stage_persona_extractor(ctx: DemoContext) -> None:
    train_extractor, PersonaExtractor = landed("Persona extractor", "hf_persona.training.persona_extractor",
                                               "train_persona_extractor", "PersonaExtractor")
    _header("Training the persona extractor (utterances -> persona sentences) on the PERSONA-CHAT sample")
    from .data import sample_path

    run_dir = ctx.work / "persona_extractor"
    started = time.time()
    summary = train_extractor(run_dir, [sample_path("personachat")], backbone=ctx.backbone, dev_from=29,
                              max_steps=ctx.budgets["persona_extractor"], batch_size=ctx.budgets["batch_size"],
                              budget_minutes=ctx.budgets["minutes"]["persona_extractor"], warmup_steps=5,
                              eval_steps=max(1, ctx.budgets["persona_extractor"] // 2), max_dev_examples=16,
                              logging_steps=1 if ctx.quick else 5, report_eval=False, num_beams=1, resume=False,
                              seed=0, progress=True)
    # greedy and at most 32 new tokens: the annotation below runs it three times per ESConv dialogue
    ctx.models["persona_extractor"] = PersonaExtractor.from_pretrained(
        run_dir, num_beams=1, max_new_tokens=ctx.budgets["max_new_tokens"] or 32)
    dev_loss = summary.get("dev_loss")
    _record_run(ctx, "Persona extractor", run_dir, time.time() - started,
                {"dev metric": f"dev loss = {dev_loss:.3f}" if isinstance(dev_loss, (int, float)) else ""})

    annotate = landed("PESConv annotation", "hf_persona.data.pesconv", "annotate")
    _header("Annotating the ESConv sample with inferred seeker personas (PESConv)")
    out = ctx.work / "pesconv"
    started = time.time()
    info = annotate(ctx.models["persona_extractor"], sample_path("esconv"), out, batch_size=16, overwrite=True,
                    max_dialogues=ctx.budgets["esconv_dialogues"], progress=True)
    ctx.runs["pesconv"] = out
    shown = {k: v for k, v in info.items() if isinstance(v, (int, float))}
    _say("PESConv: " + ", ".join(f"{k} = {v}" for k, v in shown.items()) + f" ({time.time() - started:.1f}s)")


def stage_pal(ctx: DemoContext) -> None:
    train_pal = landed("PAL", "hf_persona.training.pal", "train_pal")
    load_pal = landed("PAL", "hf_persona.evaluation.pal", "load_pal_for_eval")
    if "pesconv" not in ctx.runs:
        raise NotLanded("PAL", "it trains on PESConv, which needs the persona extractor")
    _header("Training PAL (persona-augmented supporter) on the annotated ESConv sample")
    run_dir = ctx.work / "pal"
    started = time.time()
    steps = ctx.budgets["pal"]
    summary = train_pal(ctx.runs["pesconv"], run_dir, backbone=ctx.backbone, max_steps=steps,
                        budget_minutes=ctx.budgets["minutes"]["pal"],
                        batch_size=ctx.budgets["batch_size"], warmup_steps=min(10, steps // 5),
                        eval_steps=max(1, steps // 2), max_eval_examples=16,
                        logging_steps=1 if ctx.quick else 5, seed=0, resume=False, progress=True)
    model, tokenizer, _ = load_pal(run_dir)
    ctx.models["pal"] = (model, tokenizer)
    valid = summary.get("valid_loss")
    _record_run(ctx, "PAL", run_dir, time.time() - started,
                {"dev metric": f"valid loss = {valid:.3f}" if isinstance(valid, (int, float)) else ""})


# ---------------------------------------------------------------------------------- conversation

def _pal_reply(ctx: DemoContext, dialogue: list[str], speakers: list[str], strategies: list[str],
               persona: list[str], seed: int):
    """PAL's reply decoded with strategy contrastive decoding (paper Table 2 alphas, the paper's
    sampling settings): (text, strategy, alpha)."""
    import torch
    from transformers import LogitsProcessorList

    from .models.pal import build_pal_example, resolve_strategy_alphas
    from .training.pal import PAPER_DECODING, VariantCollator

    model, tokenizer = ctx.models["pal"]
    example = build_pal_example(dialogue, speakers, strategies, persona, tokenizer=tokenizer,
                                max_source_length=256, max_persona_length=96)
    batch = VariantCollator(tokenizer, "pal")([example])
    batch.pop("labels", None)
    eos = model.generation_config.eos_token_id
    eos_ids = eos if isinstance(eos, (list, tuple)) else [eos]
    # BERT's reserved "[unusedN]" vocabulary entries are never text either
    reserved = [i for t, i in tokenizer.get_vocab().items() if t.startswith("[unused") and t.endswith("]")]
    # the first token is a strategy (PAL's output format, labels = [strategy] + response + eos); later
    # tokens are no strategy nor another special token except eos. It runs after the strategy
    # contrastive processor, so the strategy is still PAL's (persona-contrasted) choice among the eight.
    banned_later = sorted({*tokenizer.all_special_ids, *reserved} - set(eos_ids))
    processors = LogitsProcessorList([
        model.strategy_contrast_processor(None),  # per-strategy alpha, paper Table 2
        strategy_first_processor(model.config.strategy_token_ids, banned_later),
    ])
    settings = dict(PAPER_DECODING)
    if ctx.budgets["max_new_tokens"]:
        settings.update(max_new_tokens=ctx.budgets["max_new_tokens"], min_new_tokens=2)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(**batch, **settings, logits_processor=processors)
    strategy = model.strategies_of(out)[0]
    text = tokenizer.batch_decode(out, skip_special_tokens=True)[0].strip()
    table = resolve_strategy_alphas(None, model.config.strategy_alpha)
    return text, strategy or "(none)", table.get(strategy) if strategy else None


def run_conversation(ctx: DemoContext) -> list[dict]:
    """The scripted support conversation, turn by turn, with every model that was trained."""
    import torch

    from .data import ESCONV_STRATEGIES

    _header("A scripted support conversation")
    have = [k for k in ("persona_extractor", "pal", "cobert", "receiver") if k in ctx.models]
    if not have:
        _say("No model was trained, so there is no conversation to show.")
        return []
    pool = candidate_pool(18)
    dialogue: list[str] = []
    speakers: list[str] = []
    strategies: list[str] = []
    persona: list[str] = []
    seeker_said: list[str] = []
    rows = []
    for turn, text in enumerate(SEEKER_TURNS[: ctx.budgets["turns"]], start=1):
        dialogue.append(text)
        speakers.append("usr")
        strategies.append("")
        seeker_said.append(text)
        _say(f"\n[turn {turn}] seeker: {text}")
        row = {"turn": turn, "seeker": text}
        if "persona_extractor" in ctx.models:
            if len(seeker_said) >= 3:  # PESConv rule: infer from the third seeker utterance on
                merge_persona(persona, ctx.models["persona_extractor"].extract([seeker_said])[0])
            row["persona so far"] = " | ".join(persona) if persona else "(none yet)"
            _say(f"  inferred seeker persona: {row['persona so far']}")
        reply, strategy = None, ""
        if "pal" in ctx.models:
            reply, strategy, alpha = _pal_reply(ctx, dialogue, speakers, strategies, persona, seed=turn)
            row.update({"strategy": strategy, "alpha": alpha, "PAL reply": reply})
            _say(f"  PAL strategy: {strategy} (alpha = {alpha})")
            _say(f"  PAL reply (strategy contrastive decoding): {reply}")
        if "cobert" in ctx.models:
            candidates = pool[(turn - 1) % len(pool):][:4]
            if reply:
                candidates = [reply] + [c for c in candidates if c != reply][:3]
            with torch.no_grad():
                scores = ctx.models["cobert"].rank(dialogue, persona, candidates)
            order = sorted(range(len(candidates)), key=lambda i: -float(scores[i]))
            _say("  CoBERT ranking of candidate replies (seeker persona as persona input):")
            for rank, i in enumerate(order, start=1):
                _say(f"    {rank}. {float(scores[i]):7.3f}  {candidates[i]}")
            row["CoBERT top"] = candidates[order[0]]
            row["CoBERT top score"] = round(float(scores[order[0]]), 3)
            if reply is None:
                reply = candidates[order[0]]
        if "receiver" in ctx.models:
            if persona:
                with torch.no_grad():
                    score = ctx.models["receiver"].score(seeker_said, persona)
                row["receiver score"] = round(float(score), 3)
                _say(f"  Receiver persona-perception score (seeker utterances vs inferred persona): {score:.3f}")
            else:
                row["receiver score"] = None
                _say("  Receiver: no persona inferred yet, nothing to score")
        if reply is not None:
            dialogue.append(reply)
            speakers.append("sys")
            strategies.append(strategy if strategy in ESCONV_STRATEGIES else "")  # CoBERT's pick: none
            _say(f"  supporter: {reply}")
        rows.append(row)
    if "receiver" in ctx.models and persona:
        path = _heatmap(ctx, ctx.models["receiver"], seeker_said, persona, "receiver_heatmap_conversation.png",
                        "Receiver relevance U: the seeker vs the inferred persona")
        _say(f"\nReceiver heat-map of the conversation written to {path}")
    return rows


# ---------------------------------------------------------------------------------------- report

def _read_json(path) -> dict:
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def plot_training_curves(runs: dict, out_path) -> Path | None:
    """One panel per run: training loss (and eval loss when logged) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {}
    for name, run_dir in runs.items():
        history = trainer_state(run_dir).get("log_history", [])
        train = [(e["step"], e["loss"]) for e in history if "loss" in e]
        evals = [(e["step"], e["eval_loss"]) for e in history if "eval_loss" in e]
        if train or evals:
            curves[name] = (train, evals)
    if not curves:
        return None
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.2), squeeze=False)
    for ax, (name, (train, evals)) in zip(axes[0], curves.items()):
        if train:
            ax.plot(*zip(*train), marker=".", label="train loss")
        if evals:
            ax.plot(*zip(*evals), marker="o", label="eval loss")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out_path = Path(out_path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(out_path, buffer.getvalue())
    return out_path


def _heatmap(ctx: DemoContext, model, utterances, persona, name: str, title: str) -> Path:
    import torch

    render = landed("Receiver heat-map", "hf_persona.evaluation.plots", "render_relevance_heatmap")
    with torch.no_grad():
        grid = model.relevance(utterances, persona)
    path = render(grid, utterances, persona, ctx.out / name, title=title)
    ctx.plots.append((title, Path(path).name))
    return Path(path)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(rows: list[dict]) -> str:
    if not rows:
        return "(none)"
    columns = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_report(ctx: DemoContext, conversation: list[dict], seconds: float) -> Path:
    from .evaluation import format_table

    curves = plot_training_curves({r["model"]: ctx.runs[r["model"]] for r in ctx.training_rows}, ctx.out / "training_curves.png")
    if curves is not None:
        ctx.plots.insert(0, ("Training curves (loss per step, from trainer_state.json)", curves.name))
    parts = ["# hf_persona demo\n",
             f"{'Quick smoke run (tiny random backbone, a couple of steps: numbers mean nothing)' if ctx.quick else 'Backbone: packaged all-MiniLM-L6-v2'}; "
             f"total time {seconds:.0f}s.\n"]
    parts += ctx.sections
    parts.append("## Training\n\n" + _md_table(ctx.training_rows) + "\n")
    if ctx.not_landed:
        parts.append("## Not landed yet\n\n" + "\n".join(f"- {m}" for m in ctx.not_landed) + "\n")
    parts.append("## Conversation\n\n" + _md_table(conversation) + "\n")
    if ctx.plots:
        parts.append("## Plots\n\n" + "\n\n".join(f"![{title}]({name})" for title, name in ctx.plots) + "\n")
    report = ctx.out / "README.md"
    atomic_write_text(report, "\n".join(parts))
    atomic_write_text(ctx.out / "summary.json", json.dumps(
        {"quick": ctx.quick, "seconds": round(seconds, 1), "training": ctx.training_rows,
         "conversation": conversation, "not_landed": ctx.not_landed,
         "plots": [name for _, name in ctx.plots]}, indent=2, default=str) + "\n")
    _header("Summary")
    if ctx.training_rows:
        _say(format_table(ctx.training_rows))
    if conversation:
        short = [{"turn": r["turn"], "strategy": r.get("strategy", ""), "alpha": r.get("alpha", ""),
                  "persona sentences": len(r["persona so far"].split(" | ")) if r.get("persona so far", "(none yet)") != "(none yet)" else 0,
                  "receiver": r.get("receiver score"), "reply": (r.get("PAL reply") or r.get("CoBERT top") or "")[:60]}
                 for r in conversation]
        _say("\n" + format_table(short))
    for model in ctx.not_landed:
        _say(f"not landed: {model}")
    return report


STAGES = (stage_cobert, stage_receiver, stage_persona_extractor, stage_pal)


def run_training_demo(out_dir="demo_report", quick: bool = False, backbone: str | None = None) -> Path:
    """``hf-persona demo --train``: train small models, hold the conversation with them, write the
    report folder; returns the folder."""
    started = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(0)
    if backbone is None:
        backbone = tiny_bert(out / "runs" / "tiny_backbone") if quick else "minilm"
    ctx = DemoContext(out=out, quick=quick, backbone=backbone, budgets=BUDGETS["quick" if quick else "full"])
    ctx.sections.append(section_overview(out))
    for stage in STAGES:
        try:
            stage(ctx)
        except NotLanded as exc:
            ctx.not_landed.append(f"{exc.model}: {exc.reason}")
            _say(f"\n-- {exc}")
    try:
        conversation = run_conversation(ctx)
    except NotLanded as exc:
        ctx.not_landed.append(f"{exc.model}: {exc.reason}")
        _say(f"\n-- {exc}")
        conversation = []
    report = write_report(ctx, conversation, time.time() - started)
    _say(f"\nReport written to {report} ({time.time() - started:.0f}s)")
    return out


# ------------------------------------------------------------------ the shipped supporter (default)

def process_started() -> float:
    """When this process started, as a :func:`time.time` value (Linux ``/proc``; elsewhere: now)."""
    import os

    now = time.time()
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime, in clock ticks
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        age = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return now
    return now - age if 0 <= age < 86400 else now


def persona_timeline(turns) -> list[dict]:
    """``[{"sentence", "first_turn", "turns"}]``: each persona sentence inferred during the
    conversation (in the order inferred), the turn that first inferred it and every turn whose
    persona holds it."""
    rows: dict[str, dict] = {}
    for number, turn in enumerate(turns, start=1):
        for sentence in turn.persona:
            row = rows.setdefault(sentence, {"sentence": sentence, "first_turn": number, "turns": []})
            row["turns"].append(number)
    return list(rows.values())


def timeline_table(timeline: list[dict], n_turns: int) -> str:
    """The persona timeline as a markdown table: one row per sentence, a dot per turn that holds it."""
    if not timeline:
        return "(no persona inferred)"
    head = "| persona sentence | first inferred at turn | " + " | ".join(str(t) for t in range(1, n_turns + 1)) + " |"
    lines = [head, "|---|---|" + "---|" * n_turns]
    for row in timeline:
        marks = " | ".join("●" if t in row["turns"] else "" for t in range(1, n_turns + 1))
        lines.append(f"| {_cell(row['sentence'])} | {row['first_turn']} | {marks} |")
    return "\n".join(lines)


def plot_persona_timeline(timeline: list[dict], n_turns: int, out_path) -> Path | None:
    """One row per persona sentence, a dot at each turn whose inferred persona holds it (PNG);
    None when nothing was inferred."""
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not timeline:
        return None
    fig = Figure(figsize=(3.5 + 0.7 * n_turns, 1.2 + 0.45 * len(timeline)), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for y, row in enumerate(timeline):
        ax.plot(row["turns"], [y] * len(row["turns"]), "o-", color="tab:blue")
        ax.plot([row["first_turn"]], [y], "o", color="tab:orange", markersize=9)
    ax.set_yticks(range(len(timeline)))
    ax.set_yticklabels([textwrap.shorten(row["sentence"], 48, placeholder=" …") for row in timeline], fontsize=8)
    ax.invert_yaxis()
    ax.set_xticks(range(1, n_turns + 1))
    ax.set_xlim(0.5, n_turns + 0.5)
    ax.set_xlabel("seeker turn (orange: first inferred)")
    ax.set_title("Persona timeline: what the extractor inferred, turn by turn", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    out_path = Path(out_path)
    atomic_write_bytes(out_path, buffer.getvalue())
    return out_path


def run_pipeline_demo(out_dir="demo_report", quick: bool = False, seed: int = 0, started: float | None = None,
                      pipeline=None, turns: int | None = None) -> Path:
    """The default demo: the scripted conversation (:data:`SEEKER_TURNS`) with
    :class:`hf_persona.pipeline.SupportPipeline` over the shipped checkpoints (``quick``: tiny random
    models built in ``OUT/runs``), printed turn by turn as ``hf-persona chat`` prints it; then the
    report folder. ``started``: the :func:`time.time` to count ``seconds_to_first_reply`` from (the
    command passes its process start; default: now). ``pipeline``: an already loaded pipeline
    (tests); ``turns``: only the first turns of the script."""
    from .commands.chat import Ticker, load_pipeline, models_label, quiet_run

    started = time.time() if started is None else started
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tiny = out / "runs" if quick else None
    label = models_label(tiny) if pipeline is None else "the given pipeline"
    ticker = Ticker(label).start() if pipeline is None else None  # before torch is imported
    try:
        with quiet_run():
            if ticker is not None:
                pipeline = load_pipeline(tiny)
                ticker.stop()
            return _scripted_conversation(out, pipeline, quick=quick, seed=seed, started=started, turns=turns,
                                          label=label, load_seconds=ticker.seconds if ticker else 0.0)
    finally:
        if ticker is not None:
            ticker.stop(ok=False)  # a load that failed: end the ticking line (no-op after a load)


def _scripted_conversation(out: Path, pipeline, quick: bool, seed: int, started: float, turns: int | None,
                           label: str, load_seconds: float) -> Path:
    from .commands.chat import render_turn, reply_rank
    from .evaluation import format_table

    pipeline.reset()
    _header("A scripted support conversation (you can hold your own: hf-persona chat)")
    results, first_reply = [], None
    for number, text in enumerate(SEEKER_TURNS[:turns], start=1):
        _say(f"\n[turn {number}] seeker> {text}")
        turn = pipeline.respond(text, seed=seed)
        for line in render_turn(turn):
            _say(line)
        if first_reply is None:
            first_reply = time.time() - started
        results.append(turn)
    plots = []
    heatmap = pipeline.heatmap(out / "receiver_heatmap.png")
    if heatmap is not None:
        plots.append(("Receiver relevance: the seeker's utterances vs the inferred persona", heatmap.name))
    timeline = persona_timeline(results)
    timeline_png = plot_persona_timeline(timeline, len(results), out / "persona_timeline.png")
    if timeline_png is not None:
        plots.append(("Persona timeline", timeline_png.name))
    total = time.time() - started
    rows = []
    for number, turn in enumerate(results, start=1):
        rank = reply_rank(turn)
        rows.append({"turn": number, **turn.to_dict(),
                     "reply_rank": rank, "candidates": len(turn.ranking)})
    summary = {"mode": "quick (tiny random models: the replies are noise)" if quick else "shipped checkpoints",
               "models": label, "seed": seed,
               "seconds_loading": round(load_seconds, 2),
               "seconds_to_first_reply": None if first_reply is None else round(first_reply, 2),
               "seconds_total": round(total, 2),
               "turns": rows, "persona_timeline": timeline, "plots": [name for _, name in plots]}
    report = _write_pipeline_report(out, summary, timeline, plots)
    _header("Summary")
    if rows:
        _say(format_table([{"turn": r["turn"], "strategy": r["strategy"],
                            "alpha": "" if r["alpha"] is None else r["alpha"],
                            "rank": f"{r['reply_rank']}/{r['candidates']}" if r["reply_rank"] else "",
                            "receiver": "" if r["receiver_score"] is None else round(r["receiver_score"], 3),
                            "seconds": round(r["seconds"], 2), "reply": r["reply"][:50]} for r in rows]))
    first = "no reply" if first_reply is None else f"first reply after {first_reply:.1f}s"
    _say(f"\n{first} (loading {load_seconds:.1f}s); total {total:.1f}s")
    _say(f"Report written to {report}")
    return out


def _write_pipeline_report(out: Path, summary: dict, timeline, plots) -> Path:
    rows = summary["turns"]
    parts = ["# hf_persona demo\n",
             f"The scripted support conversation with the supporter pipeline (persona extractor -> PAL with "
             f"strategy contrastive decoding -> CoBERT -> Receiver): {summary['mode']}; {summary['models']}; "
             f"seed {summary['seed']}.\n"]
    table = [{"turn": r["turn"], "seeker": r["seeker"], "strategy": r["strategy"], "α": r["alpha"],
              "reply": r["reply"],
              "CoBERT rank": f"{r['reply_rank']}/{r['candidates']}" if r["reply_rank"] else None,
              "Receiver": r["receiver_score"],
              "persona so far": " / ".join(r["persona"]) or "(none yet)"} for r in rows]
    parts.append("## Conversation\n\n" + _md_table(table) + "\n")
    timings = [{"turn": r["turn"], **{f"{k} s": v for k, v in r["timings"].items()}, "turn s": round(r["seconds"], 2)}
               for r in rows]
    parts.append("## Timings\n\n"
                 f"- loading the models: {summary['seconds_loading']:.1f}s\n"
                 f"- from the start of the command to the first reply: "
                 f"{summary['seconds_to_first_reply'] if summary['seconds_to_first_reply'] is not None else '-'}s\n"
                 f"- the whole demo: {summary['seconds_total']:.1f}s\n\n" + _md_table(timings) + "\n")
    parts.append("## Persona timeline\n\nWhich seeker persona sentences were inferred by which turn.\n\n"
                 + timeline_table(timeline, len(rows)) + "\n")
    if plots:
        parts.append("## Plots\n\n" + "\n\n".join(f"![{title}]({name})" for title, name in plots) + "\n")
    report = out / "README.md"
    atomic_write_text(report, "\n".join(parts))
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str, ensure_ascii=False) + "\n")
    return report


def run_demo(out_dir="demo_report", quick: bool = False, backbone: str | None = None, train: bool = False,
             seed: int = 0, started: float | None = None, pipeline=None, turns: int | None = None) -> Path:
    """``hf-persona demo``: the shipped supporter on the scripted conversation
    (:func:`run_pipeline_demo`), or with ``train`` the old train-then-talk demo
    (:func:`run_training_demo`; ``backbone`` applies to it only). Returns the report folder."""
    if train:
        return run_training_demo(out_dir, quick=quick, backbone=backbone)
    return run_pipeline_demo(out_dir, quick=quick, seed=seed, started=started, pipeline=pipeline, turns=turns)
