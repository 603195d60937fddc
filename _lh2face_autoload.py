"""lh2face_plugin's start-up hook: the gate run by ``lh2face_plugin_autoload.pth`` / ``.start``.

Python runs it in every interpreter of the environment, so it imports nothing and
returns at once unless the script being run is arcface_torch's ``train_v2.py`` (a
``train_v2.py`` with ``partial_fc_v2.py`` beside it) and this process has no hook yet
(site may process a virtual environment's ``.pth`` files twice). There it puts one
finder in front of ``sys.meta_path`` that reacts to three imports only and hands them to
``lh2face_plugin.arcface_torch.autoload``:

- ``mxnet`` and ``torchvision``: the real package if it imports, else the plugin's stand-in;
- ``utils.utils_config`` (the checkout's config loader): wrapped once it is executed.

Everything else, and every other process, is left alone. ``LH2FACE_AUTOLOAD=0`` is read
later, when the recipe is (see ``lh2face_plugin.arcface_torch.autoload``).
"""
import os
import sys

_SERVED = ("mxnet", "torchvision")
_CONFIG_LOADER = "utils.utils_config"


def install():
    """Install the finder when the running script is arcface_torch's ``train_v2.py`` (idempotent)."""
    script = sys.argv[0] if getattr(sys, "argv", None) else ""
    if os.path.basename(script) != "train_v2.py" or any(type(f).__name__ == "_Finder" for f in sys.meta_path):
        return
    root = os.path.dirname(os.path.realpath(script))
    if os.path.isfile(os.path.join(root, "partial_fc_v2.py")):
        sys.meta_path.insert(0, _Finder(root))


class _Finder:
    """Meta-path finder for the three imports named in the module docstring."""

    def __init__(self, root):
        self.root = os.path.realpath(root)
        self.busy = set()

    def find_spec(self, name, path=None, target=None):
        if name in self.busy or not (name in _SERVED or name == _CONFIG_LOADER):
            return None
        from importlib.machinery import ModuleSpec

        if name in _SERVED:
            return ModuleSpec(name, _ServeLoader(self, name))
        spec = self._next_spec(name, path, target)
        expected = os.path.join(self.root, "utils", "utils_config.py")
        # Python resolves symbolic links in sys.path[0]; compare resolved paths on both sides
        if spec is None or spec.loader is None or os.path.realpath(spec.origin or "") != expected:
            return spec
        spec.loader = _ConfigLoader(spec.loader)
        return spec

    def _next_spec(self, name, path, target):
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                return spec
        return None


class _ServeLoader:
    """Loads ``mxnet`` / ``torchvision`` through ``autoload.serve`` (which imports the real one
    with this finder stepping aside, or installs the stand-in)."""

    def __init__(self, finder, name):
        self.finder, self.name, self.own_spec = finder, name, None

    def create_module(self, spec):
        self.finder.busy.add(self.name)
        try:
            from lh2face_plugin.arcface_torch import autoload

            module = autoload.serve(self.name)
        finally:
            self.finder.busy.discard(self.name)
        self.own_spec = getattr(module, "__spec__", None)
        return module

    def exec_module(self, module):
        if self.own_spec is not None:   # the real package keeps its own spec
            module.__spec__ = self.own_spec


class _ConfigLoader:
    """The checkout's own loader for ``utils.utils_config``, then ``autoload.wrap_config_loader``."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        from lh2face_plugin.arcface_torch import autoload

        autoload.wrap_config_loader(module)
