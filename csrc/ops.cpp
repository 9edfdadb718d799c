// The afd op schemas (text: afd_schemas.h). Kernels register in their own files
// (csrc/*_cpu.cpp for CPU, csrc/cuda/*_cuda.cpp for CUDA); fake kernels and
// autograd are registered from Python (afd_ext/ops.py).
#include <torch/library.h>

#include "afd_schemas.h"

#ifdef AFD_PYTHON_MODULE
#include <Python.h>
extern "C" {
// Importing afd_ext._C runs the static TORCH_LIBRARY initializers; no Python bindings needed.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}
#endif

TORCH_LIBRARY(afd, m) {
  m.def(AFD_SCHEMA_BLOCK_DCT);
  m.def(AFD_SCHEMA_BLOCK_DCT_GATE);
  m.def(AFD_SCHEMA_BLOCK_DCT_FDM);
  m.def(AFD_SCHEMA_FE_CONV);
  m.def(AFD_SCHEMA_REPCONV_DEDRIFT);
}
