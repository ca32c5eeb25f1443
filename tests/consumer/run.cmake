# cmake -DMODE=<mode> -DMOE_SOURCE_DIR=<repo> -DWORK_DIR=<dir> -DGENERATOR=<g> -DCXX_COMPILER=<c>
#       [-DMAKE_PROGRAM=<m>] [-DCONFIG=<config>] [-DPREFIX=<install prefix, find_package>] -P run.cmake
#
# Copies this consumer project into WORK_DIR/src, gives it moe the way MODE says (as README.md shows),
# then configures, builds and runs it with the compiler and generator of moe's own build:
#   find_package      moe installed into PREFIX (the fixture consumer.install), CMAKE_PREFIX_PATH=PREFIX
#   add_subdirectory  third_party/moe is (a link to) the checkout
#   fetch_content     FetchContent from a file:// archive of the checkout's library files (no network)
#   single_header     single_include/moe/moe.hpp copied to third_party/moe/moe.hpp
cmake_minimum_required(VERSION 3.20)
foreach(var MODE MOE_SOURCE_DIR WORK_DIR GENERATOR CXX_COMPILER)
  if(NOT ${var})
    message(FATAL_ERROR "run.cmake: -D${var}=... is required")
  endif()
endforeach()

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE status)
  if(NOT status EQUAL 0)
    list(JOIN ARGN " " command)
    message(FATAL_ERROR "consumer.${MODE}: `${command}` failed (${status})")
  endif()
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
set(src ${WORK_DIR}/src)
file(COPY ${CMAKE_CURRENT_LIST_DIR}/CMakeLists.txt ${CMAKE_CURRENT_LIST_DIR}/main.cpp DESTINATION ${src})

set(configure_args -S ${src} -B ${WORK_DIR}/build -G ${GENERATOR} -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
    -DMOE_CONSUMER_MODE=${MODE} -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
if(MAKE_PROGRAM)
  list(APPEND configure_args -DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM})
endif()
if(CONFIG)
  list(APPEND configure_args -DCMAKE_BUILD_TYPE=${CONFIG})
endif()

if(MODE STREQUAL "find_package")
  if(NOT PREFIX OR NOT EXISTS ${PREFIX})
    message(FATAL_ERROR "consumer.find_package: no install prefix ${PREFIX} (the fixture consumer.install makes it)")
  endif()
  list(APPEND configure_args -DCMAKE_PREFIX_PATH=${PREFIX})
elseif(MODE STREQUAL "add_subdirectory")
  file(MAKE_DIRECTORY ${src}/third_party)
  file(CREATE_LINK ${MOE_SOURCE_DIR} ${src}/third_party/moe SYMBOLIC)
elseif(MODE STREQUAL "fetch_content")
  # What a release archive of the library needs: the build files and the headers, no tests or examples
  # (so a moe that tried to build them would fail here).
  file(STRINGS ${MOE_SOURCE_DIR}/CMakeLists.txt project_line REGEX "^project\\(moe VERSION")
  string(REGEX MATCH "[0-9]+\\.[0-9]+\\.[0-9]+" version "${project_line}")
  set(stage ${WORK_DIR}/archive/moe-${version})
  foreach(entry CMakeLists.txt cmake include backends single_include README.md LICENSE)
    if(EXISTS ${MOE_SOURCE_DIR}/${entry})
      file(COPY ${MOE_SOURCE_DIR}/${entry} DESTINATION ${stage})
    endif()
  endforeach()
  set(archive ${WORK_DIR}/archive/moe-${version}.tar.gz)
  execute_process(COMMAND ${CMAKE_COMMAND} -E tar czf ${archive} moe-${version}
                  WORKING_DIRECTORY ${WORK_DIR}/archive RESULT_VARIABLE status)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "consumer.fetch_content: could not make ${archive}")
  endif()
  file(SHA256 ${archive} sha256)
  list(APPEND configure_args -DMOE_URL=file://${archive} -DMOE_SHA256=${sha256})
elseif(MODE STREQUAL "single_header")
  file(COPY ${MOE_SOURCE_DIR}/single_include/moe/moe.hpp DESTINATION ${src}/third_party/moe)
else()
  message(FATAL_ERROR "run.cmake: unknown MODE=${MODE}")
endif()

run(${CMAKE_COMMAND} ${configure_args})
if(MODE STREQUAL "find_package")  # the package came from PREFIX, not from anywhere else
  file(STRINGS ${WORK_DIR}/build/CMakeCache.txt moe_dir REGEX "^moe_DIR:")
  string(REGEX REPLACE "^moe_DIR:[A-Z]+=" "" moe_dir "${moe_dir}")
  string(FIND "${moe_dir}" "${PREFIX}/" at)
  if(NOT at EQUAL 0)
    message(FATAL_ERROR "consumer.find_package: moe was found in '${moe_dir}', not under ${PREFIX}")
  endif()
endif()
set(build_args)
if(CONFIG)
  set(build_args --config ${CONFIG})
endif()
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build ${build_args})

file(GLOB app LIST_DIRECTORIES false ${WORK_DIR}/build/app ${WORK_DIR}/build/*/app
     ${WORK_DIR}/build/app.exe ${WORK_DIR}/build/*/app.exe)
if(NOT app)
  message(FATAL_ERROR "consumer.${MODE}: the build made no program app")
endif()
list(GET app 0 app)
run(${app})
