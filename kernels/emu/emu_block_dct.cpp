// CPU emulation build of kernels/block_dct.cu (see kernels/emu/check.py).
#include "../block_dct.cu"
