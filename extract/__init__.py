"""Stage one: find videos, decode, sample frames, run a frozen backbone, write the cache.

Public API:

- :class:`ExtractConfig`: every setting of an extraction (a dataclass; ``from_dict`` refuses
  unknown keys).
- :func:`run_extraction(config) -> ExtractResult`: extract a source into a cache, resuming.
- :func:`features_for_videos(paths, cache_attrs, *, device, weights)`: features of new videos
  made exactly as a cache's root attributes say (``actrec predict`` uses it).
- :func:`load_backbone`, :func:`find_items`, :class:`Sampling`, :class:`Resize`: the parts.
"""

from actrec.extract.backbones import Backbone, list_backbones, load_backbone
from actrec.extract.config import ExtractConfig
from actrec.extract.decode import DecodeError, Reader, Resize, Sampling
from actrec.extract.run import ExtractResult, features_for_videos, run_extraction
from actrec.extract.sources import Item, find_items

__all__ = [
    "Backbone",
    "DecodeError",
    "ExtractConfig",
    "ExtractResult",
    "Item",
    "Reader",
    "Resize",
    "Sampling",
    "features_for_videos",
    "find_items",
    "list_backbones",
    "load_backbone",
    "run_extraction",
]
