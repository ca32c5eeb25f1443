#pragma once
// The checkpoints a training helper of the examples takes (train_cnn_moe, train_synthetic_mixture, ...),
// as a template argument, so that the helpers stay free of cereal:
//
//   checkpoints.keep(records);      // what the helper gathers while it trains (per-epoch records): saved
//                                   // with each checkpoint, restored by resume; call before resume
//   checkpoints.resume(trainer);    // before fit: goes on from the last checkpoint, if there is one
//   trainer.fit(n, step, ..., checkpoints);  // a Trainer callback: saves checkpoints, may stop the run
//   checkpoints.elapsed_seconds();  // the time spent on this training, earlier invocations included
//
// A kept object has a cereal `serialize` member (which needs no cereal header to declare). NoCheckpoints
// keeps nothing: a test, or a program that does not resume. UnitCheckpoint (common/resume.hpp) keeps those
// of one unit of a resumable run.

#include <chrono>

namespace moe::examples {

class NoCheckpoints {
 public:
  template <class T>
  void keep(T& /*object*/) {}
  template <class T>
  void resume(T& /*trainer*/) {}
  template <class T>
  void on_commit(T& /*trainer*/) {}

  double elapsed_seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

 private:
  using Clock = std::chrono::steady_clock;
  Clock::time_point start_ = Clock::now();
};

}  // namespace moe::examples
