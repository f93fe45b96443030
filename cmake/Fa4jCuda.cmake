# Enables the CUDA backend when nvcc is found (FA4J_CUDA=AUTO), or insists on it (ON), or skips it (OFF).
# Kernels are built as machine code (SASS) for Ampere (sm_80, sm_86), Ada (sm_89) and Hopper with its
# arch-specific features (sm_90a), plus PTX for compute_90 that the driver compiles for newer GPUs.
# sm_80 code would run on sm_86/sm_89 as well (binary compatible within a major version); their own SASS
# is there because ptxas schedules for the GPU it targets and the two cost ~20 s of build time each.
# The PTX is compute_90, not compute_90a: "a" features never carry forward, and the Hopper-only kernel
# (wgmma, TMA, setmaxnreg) compiles to a trap outside the sm_90a pass (kernels/sm90_primitives.cuh); it
# is only launched on compute capability 9.0, so newer GPUs run the FlashAttention-2 kernels from PTX.
set(FA4J_CUDA "AUTO" CACHE STRING "Build the CUDA backend: AUTO, ON or OFF")
set_property(CACHE FA4J_CUDA PROPERTY STRINGS AUTO ON OFF)

set(FA4J_HAVE_CUDA OFF)
if(NOT FA4J_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 80-real 86-real 89-real 90a-real 90-virtual)
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    # The runtime is linked statically: the library then needs only the driver, and still loads without it.
    set(CMAKE_CUDA_RUNTIME_LIBRARY Static)
    set(FA4J_HAVE_CUDA ON)
  elseif(FA4J_CUDA STREQUAL "ON")
    message(FATAL_ERROR "FA4J_CUDA=ON but no CUDA compiler was found (set CMAKE_CUDA_COMPILER or put nvcc on PATH)")
  endif()
endif()
message(STATUS "flashattn4j: CUDA backend ${FA4J_HAVE_CUDA} (architectures: ${CMAKE_CUDA_ARCHITECTURES})")
