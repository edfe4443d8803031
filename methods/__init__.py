"""Methods: the interface (`base.Method`), the registry, shared building blocks, one module per method.

Importing this package registers every built-in method.
"""
from .registry import REGISTRY, get_method_class, method_names, register  # noqa: F401
from . import pretrained, cds, pcs, darl, dn2a, ucdir, coda, dgdir, uem  # noqa: F401,E402  (registration side effects)
