"""Imported by Python at start-up in every process `canary exec` launches (this directory is first on
PYTHONPATH). It chains to the sitecustomize this one shadows, then installs the Trainer hook.

Nothing here may break the user's program: any failure is one warning line on stderr.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _chain() -> None:
    """Run the sitecustomize that would have run without us (a distribution's or a venv's)."""
    from importlib.machinery import PathFinder
    from importlib.util import module_from_spec

    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    spec = PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


def _import_canary_runner() -> None:
    """canary_runner as the parent runs it, even from a Python where it is not installed: loaded
    from its own directory, without putting the parent's site-packages on this process's path."""
    try:
        import canary_runner  # noqa: F401
        return
    except ImportError:
        pass
    from importlib.util import module_from_spec, spec_from_file_location

    pkg = os.path.join(os.environ["CANARY_EXEC_HOME"], "canary_runner")
    spec = spec_from_file_location("canary_runner", os.path.join(pkg, "__init__.py"),
                                   submodule_search_locations=[pkg])
    module = module_from_spec(spec)
    sys.modules["canary_runner"] = module
    spec.loader.exec_module(module)


try:
    _chain()
except Exception as e:  # the other sitecustomize's own failure: report it as Python would, carry on
    print(f"canary exec: the shadowed sitecustomize failed: {type(e).__name__}: {e}", file=sys.stderr)

if os.environ.get("CANARY_EXEC_DIR"):
    try:
        _import_canary_runner()
        from canary_runner.exec import attach

        attach.install()
    except Exception as e:
        print(f"canary exec: cannot attach the collector in {sys.executable}: {type(e).__name__}: {e}",
              file=sys.stderr)
