# LibTorch from the PyTorch wheel that scripts/install-deps puts into a project-local virtual
# environment. Defines the target desync::torch: the wheel's C++ headers, libtorch_cpu and libc10
# (with c10d and ProcessGroupGloo), and, with DESYNC_CUDA, libtorch_cuda, libc10_cuda and NCCL.
#
# The wheel's own TorchConfig.cmake is not used: it insists on finding a CUDA toolkit, since the
# wheel is a CUDA build, and would link libtorch_cuda into every program.

set(DESYNC_VENV "${CMAKE_SOURCE_DIR}/.deps/venv" CACHE PATH
    "Virtual environment holding the torch wheel (scripts/install-deps creates it)")
set(DESYNC_TORCH_VERSION "2.15.0")

file(GLOB _desync_torch_dirs "${DESYNC_VENV}/lib/python3*/site-packages/torch")
list(LENGTH _desync_torch_dirs _desync_torch_count)
if(NOT _desync_torch_count EQUAL 1)
  message(FATAL_ERROR "LibTorch ${DESYNC_TORCH_VERSION} not found in ${DESYNC_VENV}: run "
                      "`scripts/install-deps`, or point -DDESYNC_VENV at a venv holding the wheel")
endif()
list(GET _desync_torch_dirs 0 DESYNC_TORCH_DIR)
get_filename_component(_desync_site "${DESYNC_TORCH_DIR}" DIRECTORY)

file(STRINGS "${DESYNC_TORCH_DIR}/include/torch/headeronly/version.h" _desync_tv
     REGEX "#define TORCH_VERSION_(MAJOR|MINOR|PATCH) ")
string(REGEX REPLACE ".*MAJOR ([0-9]+).*MINOR ([0-9]+).*PATCH ([0-9]+).*" "\\1.\\2.\\3"
       _desync_tv "${_desync_tv}")
if(NOT _desync_tv VERSION_EQUAL DESYNC_TORCH_VERSION)
  message(FATAL_ERROR "${DESYNC_TORCH_DIR} holds LibTorch ${_desync_tv}, desync builds on "
                      "${DESYNC_TORCH_VERSION}: run `scripts/install-deps`")
endif()
message(STATUS "LibTorch ${_desync_tv}: ${DESYNC_TORCH_DIR}")

set(_desync_torch_lib "${DESYNC_TORCH_DIR}/lib")
add_library(desync_torch INTERFACE)
add_library(desync::torch ALIAS desync_torch)
target_include_directories(desync_torch SYSTEM INTERFACE
  "${DESYNC_TORCH_DIR}/include" "${DESYNC_TORCH_DIR}/include/torch/csrc/api/include")
# The wheel is built with the C++11 ABI and with c10d's Gloo backend. Its headers carry fmt
# (12.x) and include it themselves, so that is the fmt desync uses too, header-only: a second
# fmt (Debian's 9.x) would collide with it under the same include guards.
target_compile_definitions(desync_torch INTERFACE _GLIBCXX_USE_CXX11_ABI=1 USE_DISTRIBUTED
                           USE_C10D_GLOO FMT_HEADER_ONLY)
target_link_libraries(desync_torch INTERFACE "${_desync_torch_lib}/libtorch_cpu.so"
                      "${_desync_torch_lib}/libc10.so")
# libtorch_cpu finds the CUDA runtime and CUPTI of the wheels next to it only through the
# program's search path; DT_RPATH (not RUNPATH) is searched for indirect dependencies too.
set(DESYNC_TORCH_RPATH "${_desync_torch_lib}" "${_desync_site}/nvidia/cu13/lib")
target_link_options(desync_torch INTERFACE "-Wl,--disable-new-dtags")
foreach(dir ${DESYNC_TORCH_RPATH})
  target_link_options(desync_torch INTERFACE "-Wl,-rpath,${dir}")
endforeach()

option(DESYNC_CUDA "Link libtorch_cuda and NCCL: the nccl backend (run.backend = \"nccl\")" OFF)
if(DESYNC_CUDA)
  find_package(CUDAToolkit REQUIRED)
  find_path(DESYNC_NCCL_INCLUDE nccl.h
            HINTS "${_desync_site}/nvidia/nccl/include" "${_desync_site}/nvidia/cu13/include"
                  ${CUDAToolkit_INCLUDE_DIRS})
  if(NOT DESYNC_NCCL_INCLUDE)
    message(FATAL_ERROR "DESYNC_CUDA=ON needs nccl.h (NCCL's headers): install NCCL or the "
                        "nvidia-nccl-cu13 wheel into ${DESYNC_VENV}")
  endif()
  target_include_directories(desync_torch SYSTEM INTERFACE ${CUDAToolkit_INCLUDE_DIRS}
                             "${DESYNC_NCCL_INCLUDE}")
  target_compile_definitions(desync_torch INTERFACE USE_CUDA USE_C10D_NCCL DESYNC_CUDA)
  # --no-as-needed: nothing calls libtorch_cuda by name, but loading it registers the CUDA
  # kernels and the NCCL backend.
  target_link_libraries(desync_torch INTERFACE
    "-Wl,--no-as-needed,${_desync_torch_lib}/libtorch_cuda.so,--as-needed"
    "${_desync_torch_lib}/libc10_cuda.so" CUDA::cudart)
  foreach(sub nccl cusparselt nvshmem cufile)
    if(IS_DIRECTORY "${_desync_site}/nvidia/${sub}/lib")
      list(APPEND DESYNC_TORCH_RPATH "${_desync_site}/nvidia/${sub}/lib")
      target_link_options(desync_torch INTERFACE "-Wl,-rpath,${_desync_site}/nvidia/${sub}/lib")
    endif()
  endforeach()
endif()
