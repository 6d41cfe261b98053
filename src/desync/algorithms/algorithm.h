// The Algorithm interface: one training method.
//
// The Trainer owns the loop; an Algorithm owns one optimizer step. setup() is called once with
// the Context (after the model is built and seeded identically on every rank); step() takes one
// optimizer step, pulling as many micro-batches from ctx.batches as the method needs, and
// reports the mean training loss of the micro-batches it consumed. model_for_eval() returns the
// model the Trainer evaluates (an average for ensembles, the global copy for DiLoCo).
// save()/load() carry the algorithm's own state (optimizer state, buffers in flight) through
// checkpoints; the Trainer saves the model, sampler and RNG itself.
//
// An Algorithm never touches c10d, files or the terminal: it talks to other ranks through
// ctx.comm only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "desync/comm/communicator.h"
#include "desync/core/archive.h"
#include "desync/core/config.h"
#include "desync/data/batch_source.h"
#include "desync/models/staged_model.h"
#include "desync/optim/optimizer.h"
#include "desync/optim/schedule.h"

namespace desync {

struct Context {
  const Config& config;
  Communicator& comm;
  StagedModel model;
  MicroBatchSource& batches;
  const Schedule& schedule;
  int64_t step = 0;              // index of the optimizer step being taken (0-based)
  double compute_stretch = 1.0;  // >1 emulates a slower worker (1 / run.worker_speed[rank])
  // The channel for evaluation-time traffic (averaging models to evaluate them), kept out of
  // the training traffic the run reports; null means ctx.comm.
  Communicator* eval_comm = nullptr;

  Communicator& eval_channel() const { return eval_comm ? *eval_comm : comm; }

  // The optimizer named by [optimizer] over `slots`.
  std::unique_ptr<Optimizer> make_optimizer(std::vector<ParamSlot> slots) const {
    return desync::make_optimizer(config.optimizer, std::move(slots));
  }
};

struct StepReport {
  double loss = 0.0;          // mean loss over the micro-batches this rank consumed
  int64_t samples = 0;        // examples this rank consumed
  int64_t micro_batches = 0;  // micro-batches this rank consumed
  double idle_seconds = 0.0;  // time the training thread waited for a background comm thread
  // The part of idle_seconds spent blocked in calls on a split channel (whose own stats count
  // it too), so the Trainer reports it as waiting and not as overlapped communication.
  double idle_in_split_calls = 0.0;

  // Adds another part of the same step: consumption and waits add up; the loss becomes the
  // mean over all the micro-batches.
  StepReport& operator+=(const StepReport& o) {
    const int64_t n = micro_batches + o.micro_batches;
    loss = n > 0 ? (loss * static_cast<double>(micro_batches) +
                    o.loss * static_cast<double>(o.micro_batches)) /
                       static_cast<double>(n)
                 : 0.0;
    micro_batches = n;
    samples += o.samples;
    idle_seconds += o.idle_seconds;
    idle_in_split_calls += o.idle_in_split_calls;
    return *this;
  }
};

// Bytes held by named buffers, for the memory report ("parameters", "gradients", ...).
using MemoryReport = std::vector<std::pair<std::string, int64_t>>;

class Algorithm {
 public:
  virtual ~Algorithm() = default;

  virtual void setup(Context& ctx) = 0;
  virtual StepReport step(Context& ctx) = 0;
  virtual StagedModel model_for_eval(Context& ctx) { return ctx.model; }
  virtual std::vector<std::pair<std::string, double>> eval_metrics() const { return {}; }
  virtual void finish(Context& ctx) {}
  // Seconds background threads spent blocked in calls waiting for work (a server waiting for
  // requests): reported neither as waiting nor as overlapped communication.
  virtual double background_idle_seconds() const { return 0.0; }
  // False for methods whose first rank reads the whole stream (pipelines): the Trainer then
  // gives every rank the unsharded stream, and only the ranks that read it consume samples.
  virtual bool shards_data() const { return true; }
  // Named per-rank counts for summary.json's `algorithm_stats` (e.g. a pipeline stage's peak
  // number of buffered micro-batches).
  virtual std::vector<std::pair<std::string, int64_t>> stats() const { return {}; }
  virtual void save(Archive& archive) const = 0;
  virtual void load(const Archive& archive) = 0;
  virtual MemoryReport memory() const { return {}; }
};

}  // namespace desync
