# FA4J_SANITIZE=ON builds the library and its test drivers with AddressSanitizer and
# UndefinedBehaviorSanitizer (./build.sh sanitize): any stray access or undefined operation on a path the
# drivers reach, the C ABI fuzzer's malformed calls included, aborts the driver with a report. Host code
# only: the CUDA backend is checked by compute-sanitizer on a GPU (scripts/gpu-loop.sh).
option(FA4J_SANITIZE "Build with AddressSanitizer and UndefinedBehaviorSanitizer (CPU backend only)" OFF)
if(FA4J_SANITIZE)
  if(FA4J_HAVE_CUDA)
    message(FATAL_ERROR "FA4J_SANITIZE needs FA4J_CUDA=OFF: the host sanitizers do not see device code")
  endif()
  set(fa4j_sanitizers -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
  add_compile_options(${fa4j_sanitizers})
  add_link_options(-fsanitize=address,undefined)
endif()
