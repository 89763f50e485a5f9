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
