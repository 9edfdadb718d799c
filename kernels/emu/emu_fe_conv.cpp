// CPU emulation build of kernels/fe_conv.cu (see kernels/emu/check.py).
#include "../fe_conv.cu"
