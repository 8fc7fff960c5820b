"""Coverage instrumentation of firmware_py for the atheris fuzz targets (only they import it).

atheris.instrument_imports() also traces comparisons (``trace_dataflow``), and atheris 3.0.0
leaks the result of every traced rich comparison: one numpy array per ``a == b`` on arrays,
~10 KB per execution of these targets, libFuzzer's RSS limit after a few 100k runs.  So
the import hook is installed with comparison tracing off (edge coverage stays; the JSON
tokens come from the dictionary instead).  Falls back to instrument_imports() if atheris'
HookManager changes.
"""
import importlib


def instrument(*modules):
    """Imports `modules` (and what they import from firmware_py) instrumented."""
    import atheris

    try:
        from atheris.import_hook import HookManager

        hook = HookManager({"firmware_py"}, set(), True, trace_dataflow=False)
    except (ImportError, TypeError):  # pragma: no cover - another atheris version
        hook = atheris.instrument_imports(include=["firmware_py"])
    with hook:
        for m in modules:
            importlib.import_module(m)
