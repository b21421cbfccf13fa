"""P2Bot's Receiver: a persona-perception scorer (Liu et al., 2020, section 4)."""

from .configuration_receiver import ReceiverConfig
from .modeling_receiver import (
    ReceiverModel,
    ReceiverOutput,
    ReceiverPreTrainedModel,
    aggregate,
    grids_from_vectors,
    masked_mean_pool,
    relevance_grid,
)

# save_pretrained also writes a usage README (text in: model.score / model.relevance)
from ...hub import add_usage_files_on_save  # noqa: E402

add_usage_files_on_save(ReceiverModel)

__all__ = [
    "ReceiverConfig",
    "ReceiverModel",
    "ReceiverOutput",
    "ReceiverPreTrainedModel",
    "aggregate",
    "grids_from_vectors",
    "masked_mean_pool",
    "relevance_grid",
]
