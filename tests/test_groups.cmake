# ctest entries for a GoogleTest binary, one per group of tests: a test suite, or consecutive parts of at most
# <group_size> tests of a larger one. Read by ctest each time it starts (TEST_INCLUDE_FILES, set by
# tessera_add_test_groups in tests/CMakeLists.txt), so the entries always match the binary that was built.
#
# Why groups and not one entry per test: each process loads LibTorch before its first test (about 0.5 s with
# Debian's, more with PyPI's CUDA build), which for 1500 one-test processes was a third of the suite's time. A group
# runs in one process, so its tests share the process as they do when the binary is run by hand; each TEST still
# restores what it changes. A group whose tests all skip is reported skipped (tests/main.cpp exits with 77); one
# test of a group is run with `<binary> --gtest_filter=Suite.Name`.
#
# Entry names: `Suite.*`, or `Suite.*[k/n]` for the k-th of n parts of a large suite; `ctest -R Suite` selects them.

function(tessera_test_groups exe work_dir group_size timeout labels)
  get_filename_component(name "${exe}" NAME)
  if(NOT EXISTS "${exe}")
    add_test("${name}_NOT_BUILT" "${name}_NOT_BUILT")  # fails: build before running ctest
    return()
  endif()
  execute_process(COMMAND "${exe}" --gtest_list_tests WORKING_DIRECTORY "${work_dir}" TIMEOUT 120
                  OUTPUT_VARIABLE listing ERROR_VARIABLE errors RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "tessera: listing the tests of ${exe} failed (${rc}):\n${errors}")
  endif()
  # Lines: "Suite." then "  Test", each possibly followed by "  # GetParam() = ..." (dropped: names hold no '#').
  string(REGEX REPLACE "[ ]*#[^\n]*" "" listing "${listing}")
  string(REPLACE ";" "" listing "${listing}")
  string(REPLACE "\n" ";" lines "${listing}")
  set(suites "")
  foreach(line IN LISTS lines)
    if(line MATCHES "^([^ ].*)\\.$")
      set(suite "${CMAKE_MATCH_1}")
      list(APPEND suites "${suite}")
      set("tests_of_${suite}" "")
    elseif(line MATCHES "^  (.+)$")
      list(APPEND "tests_of_${suite}" "${CMAKE_MATCH_1}")
    elseif(NOT line STREQUAL "")  # a line this parser does not know would lose tests silently
      message(FATAL_ERROR "tessera: unexpected line in the test list of ${exe}: '${line}'")
    endif()
  endforeach()
  foreach(suite IN LISTS suites)
    set(tests ${tests_of_${suite}})
    list(LENGTH tests count)
    math(EXPR parts "(${count} + ${group_size} - 1) / ${group_size}")
    foreach(part RANGE 1 ${parts})
      if(parts EQUAL 1)
        set(entry "${suite}.*")
        set(filter "${suite}.*")
        set(size ${count})
      else()
        # Even parts: 231 tests in 8 parts of 28 or 29, not seven of 32 and one of 7.
        math(EXPR first "(${part} - 1) * ${count} / ${parts}")
        math(EXPR size "${part} * ${count} / ${parts} - ${first}")
        list(SUBLIST tests ${first} ${size} chosen)
        list(TRANSFORM chosen PREPEND "${suite}.")
        string(JOIN ":" filter ${chosen})
        set(entry "${suite}.*[${part}/${parts}]")
      endif()
      add_test("${entry}" "${exe}" "--gtest_filter=${filter}")
      # COST: the first run (no timings recorded yet) starts the largest groups first.
      set_tests_properties("${entry}" PROPERTIES WORKING_DIRECTORY "${work_dir}" SKIP_RETURN_CODE 77
                           TIMEOUT ${timeout} COST ${size} LABELS "${labels}")
    endforeach()
  endforeach()
endfunction()
