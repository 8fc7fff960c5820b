"""The C contract, read from ``bnn.h`` itself: the declarations cffi is given (CDEF) and every
constant and limit (enum values, ``#define BNN_*``), so that Python and C cannot drift apart.

The header travels with the libraries (``firmware_py/_lib/bnn.h``, copied there by
``./build.sh``); in a source tree without a build, ``csrc/neon/include/bnn.h`` is read.
Standard library only: importable where the native library is missing.
"""
import os
import re

_HERE = os.path.dirname(os.path.abspath(__file__))
HEADER_PATHS = (os.path.join(_HERE, "_lib", "bnn.h"),
                os.path.join(os.path.dirname(_HERE), "csrc", "neon", "include", "bnn.h"))


def _read():
    for p in HEADER_PATHS:
        if os.path.isfile(p):
            with open(p, encoding="utf-8") as f:
                return f.read()
    raise ImportError("bnn.h not found (looked in %s): run ./build.sh" % ", ".join(HEADER_PATHS))


def _strip_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def parse(text):
    """(cdef, constants) of a bnn.h text: cdef is the declarations without comments,
    preprocessor lines, the C++ guard and BNN_API; constants maps every enum member and
    every integer ``#define BNN_*`` to its value."""
    text = _strip_comments(text)
    consts = {m.group(1): int(m.group(2), 0)
              for m in re.finditer(r"^\s*#\s*define\s+(BNN_\w+)\s+(-?(?:0x[0-9a-fA-F]+|\d+))\s*$", text, re.M)}
    for body in re.findall(r"\benum\s+\w+\s*\{(.*?)\}", text, flags=re.S):
        for name, value in re.findall(r"(BNN_\w+)\s*=\s*(-?\d+)", body):
            consts[name] = int(value)
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    body = "\n".join(lines)
    body = body.replace('extern "C" {', "")
    body = re.sub(r"\}\s*$", "", body.rstrip()) if body.count("{") < body.count("}") else body
    body = re.sub(r"\bBNN_API\s+", "", body)
    body = re.sub(r"\n\s*\n+", "\n", body).strip() + "\n"
    return body, consts


CDEF, CONSTANTS = parse(_read())
