"""Methods: the interface (`base.Method`), the registry, shared building blocks, one module per method.

Importing this package registers every built-in method, in the paper's order, then every other module found in this
folder (a method file dropped here needs no edit of this file); methods outside it come in as plugins
(methods/plugins.py).
"""
import importlib
import pkgutil

from .registry import REGISTRY, get_method_class, method_names, register  # noqa: F401
from . import pretrained, cds, pcs, darl, dn2a, ucdir, coda, dgdir, uem  # noqa: F401,E402  (registration side effects)

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
