# cmake -P script behind the `install_outside_project` ctest (see install_test.cmake for the arguments).
cmake_minimum_required(VERSION 3.18)

foreach(var TESSERA_BUILD_DIR TESSERA_SOURCE_DIR WORK_DIR GENERATOR)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "run_install_test.cmake: -D${var}=... is required")
  endif()
endforeach()
if(NOT BUILD_TYPE)
  set(BUILD_TYPE Release)
endif()

set(prefix ${WORK_DIR}/prefix)
set(build ${WORK_DIR}/build)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

function(step name)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "install test: ${name} failed (${rc}):\n  ${ARGN}\n${out}")
  endif()
  message(STATUS "install test: ${name}: ok")
endfunction()

# 1. Install the build into a fresh prefix.
set(install_args --install ${TESSERA_BUILD_DIR} --prefix ${prefix})
if(CONFIG)
  list(APPEND install_args --config ${CONFIG})
endif()
step("cmake --install" ${CMAKE_COMMAND} ${install_args})
foreach(needed include/tessera/tessera.h include/tessera/version.h)
  if(NOT EXISTS ${prefix}/${needed})
    message(FATAL_ERROR "install test: ${needed} is missing from the install prefix ${prefix}")
  endif()
endforeach()

# The installed runner must start from the prefix (it finds libtessera through its RPATH).
set(runner ${prefix}/bin/tessera-run)
if(EXISTS ${runner})
  step("installed tessera-run --help" ${runner} --help)
endif()

# 2. Configure a separate project that only knows the prefix. Torch_DIR is passed on so that a LibTorch
#    outside the system folders (the GPU machines' pip torch) is found the same way as in the main build.
set(configure_args -S ${TESSERA_SOURCE_DIR}/tests/install/outside_project -B ${build} -G ${GENERATOR}
    -DCMAKE_BUILD_TYPE=${BUILD_TYPE} -DCMAKE_PREFIX_PATH=${prefix}
    -DTESSERA_EXPECTED_PREFIX=${prefix}
    -DTESSERA_EXAMPLES_DIR=${TESSERA_SOURCE_DIR}/examples/cpp)
if(CXX_COMPILER)
  list(APPEND configure_args -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
endif()
if(CXX_COMPILER_LAUNCHER)
  list(APPEND configure_args -DCMAKE_CXX_COMPILER_LAUNCHER=${CXX_COMPILER_LAUNCHER})
endif()
if(TORCH_DIR)
  list(APPEND configure_args -DTorch_DIR=${TORCH_DIR})
endif()
step("configure outside project" ${CMAKE_COMMAND} ${configure_args})

# 3. Build it and run the examples (each exits 0 when what it checks holds).
step("build outside project" ${CMAKE_COMMAND} --build ${build} --parallel 2)
foreach(name custom_model surgery_ready_model)
  set(program ${build}/${name})
  if(NOT EXISTS ${program} AND EXISTS ${build}/${BUILD_TYPE}/${name})
    set(program ${build}/${BUILD_TYPE}/${name})
  endif()
  execute_process(COMMAND ${program} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message(STATUS "${name} output:\n${out}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "install test: ${name} exited with ${rc}\n${out}\n${err}")
  endif()
endforeach()
message(STATUS "install test: passed")
