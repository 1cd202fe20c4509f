"""specialize: turn a general language model into a domain specialist, and prove the result.

The Python API (see `specialize/api.py`): `from specialize import prepare, train, evaluate, ladder, simulate`.
"""

import sys
import types

from specialize.cpu_memory import set_cpu_memory_defaults

set_cpu_memory_defaults()  # before anything below can make a tensor: torch and oneDNN read them once

from specialize.api import evaluate, ladder, prepare, simulate, train  # noqa: E402

__all__ = ["evaluate", "ladder", "prepare", "simulate", "train"]
__version__ = "0.1.0"


class _Package(types.ModuleType):
    """Keeps `specialize.train` (and evaluate, ladder) the API functions.

    Importing the subpackage of the same name (specialize/train/) would otherwise rebind the
    attribute to the subpackage. Code inside reaches the subpackages by full import
    (`from specialize.train.config import ...`), which goes through sys.modules and is unaffected.
    """

    def __setattr__(self, name: str, value) -> None:
        if name in __all__ and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
