# Finds the header-only CUTLASS/CuTe (3.4.x). Looks in CUTLASS_DIR (CMake or environment variable), then in
# the project's .deps/cutlass (filled by cmake/fetch-cutlass.sh from Debian's libcutlass-dev), then in the
# system include paths. When none has it and FA4J_FETCH_CUTLASS is ON, runs fetch-cutlass.sh once.
# Defines CUTLASS_FOUND, CUTLASS_INCLUDE_DIR and the imported target CUTLASS::cutlass.
option(FA4J_FETCH_CUTLASS "Unpack Debian's libcutlass-dev into .deps/ when CUTLASS is not found" ON)
set(_fa4j_top "${CMAKE_CURRENT_LIST_DIR}/..")

function(_fa4j_find_cutlass_headers)
  find_path(CUTLASS_INCLUDE_DIR cutlass/cutlass.h
    HINTS "${CUTLASS_DIR}" "${CUTLASS_DIR}/include" "$ENV{CUTLASS_DIR}" "$ENV{CUTLASS_DIR}/include"
          "${_fa4j_top}/.deps/cutlass/usr/include")
endfunction()

_fa4j_find_cutlass_headers()
if(NOT CUTLASS_INCLUDE_DIR AND FA4J_FETCH_CUTLASS)
  message(STATUS "CUTLASS not found: unpacking Debian's libcutlass-dev into ${_fa4j_top}/.deps/cutlass")
  execute_process(COMMAND bash "${_fa4j_top}/cmake/fetch-cutlass.sh" RESULT_VARIABLE _fa4j_fetch_result)
  if(_fa4j_fetch_result EQUAL 0)
    unset(CUTLASS_INCLUDE_DIR CACHE)
    _fa4j_find_cutlass_headers()
  endif()
endif()

if(CUTLASS_INCLUDE_DIR AND EXISTS "${CUTLASS_INCLUDE_DIR}/cutlass/version.h")
  file(STRINGS "${CUTLASS_INCLUDE_DIR}/cutlass/version.h" _v REGEX "#define CUTLASS_(MAJOR|MINOR|PATCH) ")
  string(REGEX REPLACE ".*CUTLASS_MAJOR ([0-9]+).*" "\\1" _major "${_v}")
  string(REGEX REPLACE ".*CUTLASS_MINOR ([0-9]+).*" "\\1" _minor "${_v}")
  string(REGEX REPLACE ".*CUTLASS_PATCH ([0-9]+).*" "\\1" _patch "${_v}")
  set(CUTLASS_VERSION "${_major}.${_minor}.${_patch}")
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(CUTLASS REQUIRED_VARS CUTLASS_INCLUDE_DIR VERSION_VAR CUTLASS_VERSION)
if(CUTLASS_FOUND AND NOT TARGET CUTLASS::cutlass)
  add_library(CUTLASS::cutlass INTERFACE IMPORTED)
  set_target_properties(CUTLASS::cutlass PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${CUTLASS_INCLUDE_DIR}")
endif()
