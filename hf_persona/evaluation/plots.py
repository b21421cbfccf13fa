"""Where hf_persona's plots live, rendered with matplotlib's Agg canvas (no display needed) into PNG files.

* :func:`render_relevance_heatmap`: the Receiver's relevance grid U (utterances × persona sentences),
  P2Bot's Figure 6 (``hf-persona receiver heatmap``, the demo).

matplotlib and numpy are imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from hf_persona.errors import HFPersonaError


def render_relevance_heatmap(U, utterances: Sequence[str], persona: Sequence[str], out, title: str | None = None) -> Path:
    """Draw the relevance grid ``U`` (utterances × persona sentences) as a labelled PNG (paper Figure 6)."""
    import io
    import textwrap

    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from hf_persona.utils import atomic_write_bytes

    U = np.asarray(U, dtype=float)
    if U.shape != (len(utterances), len(persona)):
        raise HFPersonaError(
            f"relevance grid has shape {U.shape} but there are {len(utterances)} utterances and {len(persona)} persona sentences"
        )

    def label(text):
        return "\n".join(textwrap.wrap(textwrap.shorten(text, 90, placeholder=" …"), 40)) or "(empty)"

    width = 3.5 + 1.6 * len(persona)
    height = 1.5 + 0.75 * len(utterances)
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(U, cmap="Blues", aspect="auto")
    ax.set_xticks(range(len(persona)))
    ax.set_xticklabels([label(p) for p in persona], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(utterances)))
    ax.set_yticklabels([label(u) for u in utterances], fontsize=8)
    ax.set_xlabel("persona sentence")
    ax.set_ylabel("utterance")
    span = (U.max() - U.min()) or 1.0
    for i in range(U.shape[0]):
        for j in range(U.shape[1]):
            dark = (U[i, j] - U.min()) / span > 0.6
            ax.text(j, i, f"{U[i, j]:.2f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
    fig.colorbar(image, ax=ax, label="relevance U = H·Wᵀ/√d")
    ax.set_title(title or "Receiver relevance scores")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    out = Path(out)
    atomic_write_bytes(out, buffer.getvalue())
    return out
