// The test binaries' main: GoogleTest's own, except that a run in which no test passed because every selected test
// skipped exits with 77, which ctest reports as skipped (SKIP_RETURN_CODE, tests/test_groups.cmake). ctest runs the
// tests in groups (a suite, or part of a large one, per process), so a group is reported skipped only when all of
// its tests skipped (the GPU tests without a GPU); a group with one skipped test and others that pass passes, and one
// with a failure fails.
#include <gtest/gtest.h>

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  const int failed = RUN_ALL_TESTS();
  const testing::UnitTest& unit = *testing::UnitTest::GetInstance();
  if (failed == 0 && unit.successful_test_count() == 0 && unit.skipped_test_count() > 0) return 77;
  return failed;
}
