# cmake -DPYTHON=... -DSOURCE_DIR=<repo> -DOUTPUT_DIR=<dir> -DSTAMP=<file> -P include_tree.cmake
#
# Makes the include directory of the single-header test build: OUTPUT_DIR/moe/moe.hpp is a fresh
# amalgamation (tools/amalgamate.py; the committed single_include/moe/moe.hpp when there is no Python),
# and every other header of the repository gets a stand-in at its include path:
#   - one the single header inlined: a forward that includes <moe/moe.hpp> and nothing else;
#   - one outside the umbrella (e.g. moe/io/checkpoint.hpp, which needs cereal): an #error.
# So a test compiled against OUTPUT_DIR sees no file of include/ or backends/. Files are rewritten only
# when their content changes, so an unchanged amalgamation recompiles nothing.
cmake_minimum_required(VERSION 3.20)
foreach(var SOURCE_DIR OUTPUT_DIR STAMP)
  if(NOT ${var})
    message(FATAL_ERROR "include_tree.cmake: -D${var}=... is required")
  endif()
endforeach()

set(single_header ${OUTPUT_DIR}/moe/moe.hpp)
if(PYTHON)
  execute_process(COMMAND ${PYTHON} ${SOURCE_DIR}/tools/amalgamate.py --output ${single_header}
                  RESULT_VARIABLE status)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "tools/amalgamate.py failed (${status})")
  endif()
else()
  configure_file(${SOURCE_DIR}/single_include/moe/moe.hpp ${single_header} COPYONLY)
endif()

# What the single header holds: its "// begin <repository path>" markers.
file(STRINGS ${single_header} markers REGEX "^// begin ")
set(inlined)
foreach(marker IN LISTS markers)
  string(REGEX REPLACE "^// begin (include/)?" "" name "${marker}")
  list(APPEND inlined ${name})
endforeach()

file(GLOB_RECURSE library_headers RELATIVE ${SOURCE_DIR}/include
     ${SOURCE_DIR}/include/*.hpp ${SOURCE_DIR}/include/*.h ${SOURCE_DIR}/include/*.cuh)
file(GLOB_RECURSE backend_headers RELATIVE ${SOURCE_DIR}
     ${SOURCE_DIR}/backends/*.hpp ${SOURCE_DIR}/backends/*.h ${SOURCE_DIR}/backends/*.cuh)

set(expected ${single_header})
foreach(name IN LISTS library_headers backend_headers)
  if(name STREQUAL "moe/moe.hpp")
    continue()
  endif()
  if(name IN_LIST inlined)
    set(content "// Single-header test build: every moe header is the single header.\n#include <moe/moe.hpp>\n")
  else()
    set(content "#error \"${name} is not part of the single header moe/moe.hpp (the umbrella holds what needs only Eigen); a test that includes it runs only in moe_tests: see tests/CMakeLists.txt\"\n")
  endif()
  file(CONFIGURE OUTPUT ${OUTPUT_DIR}/${name} CONTENT "${content}" @ONLY)
  list(APPEND expected ${OUTPUT_DIR}/${name})
endforeach()

# Stand-ins of headers that no longer exist would hide a missing file: remove them.
file(GLOB_RECURSE present ${OUTPUT_DIR}/*)
foreach(file IN LISTS present)
  if(NOT file IN_LIST expected)
    file(REMOVE ${file})
  endif()
endforeach()
file(TOUCH ${STAMP})
