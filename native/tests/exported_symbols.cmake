# ctest: the library's dynamic symbol table holds exactly the functions the header declares with FA4J_API.
# Anything more (a libstdc++ or cudart symbol, even weak or GNU-unique) can bind another library's calls
# to our copy inside a process that has its own; anything less is a broken ABI.
# Usage: cmake -DNM=<nm> -DLIBRARY=<libflashattn4j.so> -DHEADER=<flashattn4j.h> -P exported_symbols.cmake
foreach(var NM LIBRARY HEADER)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "exported_symbols.cmake needs -D${var}=...")
  endif()
endforeach()

execute_process(COMMAND "${NM}" -D --defined-only "${LIBRARY}"
                OUTPUT_VARIABLE nm_output RESULT_VARIABLE nm_result ERROR_VARIABLE nm_error)
if(NOT nm_result EQUAL 0)
  message(FATAL_ERROR "${NM} -D --defined-only ${LIBRARY} failed: ${nm_error}")
endif()
string(REPLACE "\n" ";" nm_lines "${nm_output}")
set(exported)
foreach(line IN LISTS nm_lines)
  # "<address> <type> <name>[@version]"
  if(line MATCHES "^[0-9a-fA-F]+ [A-Za-z] ([^ @]+)")
    list(APPEND exported "${CMAKE_MATCH_1}")
  endif()
endforeach()
list(SORT exported)

file(READ "${HEADER}" header_text)
string(REGEX MATCHALL "FA4J_API[^;{]*[ *](fa4j_[a-z0-9_]+)\\(" declarations "${header_text}")
set(declared)
foreach(declaration IN LISTS declarations)
  string(REGEX REPLACE ".*[ *](fa4j_[a-z0-9_]+)\\($" "\\1" name "${declaration}")
  list(APPEND declared "${name}")
endforeach()
list(SORT declared)
list(LENGTH declared declared_count)
if(declared_count EQUAL 0)
  message(FATAL_ERROR "found no FA4J_API declarations in ${HEADER}")
endif()

set(extra ${exported})
list(REMOVE_ITEM extra ${declared})
set(missing ${declared})
if(exported)
  list(REMOVE_ITEM missing ${exported})
endif()
list(LENGTH exported exported_count)
if(extra OR missing)
  list(LENGTH extra extra_count)
  list(SUBLIST extra 0 20 extra_head)
  message(FATAL_ERROR "exported symbols differ from the header's API (${exported_count} exported, ${declared_count} declared)\n"
                      "  exported but not declared (${extra_count}, first 20): ${extra_head}\n"
                      "  declared but not exported: ${missing}")
endif()
message(STATUS "exported symbols: exactly the ${declared_count} functions of the header")
