# cmake -P script behind the `configure_rejects_*` ctests: configures the project against a fake LibTorch package and
# checks that configuring fails with the expected message (the bad-input rules of README "Supported LibTorch").
#   cmake -DSOURCE_DIR=<repo> -DWORK_DIR=<tmp> -DCASE=old_libtorch|cuda_major_mismatch -P configure_errors.cmake
foreach(var SOURCE_DIR WORK_DIR CASE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "configure_errors.cmake: -D${var}=... is required")
  endif()
endforeach()
set(fake ${WORK_DIR}/${CASE}/torch)
file(REMOVE_RECURSE ${WORK_DIR}/${CASE})
file(MAKE_DIRECTORY ${fake}/share/cmake/Torch ${fake}/lib)

if(CASE STREQUAL "old_libtorch")
  set(version 1.12.1)
  set(config "add_library(torch INTERFACE IMPORTED)\nset(TORCH_LIBRARIES torch)\nset(Torch_FOUND TRUE)\n")
  set(expect "Tessera needs LibTorch 1.13 or newer; found version '1.12.1'")
  set(extra_args "")
elseif(CASE STREQUAL "cuda_major_mismatch")
  find_program(nvcc nvcc HINTS /usr/local/cuda/bin)
  if(NOT nvcc)
    message("no nvcc: skipping")
    return()
  endif()
  # A CUDA LibTorch whose runtime is two major versions older than the machine's nvcc: its libc10_cuda names it.
  execute_process(COMMAND ${nvcc} --version OUTPUT_VARIABLE out)
  string(REGEX MATCH "release ([0-9]+)" _ "${out}")
  math(EXPR old "${CMAKE_MATCH_1} - 2")
  file(WRITE ${fake}/lib/libc10_cuda.so "not a library\nlibcudart.so.${old}\n")
  set(version 2.15.0)
  set(config "add_library(torch INTERFACE IMPORTED)\nset(TORCH_LIBRARIES torch)\nset(Torch_FOUND TRUE)\n"
             "set(CAFFE2_USE_CUDA ON)\nset(TORCH_INSTALL_PREFIX ${fake})\n"
             "set(C10_CUDA_LIBRARY ${fake}/lib/libc10_cuda.so)\n")
  set(expect "was built with CUDA ${old} (it links libcudart.so.${old}), but the CUDA compiler")
  set(extra_args -DCMAKE_CUDA_COMPILER=${nvcc})
else()
  message(FATAL_ERROR "configure_errors.cmake: unknown CASE ${CASE}")
endif()
file(WRITE ${fake}/share/cmake/Torch/TorchConfig.cmake ${config})
file(WRITE ${fake}/share/cmake/Torch/TorchConfigVersion.cmake
     "set(PACKAGE_VERSION ${version})\nset(PACKAGE_VERSION_COMPATIBLE TRUE)\n")

execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/${CASE}/build -G Ninja
                        -DTorch_DIR=${fake}/share/cmake/Torch -DTESSERA_BUILD_TESTS=OFF
                        -DTESSERA_BUILD_BENCHMARKS=OFF -DTESSERA_BUILD_EXAMPLES=OFF ${extra_args}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
string(REGEX REPLACE "[ \n]+" " " flat "${out} ${err}")
if(rc EQUAL 0)
  message(FATAL_ERROR "configuring against ${CASE} succeeded; expected it to fail with: ${expect}")
endif()
string(FIND "${flat}" "${expect}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "configuring against ${CASE} failed without the expected message \"${expect}\":\n${out}\n${err}")
endif()
file(REMOVE_RECURSE ${WORK_DIR}/${CASE})
message("ok: ${expect}")
