"""Triton kernels: the CUDA implementation of cnnzoo's operators (``conv.py``, ``pool.py``), beside
the C++ CPU kernels in ``cnnzoo/csrc/``. ``cnnzoo/ops/gpu.py`` launches them.

Importing this package imports Triton and decorates the kernels; Triton's CPU interpreter
(``TRITON_INTERPRET=1``) must be switched on before that, if at all.
"""
