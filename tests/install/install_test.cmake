# Packaging tests, included from tests/CMakeLists.txt.
#
#   install_outside_project: `cmake --install` of this build into a temporary prefix, then a separate
#     CMake project (outside_project/) finds it with find_package(Tessera), builds
#     examples/cpp/custom_model.cpp and examples/cpp/surgery_ready_model.cpp (a plain LibTorch module refused by
#     blurpool with the slots message; its SlottedModule version surgered and trained) against Tessera::tessera
#     and runs them (exit 0 expected).
#   example_custom_model, example_surgery_ready_model: the same programs built in-tree.
#
# Run only these: ctest --test-dir build -L install
set(TESSERA_INSTALL_TEST_DIR ${PROJECT_BINARY_DIR}/install_test)
add_test(NAME install_outside_project
         COMMAND ${CMAKE_COMMAND}
                 -DTESSERA_BUILD_DIR=${PROJECT_BINARY_DIR}
                 -DTESSERA_SOURCE_DIR=${PROJECT_SOURCE_DIR}
                 -DWORK_DIR=${TESSERA_INSTALL_TEST_DIR}
                 -DGENERATOR=${CMAKE_GENERATOR}
                 -DCXX_COMPILER=${CMAKE_CXX_COMPILER}
                 -DCXX_COMPILER_LAUNCHER=${CCACHE_PROGRAM}
                 -DBUILD_TYPE=${CMAKE_BUILD_TYPE}
                 -DTORCH_DIR=${Torch_DIR}
                 -DCONFIG=$<CONFIG>
                 -P ${CMAKE_CURRENT_LIST_DIR}/run_install_test.cmake)
# Compiling the example without precompiled headers takes a while on 2 cores.
set_tests_properties(install_outside_project PROPERTIES TIMEOUT 1200 LABELS "install" RUN_SERIAL TRUE)

foreach(program custom_model surgery_ready_model)
  if(TARGET ${program})
    add_test(NAME example_${program} COMMAND $<TARGET_FILE:${program}>)
    set_tests_properties(example_${program} PROPERTIES TIMEOUT 300 LABELS "install;example")
  endif()
endforeach()
