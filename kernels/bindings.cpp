// pycnn._C: one Python launcher per kernel. Each op family binds its launchers in
// its own bind_<family>.cpp (kernels/<family>/); this file only lists the families.
//
// Every launcher takes device pointers as integers, shapes and parameters as ints,
// and a CUDA stream handle as an integer; it releases the GIL while it runs and
// raises RuntimeError naming the kernel if the launch fails.
#include <cuda_runtime_api.h>
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_activation(py::module_& m);
void bind_conv2d(py::module_& m);
void bind_pool(py::module_& m);
void bind_softmax(py::module_& m);
void bind_batch_norm(py::module_& m);
void bind_dropout(py::module_& m);

PYBIND11_MODULE(_C, m) {
  m.doc() = "pycnn's hand-written CUDA kernels (launchers take device pointers as ints)";
  // The toolkit the kernels were compiled with (cudart is linked statically, so this is
  // also the runtime they run on), e.g. 13000 for 13.0: verification records name it.
  m.attr("cuda_runtime_version") = CUDART_VERSION;
  bind_activation(m);
  bind_conv2d(m);
  bind_pool(m);
  bind_softmax(m);
  bind_batch_norm(m);
  bind_dropout(m);
}
