"""Device code. CUDA sources (*.cu) are compiled into afd_ext._C by setup.py;
the Triton kernels (triton_*.py) are imported from here as afd_ext.kernels."""
