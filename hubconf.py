"""torch.hub entry points, one per registered variant:

    model = torch.hub.load("OWNER/crossvit", "crossvit_9_240", pretrained=True)
    model = torch.hub.load("path/to/this/checkout", "crossvit_9_240", source="local")

Keyword arguments go to crossvit.create_model (num_classes, img_size, checkpoint, ...).
"""

import os as _os
import sys as _sys

dependencies = ["torch", "safetensors"]

# torch.hub imports this file from the repository's root; the package itself lives in src/.
_sys.path.insert(0, _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "src"))

import crossvit as _crossvit  # noqa: E402


def _entry(name: str):
    def build(pretrained: bool = False, **kwargs):
        return _crossvit.create_model(name, pretrained=pretrained, **kwargs)

    build.__name__ = name
    build.__doc__ = f"crossvit.create_model({name!r}, pretrained=..., **kwargs)"
    return build


for _name in _crossvit.list_models():
    globals()[_name] = _entry(_name)
