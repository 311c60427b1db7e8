"""A small accelerated VGG-16 plan for the export tests: channel and spatial_channel layers."""

from accel_det.models.vgg import vgg16_features
from accel_det.nn import CHANNEL, SPATIAL_CHANNEL
from accel_det.solver import conv_specs


def mixed_plan(width: float) -> dict:
    """conv1_1 kept; the other layers alternately channel (d' = d/2) and spatial_channel
    (d' = d/2, d'' = c)."""
    layers = {}
    for i, spec in enumerate(conv_specs(vgg16_features(width), (32, 32))):
        entry = {
            "structure": "original",
            "rank": None,
            "spatial_rank": None,
            "in_channels": spec.in_channels,
            "out_channels": spec.out_channels,
        }
        if i:
            structure = CHANNEL if i % 2 else SPATIAL_CHANNEL
            entry.update(
                structure=structure,
                rank=max(1, spec.out_channels // 2),
                spatial_rank=spec.in_channels if structure == SPATIAL_CHANNEL else None,
            )
        layers[spec.name] = entry
    return {"format": "accel-det-plan/1", "method": "test", "layers": layers}
