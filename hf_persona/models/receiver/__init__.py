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
