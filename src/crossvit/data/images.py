"""Opening any image PIL reads as the grey or RGB picture a model wants."""

from __future__ import annotations

import os
import stat
import warnings

from PIL import Image

HIGH_BIT_GREY = ("I;16", "I;16B", "I;16L", "I")


def load_image(path: str, mode: str = "RGB") -> Image.Image:
    """Decode `path` fully into `mode` ('RGB' or 'L'). Palette, RGBA, CMYK and 16-bit images are
    converted, not rejected; images past PIL's pixel limit (decompression bombs) raise, and so do
    paths that are not regular files."""
    # stat first: opening a named pipe (or a device) for reading can block forever, and a folder
    # walk lists pipes among the files. Missing files and symlink loops raise here too.
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError("not a regular file (a folder, named pipe, socket or device)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            image.load()
            if image.mode in HIGH_BIT_GREY:  # scale 16-bit grey to 8 bits instead of clipping it
                image = image.convert("I").point(lambda v: v / 256).convert("L")
            elif image.mode == "F":  # floating-point grey, 0-1 by convention (0-255 kept as it is)
                low, high = image.getextrema()
                image = (image.point(lambda v: v * 255) if high <= 1.0 else image).convert("L")
            elif image.mode in ("P", "PA", "LA") or "A" in image.mode:
                image = image.convert("RGBA").convert("RGB")  # transparency goes, colours stay
            return image.convert(mode)
