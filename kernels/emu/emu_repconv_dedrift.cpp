// CPU emulation build of kernels/repconv_dedrift.cu (see kernels/emu/check.py).
#include "../repconv_dedrift.cu"
