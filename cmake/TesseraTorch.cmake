# Helpers around find_package(Torch), for Tessera's build and for users of the installed package (installed beside
# TesseraConfig.cmake).

# tessera_prepare_torch_search(): call before find_package(Torch). TorchConfig looks its libraries up with
# find_library(... PATHS <torch>/lib), which searches the system folders first: with Debian's libtorch-dev installed,
# a PyPI torch would link Debian's libc10 beside its own (two c10 in one process: heap corruption at start). It also
# takes the CUDA runtime and NVRTC from the CUDA toolkit, while a PyPI torch loads those in its own packages (its
# CUDA version, not the toolkit's). This finds the
# TorchConfig.cmake that find_package(Torch) will find and pins those libraries to the ones of that torch.
macro(tessera_prepare_torch_search)
  find_file(TESSERA_TORCH_CONFIG TorchConfig.cmake
            HINTS ${Torch_DIR} ${CMAKE_PREFIX_PATH} $ENV{CMAKE_PREFIX_PATH} $ENV{Torch_DIR}
            PATH_SUFFIXES Torch share/cmake/Torch lib/cmake/Torch NO_DEFAULT_PATH)
  if(TESSERA_TORCH_CONFIG)
    # TorchConfig finds its Caffe2 dependency on the usual search path, where Debian's (1.13) may come first when only
    # Torch_DIR points at another LibTorch: take the Caffe2 beside that TorchConfig.
    get_filename_component(_tessera_caffe2 "${TESSERA_TORCH_CONFIG}/../../Caffe2" ABSOLUTE)
    if(NOT Caffe2_DIR AND EXISTS "${_tessera_caffe2}/Caffe2Config.cmake")
      set(Caffe2_DIR "${_tessera_caffe2}" CACHE PATH "the Caffe2 package of the LibTorch found")
    endif()
    get_filename_component(_tessera_torch_root "${TESSERA_TORCH_CONFIG}/../../../.." ABSOLUTE)
    foreach(_tessera_pair "c10_LIBRARY;c10" "TORCH_LIBRARY;torch" "C10_CUDA_LIBRARY;c10_cuda" "kineto_LIBRARY;kineto")
      list(GET _tessera_pair 0 _tessera_var)
      list(GET _tessera_pair 1 _tessera_lib)
      if(EXISTS "${_tessera_torch_root}/lib/lib${_tessera_lib}.so" AND NOT DEFINED CACHE{${_tessera_var}})
        set(${_tessera_var} "${_tessera_torch_root}/lib/lib${_tessera_lib}.so" CACHE FILEPATH "LibTorch's ${_tessera_lib}")
      endif()
    endforeach()
    foreach(_tessera_lib cudart nvrtc)  # what TorchConfig links from the toolkit (CUDA::cudart, CUDA_NVRTC_LIB)
      file(GLOB _tessera_found "${_tessera_torch_root}/../nvidia/*/lib/lib${_tessera_lib}.so.[0-9]*")
      if(_tessera_found AND NOT DEFINED CACHE{CUDA_${_tessera_lib}_LIBRARY})
        list(GET _tessera_found 0 _tessera_found)
        set(CUDA_${_tessera_lib}_LIBRARY "${_tessera_found}" CACHE FILEPATH "the PyPI torch's ${_tessera_lib}")
      endif()
    endforeach()
  endif()
endmacro()

# tessera_torch_cuda_lib_dirs(<var>): the folders of the CUDA libraries a PyPI torch ships in its own packages
# (site-packages/nvidia/*/lib, which libtorch_cuda finds through its $ORIGIN rpath). The linker does not expand
# $ORIGIN, so without -rpath-link to them it resolves libtorch_cuda's libnccl.so.2 (say) against an older copy in the
# CUDA toolkit and fails on missing symbols. Empty for other LibTorch builds.
function(tessera_torch_cuda_lib_dirs var)
  file(GLOB dirs LIST_DIRECTORIES true "${TORCH_INSTALL_PREFIX}/../nvidia/*/lib")
  set(${var} ${dirs} PARENT_SCOPE)
endfunction()

# tessera_check_cuda_version(): fails at configure time when the CUDA toolkit (nvcc) has another major version than
# the CUDA that LibTorch was built with. The kernels would compile, then fail to load or link against a second
# CUDA runtime. LibTorch's own CUDA version is read from the runtime its libc10_cuda links (libcudart.so.<major>).
function(tessera_check_cuda_version)
  set(lib "${C10_CUDA_LIBRARY}")
  if(NOT lib OR NOT EXISTS "${lib}")
    find_library(lib c10_cuda PATHS "${TORCH_INSTALL_PREFIX}/lib" NO_DEFAULT_PATH)
  endif()
  if(NOT lib OR NOT EXISTS "${lib}")
    message(WARNING "Tessera: cannot find LibTorch's libc10_cuda to read its CUDA version; not checked")
    return()
  endif()
  file(STRINGS "${lib}" needed REGEX "^libcudart\\.so\\.[0-9]+$" LIMIT_COUNT 1)
  if(NOT needed)
    message(WARNING "Tessera: ${lib} names no libcudart.so.<major>; the CUDA versions are not checked")
    return()
  endif()
  string(REGEX REPLACE "^libcudart\\.so\\." "" torch_major "${needed}")
  string(REGEX MATCH "^[0-9]+" nvcc_major "${CMAKE_CUDA_COMPILER_VERSION}")
  set(TESSERA_TORCH_CUDA_MAJOR ${torch_major} PARENT_SCOPE)
  if(NOT torch_major STREQUAL nvcc_major)
    message(FATAL_ERROR
      "Tessera: LibTorch at ${Torch_DIR} was built with CUDA ${torch_major} (it links ${needed}), but the CUDA "
      "compiler ${CMAKE_CUDA_COMPILER} is version ${CMAKE_CUDA_COMPILER_VERSION}. Use an nvcc of CUDA "
      "${torch_major}.x: set CUDACXX or -DCMAKE_CUDA_COMPILER=<path>/nvcc (PyPI's nvidia-cuda-nvcc package ships "
      "one), or configure with -DTESSERA_CUDA=OFF to build without the fused CUDA kernels")
  endif()
  message(STATUS "Tessera: LibTorch's CUDA ${torch_major} matches nvcc ${CMAKE_CUDA_COMPILER_VERSION}")
endfunction()
