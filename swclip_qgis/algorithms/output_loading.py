"""How an algorithm's output layers are loaded: styled, and placed together in their run's layer
tree group (polygons below points and lines), once Processing has loaded them."""

from __future__ import annotations

from collections import deque
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
)

from ..layers import apply_style, group_of, new_group, place_in_group

# Processing keeps only a pointer to a layer post-processor and runs a CLONE of the algorithm
# (QgsProcessingAlgorithm::run), deleted before the results are loaded: the post-processors must
# outlive it. The most recent ones are kept here; a run loads its outputs long before 100 more.
_LIVE_POST_PROCESSORS: deque = deque(maxlen=100)


class OutputGroup:
    """The layer tree group that one run's outputs share: the group of the layer
    ``follow_layer_id`` (the predictions they were made from) when that is in one, else a new
    group ``name`` at the top, created when the first output is loaded."""

    def __init__(self, name: str, follow_layer_id: str | None = None) -> None:
        self.name = name
        self.follow_layer_id = follow_layer_id
        self._group = None

    def resolve(self, project: Any):
        if self._group is None:
            self._group = group_of(project, self.follow_layer_id) or new_group(project, self.name)
        return self._group


class StyleOnLoad(QgsProcessingLayerPostProcessorInterface):
    """Styles an output layer once Processing has loaded it and puts it in its run's group,
    polygons below points and lines (:func:`~swclip_qgis.layers.place_in_group`).

    Processing keeps only a pointer to a post-processor, so the Python object is kept alive in
    ``_LIVE_POST_PROCESSORS``.
    """

    def __init__(self, style_name: str, group: OutputGroup) -> None:
        super().__init__()
        self.style_name = style_name
        self.group = group

    def postProcessLayer(
        self, layer: Any, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        if layer is None:
            return
        apply_style(layer, self.style_name)
        project = context.project()
        if project is not None:
            place_in_group(project, layer, self.group.resolve(project))


def style_when_loaded(
    context: QgsProcessingContext, dest_id: str, style_name: str, group: OutputGroup
) -> None:
    """Style the output ``dest_id`` and put it in ``group`` once Processing loads it (nothing
    when the run does not load it)."""
    if not context.willLoadLayerOnCompletion(dest_id):
        return
    processor = StyleOnLoad(style_name, group)
    _LIVE_POST_PROCESSORS.append(processor)
    context.layerToLoadOnCompletionDetails(dest_id).setPostProcessor(processor)
