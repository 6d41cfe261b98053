// `ddp`: synchronous data parallelism with bucketed all-reduce overlapped with backward.
// Reference: "PyTorch Distributed: Experiences on Accelerating Data Parallel Training"
// (arXiv 2006.15704); docs/algorithms/ddp.md.
//
//   setup:  broadcast parameters and buffers from rank 0
//           buckets = parameters in reverse registration order, cut at first_bucket_mb for the
//           first bucket and bucket_cap_mb for the others; each bucket is a contiguous slice of
//           the flat gradient buffer (gradients are views of it: no copies)
//   step:   G <- 0
//           for k in 1..accumulation: backward(loss_k / accumulation)
//             (only during the last backward) when every gradient of bucket b is final and
//             buckets 0..b-1 are launched: launch all_reduce_async(bucket b)
//           after backward: launch the buckets not launched yet (unused parameters)
//           wait for all; G /= N; clip; theta <- Opt(theta, G)
//
// A gradient is final when its AccumulateGrad node has run (a post hook on it), so buckets go
// out while backward is still computing the earlier layers. Buckets are launched strictly in
// index order, so every rank issues the same collectives in the same order.
//
// Options ([algorithm]): bucket_cap_mb (25), first_bucket_mb (1), broadcast_buffers (true),
// find_unused_parameters (false), comm_dtype ("full" = the gradients' precision | "float32" |
// "bfloat16" | "float16"; a narrower type is summed in the gradients' precision), overlap (true;
// false = all-reduce after backward, for comparison).
//
// Elastic restart: the optimizer state is replicated (every rank applies the same averaged
// gradient), so every new rank takes old rank 0's.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/elastic.h"

namespace desync {

struct DdpOptions {
  double bucket_cap_mb = 25.0;
  double first_bucket_mb = 1.0;
  bool broadcast_buffers = true;
  bool find_unused_parameters = false;
  std::optional<torch::ScalarType> comm_dtype;  // nullopt: the gradients' own precision
  bool overlap = true;
};

// Bucketed gradient all-reduce over a flat gradient buffer (reusable by other algorithms).
class GradReducer {
 public:
  // `flat` must outlive the reducer. Hooks are installed on the parameters' grad accumulators.
  GradReducer(FlatParameters& flat, Communicator& comm, const DdpOptions& opts);
  ~GradReducer();

  // Arms the reducer for the next backward: hooks launch buckets as gradients become final.
  void prepare();
  // Launches what is left, waits for every bucket and divides by the world size. Each bucket's
  // all-reduce is recorded as reduction group b (core/reductions.h): from its launch to the
  // return of its wait() here.
  void finish();

  int64_t num_buckets() const { return static_cast<int64_t>(buckets_.size()); }
  // Buckets launched before finish() was called in the last step (i.e. during backward).
  int64_t launched_during_backward() const { return launched_in_backward_; }

 private:
  struct Bucket {
    int64_t begin = 0, end = 0;  // in the flat buffer
    int64_t params = 0, ready = 0;
    std::shared_ptr<Work> work;
    int64_t issue_us = 0;  // when it was launched (Tracer::now_us())
    int64_t bytes = 0;     // its payload in the wire precision
  };
  void mark_ready(size_t param_index);
  void launch_ready_in_order();

  FlatParameters& flat_;
  Communicator& comm_;
  DdpOptions opts_;
  std::vector<Bucket> buckets_;
  std::vector<int64_t> bucket_of_;  // per parameter
  std::vector<c10::intrusive_ptr<torch::autograd::Node>> accumulators_;
  std::vector<bool> seen_;
  // The hooks outlive the reducer (autograd has no way to remove them): they reach it through
  // this cell, which the destructor clears.
  std::shared_ptr<GradReducer*> self_;
  int64_t next_launch_ = 0;
  int64_t launched_in_backward_ = 0;
  bool armed_ = false;
};

class Ddp : public Algorithm, public Elastic {
 public:
  explicit Ddp(DdpOptions opts) : opts_(opts) {}
  void setup(Context& ctx) override;
  StepReport step(Context& ctx) override;
  void save(Archive& archive) const override;
  void load(const Archive& archive) override;
  void load_resharded(const std::vector<Archive>& old_ranks, int64_t step) override;
  AlgorithmReport report() const override;

  const GradReducer& reducer() const { return *reducer_; }

 private:
  DdpOptions opts_;
  int64_t accumulation_ = 1;
  std::unique_ptr<FlatParameters> flat_;
  std::unique_ptr<GradReducer> reducer_;
  std::unique_ptr<Optimizer> optimizer_;
  std::vector<torch::Tensor> buffers_;
};

}  // namespace desync
