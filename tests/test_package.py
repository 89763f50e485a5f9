import importlib

import pytest

import squall


def test_version_info_matches_version():
    assert isinstance(squall.version, str)
    parts = tuple(int(p) for p in squall.version.split(".")[:3])
    assert squall.version_info[:3] == parts
    assert len(squall.version_info) == 4


def test_missing_module_is_a_plain_import_error():
    with pytest.raises(ImportError):
        importlib.import_module("squall.no_such_module")


def test_py_typed_ships():
    import pathlib

    assert (pathlib.Path(squall.__file__).parent / "py.typed").is_file()


def test_submodules_load_lazily_as_attributes():
    import subprocess
    import sys

    code = "import sys, squall; assert 'squall.escape' not in sys.modules; squall.escape.utf8('x'); print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_unknown_attribute_is_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        squall.no_such_thing


def test_extras_load_lazily_too():
    import subprocess
    import sys

    code = "import squall; print(squall.offload.__name__, squall.watchdog.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["squall.offload", "squall.watchdog"]
