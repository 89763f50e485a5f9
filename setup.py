"""Builds squall's optional C speedups; everything else is in pyproject.toml.

The extension is optional: without a C compiler the install still succeeds
and squall uses the pure-Python versions of the same functions.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("squall._speedups", ["src/squall/_speedups.c"], optional=True),
    ]
)
