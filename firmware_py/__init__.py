"""firmware_py: a binarized-neural-network (XNOR-Net) runtime for the Raspberry Pi.

Runs on the device with only numpy and cffi: the prebuilt C library
(firmware_py/_lib/<arch>/libbnn.so, or $BNN_LIBRARY) is opened in cffi ABI mode the
first time an op needs it, so ``import firmware_py`` works even where it is missing.
"""

__version__ = "0.1.0"

from ._native import (  # noqa: F401
    BnnError,
    BnnLibraryError,
    BnnPathError,
    BnnShapeError,
    BnnSizeError,
)
from .model_format import ModelFormatError  # noqa: F401
from .memory import MemoryBudgetError  # noqa: F401
from .executor import Model, load  # noqa: F401
from .zoo import zoo_path  # noqa: F401
from .ops import (  # noqa: F401
    BConv2d,
    Context,
    FConv2d,
    add,
    affine,
    available_paths,
    avgpool2d,
    bitpack,
    bitpack_affine,
    bmaxpool2d,
    concat,
    default_context,
    eltwise,
    global_avgpool,
    library_version,
    maxpool2d,
    packed_words,
    pads_for,
    prelu,
    unpack,
    xnor_scale,
)

__all__ = [
    "__version__",
    "BnnError",
    "BnnLibraryError",
    "BnnPathError",
    "BnnShapeError",
    "BnnSizeError",
    "ModelFormatError",
    "Model",
    "load",
    "zoo_path",
    "BConv2d",
    "Context",
    "FConv2d",
    "add",
    "affine",
    "available_paths",
    "avgpool2d",
    "bitpack",
    "bitpack_affine",
    "bmaxpool2d",
    "concat",
    "default_context",
    "eltwise",
    "global_avgpool",
    "library_version",
    "maxpool2d",
    "packed_words",
    "pads_for",
    "prelu",
    "unpack",
    "xnor_scale",
]
