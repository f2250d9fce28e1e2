#!/usr/bin/env python3
"""The container action's entrypoint (exec-form ENTRYPOINT, so the runner's INPUT_* variables, hyphens
and all, reach Python intact). Everything happens in canary_runner.action."""

import sys

from canary_runner.action import main

if __name__ == "__main__":
    sys.exit(main())
