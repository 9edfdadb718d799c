// CPU emulation build of kernels/block_dct_fdm.cu (see kernels/emu/check.py).
#include "../block_dct_fdm.cu"
