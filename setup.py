"""Build customisation: the start-up hook's files at the top of site-packages.

``lh2face_plugin_autoload.pth`` (one ``import`` line, run by ``site`` at interpreter
start-up, that imports the gate only when the script is a ``train_v2.py``) and ``lh2face_plugin_autoload.start`` (the same entry point in the PEP 829
form, ``module:callable``; where Python reads it, it replaces the ``.pth`` import line)
both call ``_lh2face_autoload.install``. A regular wheel carries them at its root (so
they land in site-packages); an editable install writes them into the editable wheel.
Everything else is configured in ``setup.cfg``.
"""
import os

from setuptools import setup
from setuptools.command.build_py import build_py

STARTUP_FILES = {
    # the gate module is imported only when the script is a train_v2.py: other interpreters pay one string test
    "lh2face_plugin_autoload.pth": 'import sys; getattr(sys, "argv", None) and sys.argv[0].endswith("train_v2.py") '
                                   'and __import__("_lh2face_autoload").install()\n',
    "lh2face_plugin_autoload.start": "# lh2face_plugin: activates in arcface_torch's train_v2.py only "
                                     "(LH2FACE_AUTOLOAD=0 keeps the plugin off)\n_lh2face_autoload:install\n",
}


class build_py_with_startup_files(build_py):
    """``build_py`` that also writes :data:`STARTUP_FILES` to the root of the wheel."""

    def run(self):
        super().run()
        for name, text in STARTUP_FILES.items():
            path = os.path.join(self._startup_root(), name)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)

    def _startup_root(self) -> str:
        if not getattr(self, "editable_mode", False):
            os.makedirs(self.build_lib, exist_ok=True)
            return self.build_lib
        # editable_wheel builds into a scratch build_lib and packs the unpacked wheel folder it
        # gave the install command; files for site-packages go there
        root = self.get_finalized_command("install").install_lib
        if not (root and os.path.isdir(root) and any(n.endswith(".dist-info") for n in os.listdir(root))):
            raise RuntimeError(f"lh2face_plugin: cannot find the editable wheel's folder (install_lib={root!r}) to "
                               "put the start-up hook in; this setuptools is not supported for editable installs")
        return root

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        return outputs + [os.path.join(self.build_lib, name) for name in STARTUP_FILES]


setup(cmdclass={"build_py": build_py_with_startup_files})
