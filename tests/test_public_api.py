"""The public surface: ``__all__`` names real objects, imported lazily, never shadowed by a submodule."""
from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import types

import resnest_zoo


def test_every_public_name_is_an_object_even_after_every_submodule_is_imported():
    for module in pkgutil.walk_packages(resnest_zoo.__path__, prefix="resnest_zoo."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    for name in resnest_zoo.__all__:
        assert not isinstance(getattr(resnest_zoo, name), types.ModuleType), name
    assert callable(resnest_zoo.download) and callable(resnest_zoo.verify) and callable(resnest_zoo.export)
    assert set(resnest_zoo.__all__) <= set(dir(resnest_zoo))


def test_unknown_attribute_is_an_attribute_error():
    try:
        resnest_zoo.no_such_name
    except AttributeError as error:
        assert "no_such_name" in str(error)
    else:
        raise AssertionError("expected AttributeError")


def test_importing_the_package_does_not_import_torch():
    code = "import sys, resnest_zoo, resnest_zoo.cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
