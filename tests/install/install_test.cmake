# Packaging tests, included from tests/CMakeLists.txt.
#
#   install_outside_project: `cmake --install` of this build into a temporary prefix, then a separate
#     CMake project (outside_project/) finds it with find_package(Tessera), builds
#     examples/cpp/custom_model.cpp against Tessera::tessera and runs it (exit 0 expected).
#   example_custom_model: the same program built in-tree.
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

if(TARGET custom_model)
  add_test(NAME example_custom_model COMMAND $<TARGET_FILE:custom_model>)
  set_tests_properties(example_custom_model PROPERTIES TIMEOUT 300 LABELS "install;example")
endif()
