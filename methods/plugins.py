"""Methods from outside the harness: a plugin is a Python file or an importable module whose import registers one or
more methods (`@register("name")` on a `Method` subclass, as the built-in ones do).

    python run_benchmark.py --plugin ~/work/my_method.py --methods pretrained mymethod
    python run_benchmark.py --plugin mylab.retrieval_methods ...

`load_plugins` imports each once per process; the runner imports a run's plugins again from its launch.json, so
`--jobs` workers and SLURM tasks know the same methods. A module dropped into `methods/` needs no plugin: the package
imports every module it holds (methods/__init__.py).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_LOADED: dict[str, ModuleType] = {}      # plugin key (resolved path, or module name) -> module


class PluginError(ImportError):
    """A plugin that cannot be found or imported; the message names it and what went wrong."""


def plugin_key(plugin: str | Path) -> str:
    """The resolved path of a plugin file (`*.py`, or an existing path), else the module name as given."""
    text = str(plugin)
    path = Path(text).expanduser()
    if text.endswith(".py") or path.exists():
        return str(path.resolve())
    return text


def load_plugin(plugin: str | Path) -> ModuleType:
    """Import one plugin (a file path or a module name), once per process. Raises PluginError naming the plugin
    when the file does not exist, the module cannot be found, or its import fails."""
    key = plugin_key(plugin)
    if key in _LOADED:
        return _LOADED[key]
    if key.startswith("/"):
        path = Path(key)
        if not path.is_file():
            raise PluginError(f"plugin {plugin}: no such file ({path}); expected a Python file that registers "
                              f"methods, or an importable module name")
        name = f"cdr_plugin_{path.stem}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            sys.modules.pop(name, None)
            raise PluginError(f"plugin {path} failed to import: {type(error).__name__}: {error}") from error
    else:
        try:
            module = importlib.import_module(key)
        except ModuleNotFoundError as error:
            raise PluginError(f"plugin {key}: no such module ({error}); give a file path (ending in .py) or a "
                              f"module importable from this Python (check PYTHONPATH)") from error
        except Exception as error:
            raise PluginError(f"plugin {key} failed to import: {type(error).__name__}: {error}") from error
    _LOADED[key] = module
    return module


def load_plugins(plugins) -> list[str]:
    """Import every plugin of `plugins` (paths or module names); returns their keys, as launch.json records them."""
    return [plugin_key(p) for p in plugins if load_plugin(p) is not None]
