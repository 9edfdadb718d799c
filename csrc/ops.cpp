// The afd op schemas: one per op. Kernels register in their own files
// (csrc/*_cpu.cpp for CPU, csrc/cuda/*_cuda.cpp for CUDA); fake kernels and
// autograd are registered from Python (afd_ext/ops.py).
#include <torch/library.h>

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
  m.def("block_dct(Tensor img) -> Tensor");
  m.def("block_dct_fdm(Tensor img, Tensor w1, Tensor b1, Tensor w2, Tensor b2, Tensor w3, Tensor b3) -> Tensor");
  m.def("repconv_dedrift(Tensor x, Tensor weight, Tensor? bias, Tensor fdm, Tensor feat, str act) -> Tensor");
}
