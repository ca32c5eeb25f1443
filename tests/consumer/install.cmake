# cmake -DBUILD_DIR=<moe build> -DPREFIX=<dir> -DCONFIG=<config> -DINCLUDEDIR=<rel> -DCMAKEDIR=<rel> -P install.cmake
#
# The fixture of consumer.find_package: `cmake --install` of this build into an empty PREFIX, then a look
# at the installed layout.
cmake_minimum_required(VERSION 3.20)
file(REMOVE_RECURSE ${PREFIX})
set(config_args)
if(CONFIG)
  set(config_args --config ${CONFIG})
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${PREFIX} ${config_args}
                RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "cmake --install ${BUILD_DIR} --prefix ${PREFIX} failed (${status})")
endif()
foreach(file ${INCLUDEDIR}/moe/moe.hpp ${INCLUDEDIR}/moe/layer/moe_layer.hpp
             ${INCLUDEDIR}/backends/cpu/cpu_backend.hpp ${INCLUDEDIR}/single_include/moe/moe.hpp
             ${CMAKEDIR}/moeConfig.cmake ${CMAKEDIR}/moeConfigVersion.cmake ${CMAKEDIR}/moeTargets.cmake)
  if(NOT EXISTS ${PREFIX}/${file})
    message(FATAL_ERROR "cmake --install did not install ${file}")
  endif()
endforeach()
message(STATUS "moe installed into ${PREFIX}")
