"""Triton kernels of cpixelcnn, installed as ``cpixelcnn.kernels``.

Each ``<op>.py`` here holds the kernels of one op; ``cpixelcnn/ops/<op>.py`` holds its autograd
wrapper, dispatch and eager reference.
"""

from cpixelcnn.kernels._interpreter import mend as _mend_interpreter

_mend_interpreter()  # older Triton interpreters and NumPy >= 2.4 (see _interpreter.py)
