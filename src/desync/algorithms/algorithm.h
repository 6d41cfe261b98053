// The Algorithm interface: one training method.
//
// The Trainer owns the loop (budget, evaluation, checkpoints, metrics); an Algorithm owns one
// step of its method. The Trainer calls, on every rank:
//
//   make_algorithm(cfg)        construct; traits() are fixed from here on
//   setup(ctx)                 once
//   step(ctx)                  once per step, until the budget is spent
//   model_for_eval(ctx)        before each evaluation
//   report()                   after each evaluation and once at the end
//   save(archive) / load(...)  at each checkpoint / once on --resume, after setup()
//   finish(ctx)                once, after the last step
//
// An Algorithm never touches c10d, files or the terminal: it talks to other ranks through
// ctx.comm (and channels split from it) only, and reads data through ctx.batches only.
// See docs/architecture.md for how a micro-batch travels and where a new algorithm goes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "desync/comm/communicator.h"
#include "desync/core/archive.h"
#include "desync/core/config.h"
#include "desync/data/batch_source.h"
#include "desync/models/staged_model.h"
#include "desync/optim/optimizer.h"
#include "desync/optim/schedule.h"

namespace desync {

// What the Trainer gives an algorithm. It outlives every call on the algorithm.
struct Context {
  const Config& config;
  Communicator& comm;
  StagedModel model;
  MicroBatchSource& batches;
  const Schedule& schedule;
  int64_t step = 0;              // index of the step being taken (0-based)
  double compute_stretch = 1.0;  // >1 emulates a slower worker (1 / run.worker_speed[rank])
  // Global micro-batches left in the run's data budget before this step (the same on every
  // rank); -1 when the run is counted in steps (run.steps). Only an algorithm whose
  // consumption varies needs it: its step must not take more than its share (see
  // AlgorithmTraits::consumption_varies).
  int64_t micro_batches_left = -1;
  // The channel for evaluation-time traffic (averaging models to evaluate them), kept out of
  // the training traffic the run reports; null means ctx.comm.
  Communicator* eval_comm = nullptr;

  Communicator& eval_channel() const { return eval_comm ? *eval_comm : comm; }

  // The optimizer named by [optimizer] over `slots`, with the model's per-tensor learning-rate
  // scales.
  std::unique_ptr<Optimizer> make_optimizer(std::vector<ParamSlot> slots) const {
    return desync::make_optimizer(config, std::move(slots));
  }
};

// What one step consumed on this rank.
struct StepReport {
  double loss = 0.0;          // mean loss over the micro-batches this rank consumed
  int64_t samples = 0;        // examples this rank consumed
  int64_t micro_batches = 0;  // micro-batches this rank consumed

  // Adds another part of the same step: consumption adds up; the loss becomes the mean over
  // all the micro-batches.
  StepReport& operator+=(const StepReport& o) {
    const int64_t n = micro_batches + o.micro_batches;
    loss = n > 0 ? (loss * static_cast<double>(micro_batches) +
                    o.loss * static_cast<double>(o.micro_batches)) /
                       static_cast<double>(n)
                 : 0.0;
    micro_batches = n;
    samples += o.samples;
    return *this;
  }
};

// What an algorithm declares about itself when it is built. The Trainer reads it before
// setup() to place the data and to turn the run's data budget into steps.
struct AlgorithmTraits {
  enum class Data {
    kSharded,    // every rank reads its own disjoint shard of each global batch
    kFirstRank,  // the first rank reads the whole stream; the others read none (pipelines)
  };
  Data data = Data::kSharded;
  // Each reading rank consumes this many times algorithm.accumulation micro-batches in one
  // step (the least it consumes, when consumption varies: ACCO's two rounds). Global
  // consumption per step is that times the number of readers.
  int64_t accumulations_per_step = 1;
  // True when a step consumes a number of micro-batches that varies from step to step or from
  // rank to rank (ACCO: faster workers accumulate more; GASLoC: workers with fewer inner
  // steps). The Trainer then sums the ranks' consumption after every step (one scalar
  // all-reduce on ctx.comm) and stops when the budget is spent; the schedule's length is
  // estimated from accumulations_per_step. A step that may take more than `accumulation`
  // micro-batches per rank must stop at its share of ctx.micro_batches_left.
  bool consumption_varies = false;
};

// Bytes held by named buffers ("parameters", "gradients", "optimizer_state", ...).
using MemoryReport = std::vector<std::pair<std::string, int64_t>>;

// What an algorithm wants shown: summary.json's memory_bytes, algorithm_stats and
// eval_metrics (and the eval records of metrics.jsonl).
struct AlgorithmReport {
  MemoryReport memory = {};
  // Named per-rank counts (e.g. a pipeline stage's peak number of buffered micro-batches).
  std::vector<std::pair<std::string, int64_t>> counts = {};
  // Figures about the model last returned by model_for_eval() (e.g. consensus_distance).
  std::vector<std::pair<std::string, double>> eval_metrics = {};
};

class Algorithm {
 public:
  explicit Algorithm(AlgorithmTraits traits = {}) : traits_(traits) {}
  virtual ~Algorithm() = default;

  const AlgorithmTraits& traits() const { return traits_; }

  // Called once on every rank, before any other call, after the model is built and seeded
  // identically on every rank. Collective: it may communicate (e.g. broadcast the initial
  // parameters). Builds the optimizer, buffers and channels; consumes no data.
  virtual void setup(Context& ctx) = 0;

  // One step of the method: called once per step on every rank, ctx.step = 0, 1, ...
  // Collective in the method's own sense (a synchronous method's ranks all call it the same
  // number of times; an asynchronous one may not wait for anyone). Pulls as many micro-batches
  // from ctx.batches as the method needs, updates ctx.model (and its own state), and reports
  // what this rank consumed.
  virtual StepReport step(Context& ctx) = 0;

  // The model the Trainer evaluates: called before each evaluation on every rank. Collective:
  // it may average over ranks, on ctx.eval_channel() only (an ensemble's average, DiLoCo's
  // global copy, a pipeline's stages shared from their owners). Must not change training state.
  virtual StagedModel model_for_eval(Context& ctx) { return ctx.model; }

  // Called once on every rank after the last step, before the final evaluation. Collective:
  // drains what is in flight (a pipeline's owed backwards) and stops helper threads, so that
  // ctx.model holds this rank's final parameters. Later calls are no-ops.
  virtual void finish(Context& ctx) {}

  // The algorithm's own state for a checkpoint (optimizer state, buffers, counters); the
  // Trainer saves the model, sampler, RNG and its own counters itself. Called on every rank
  // at each checkpoint, between steps; not collective. load() is called once, after setup(),
  // on --resume; it throws CheckpointError for state that cannot be restored.
  virtual void save(Archive& archive) const = 0;
  virtual void load(const Archive& archive) = 0;

  // What the algorithm wants shown. Called on every rank after each evaluation and once at
  // the end; not collective; reads only the algorithm's own state. Each rank reports the same
  // names in the same order.
  virtual AlgorithmReport report() const { return {}; }

 private:
  AlgorithmTraits traits_;
};

}  // namespace desync
