"""Library chatter off: FutureWarnings and per-step info logs of transformers/TRL are noise in a CI log."""

import logging
import warnings


def quiet_libraries() -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    for name in ("transformers", "trl", "accelerate", "datasets", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import transformers

    transformers.utils.logging.set_verbosity_error()
