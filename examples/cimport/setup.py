"""Build the downstream example extension against an installed fastconv:

    pip install fastconv Cython setuptools
    python setup.py build_ext --inplace
    python run.py

Cython finds ``fastconv/cython_api.pxd`` in the installed package; no
fastconv headers or libraries are needed at build time (the functions are
looked up at import, through the module's ``__pyx_capi__``).
"""

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    name="fastconv-cimport-example",
    ext_modules=cythonize(
        [Extension("conv_user", ["conv_user.pyx"], include_dirs=[np.get_include()])],
        compiler_directives={"language_level": 3},
    ),
)
