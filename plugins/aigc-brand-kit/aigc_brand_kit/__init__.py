"""aigc-brand-kit: brand consistency stages for aigc-pipeline.

- `brand.overlay` (image -> image): puts a logo or a line of text on every image.
- `brand.voice` (text -> text): checks text against a brand file (required, forbidden and tone
  words) and drops or flags what does not fit.

Registered through the entry-point group `aigc_pipeline` under the name `brand_kit`, so a
pipeline file says `plugins: [brand_kit]` (or simply uses the stage types).
"""

from __future__ import annotations

from aigc_pipeline import Stage, hookimpl

from .files import BrandKitError
from .overlay import OverlayParams, OverlayStage
from .voice import BrandFile, VoiceParams, VoiceStage, load_brand_file

__version__ = "0.1.0"

__all__ = [
    "BrandFile",
    "BrandKitError",
    "OverlayParams",
    "OverlayStage",
    "VoiceParams",
    "VoiceStage",
    "__version__",
    "aigc_register_stages",
    "load_brand_file",
]


@hookimpl
def aigc_register_stages() -> list[type[Stage]]:
    return [OverlayStage, VoiceStage]
