#pragma once
// The progress line of an example that runs several trainings under one line (trials, seeds): the
// library's moe::ProgressMeter (moe/train/progress.hpp), which moe::ProgressBar shows for one Trainer run.

#include "moe/train/progress.hpp"

namespace moe::examples {

using Progress = ProgressMeter;

}  // namespace moe::examples
