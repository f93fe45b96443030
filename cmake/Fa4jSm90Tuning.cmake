# sm90_forward_tuning: the Hopper forward's measurement tool (native/tuning/sm90_forward_tuning.cu: the
# release kernel against its scheduler variants, timed and checked bit for bit in one process). Not built by
# default and not part of the library, so that release sources carry no measurement hooks:
#   cmake --build <build dir> --target sm90_forward_tuning
if(FA4J_HAVE_CUDA)
  add_executable(sm90_forward_tuning EXCLUDE_FROM_ALL
    "${CMAKE_CURRENT_SOURCE_DIR}/tuning/sm90_forward_tuning.cu"
    "${CMAKE_CURRENT_SOURCE_DIR}/src/backends/cuda/kernels/sm90/tensor_map.cu")
  target_include_directories(sm90_forward_tuning PRIVATE "${CMAKE_CURRENT_SOURCE_DIR}/src"
                             "${CMAKE_CURRENT_SOURCE_DIR}/include" "${CMAKE_CURRENT_BINARY_DIR}/generated")
  target_include_directories(sm90_forward_tuning SYSTEM PRIVATE ${CUTLASS_INCLUDE_DIR})
  target_compile_options(sm90_forward_tuning PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -lineinfo>)
  target_link_libraries(sm90_forward_tuning PRIVATE CUDA::cudart_static)
endif()
