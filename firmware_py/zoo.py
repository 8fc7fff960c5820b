"""Where the shipped models are: ``models/zoo/`` in a source tree or an unpacked dist
tarball, ``<prefix>/share/bnn-pi/zoo/`` once the package is installed with pip."""
import os
import sys
import sysconfig

_SOURCE_ZOO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "zoo")


def zoo_dirs():
    """the folders searched, in order: the source tree's, then the installed ones"""
    dirs = [_SOURCE_ZOO]
    for prefix in (sysconfig.get_path("data"), sys.prefix, sys.base_prefix):
        d = os.path.join(prefix, "share", "bnn-pi", "zoo")
        if d not in dirs:
            dirs.append(d)
    return dirs


def zoo_path(*parts):
    """the path of a shipped file, e.g. ``zoo_path("person", "binary.bnn")``: the first
    folder of zoo_dirs() that has it, else where the source tree would have it (so that a
    'not found' message names a real place)"""
    for d in zoo_dirs():
        p = os.path.join(d, *parts)
        if os.path.exists(p):
            return p
    return os.path.join(_SOURCE_ZOO, *parts)
