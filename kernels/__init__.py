"""Triton kernels of cpixelcnn, installed as ``cpixelcnn.kernels``.

Each ``<op>.py`` here holds the kernels of one op; ``cpixelcnn/ops/<op>.py`` holds its autograd
wrapper, dispatch and eager reference.
"""
