import os
import sys

if __package__ in (None, ""):  # python bnn_camera/__main__.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "bnn_camera"

from bnn_camera.cli import main  # noqa: E402

sys.exit(main(restore_signals=False))
