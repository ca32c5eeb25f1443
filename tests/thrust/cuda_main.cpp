// The Catch2 runner of moe_cuda_tests: without a CUDA device the tests are skipped (exit code 77, which
// ctest's SKIP_RETURN_CODE reports as a skip), except when Catch2 is only asked to list them.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <cstdio>

int main(int argc, char* argv[]) {
  Catch::Session session;
  if (const int status = session.applyCommandLine(argc, argv); status != 0) return status;
  const Catch::ConfigData& config = session.configData();
  const bool listing = config.listTests || config.listTestNamesOnly || config.listTags || config.listReporters;
  int devices = 0;
  if (!listing && (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)) {
    std::puts("skipped: no CUDA device");
    return 77;
  }
  return session.run();
}
