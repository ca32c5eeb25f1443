// fma_peak.hpp's loop needs the machine's vector instructions whatever flags the benchmark that reports
// the peak is built with (moe_bench is built portable and -march=native): this file is built with
// -march=native on its own and linked into both.

#include "fma_peak.hpp"

namespace moe_bench {

double machine_fma_peak_gflops(int threads) { return fma_peak_gflops(threads); }

}  // namespace moe_bench
