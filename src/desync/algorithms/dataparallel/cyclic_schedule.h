// The cyclic schedule shared by the cyclic data-parallel methods (cdp, cdp_zero, cdp_mp).
// Reference: "Cyclic Data Parallelism for Efficient Parallelism of Deep Neural Networks"
// (arXiv 2403.08837); docs/algorithms/cdp.md.
//
// The model's stages are grouped into S contiguous *cyclic stages* (by FLOP balance, or at
// explicit cuts). N workers (cdp_mp: N micro-batch streams) run them one after another with a
// uniform delay: worker r starts cycle k at k*2S + r*delta time units, delta = 2S/N, and spends
// one unit on each stage forward (0..S-1), then one on each stage backward (S-1..0). Times are
// counted in *ticks* of 1/N unit, so every operation starts on a whole tick:
//
//   forward  of stage l, worker r, cycle k:  tick N*(2S*k + l)          + 2S*r
//   backward of stage l, worker r, cycle k:  tick N*(2S*k + 2S - 1 - l) + 2S*r
//
// A worker's operations form one stream: its j-th operation (j = 2S*k + i; i < S: forward of
// stage i, else backward of stage 2S-1-i) starts at tick N*j + 2S*r. The staggered runtimes
// divide time into *windows* of 2S units, one per Trainer step; window k holds the operations with
// ticks in [2S*N*k, 2S*N*(k+1)), exactly 2S per worker, and the first operation of cycle k.
//
// Update rules: in step k, worker r computes its gradient at theta_{k,l} for the stages where
// fresh(r, l), at theta_{k-1,l} elsewhere (theta_{-1} = theta_0); the stage gradients are
// averaged over workers and theta_{k+1} = Opt(theta_k, G_k), one optimizer per stage.
//   dp:    fresh always
//   cdp1:  fresh never
//   cdp2:  fresh_predicate = "code"   fresh(r, l) <=> l >= S-1-r          (the reference code)
//          fresh_predicate = "timing" fresh(r, l) <=> l*N >= (N-1-r)*S    (the schedule: stage
//          l's update is complete when the last worker's backward of it ends)
//
// Thread-safety: the functions are pure; a CyclicClock belongs to one thread.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "desync/algorithms/pipeline/stages.h"
#include "desync/core/archive.h"
#include "desync/core/config.h"

namespace desync {

enum class CdpRule { kDp, kCdp1, kCdp2 };
enum class FreshPredicate { kCode, kTiming };

inline constexpr int64_t kCdpDefaultStages = 4;

// The [algorithm] keys of the cyclic methods.
struct CyclicOptions {
  CdpRule rule = CdpRule::kCdp2;                     // rule = "dp" | "cdp1" | "cdp2"
  FreshPredicate predicate = FreshPredicate::kCode;  // fresh_predicate = "code" | "timing"
  int64_t n_stages = kCdpDefaultStages;              // capped at the model's stages
  std::vector<int64_t> stage_cuts;  // model-stage indices where cyclic stages 1.. begin
  double unit_ms = 0.0;             // one stage-unit; 0: measured at start-up
};

// Reads rule (when `with_rule`), fresh_predicate, n_stages, stage_cuts and unit_ms.
CyclicOptions read_cyclic_options(SectionReader& r, bool with_rule = true);

// Whether worker r uses the current version of stage l (n workers, s stages).
bool is_fresh(const CyclicOptions& o, int64_t r, int64_t l, int64_t n, int64_t s);
bool fresh_by_code(int64_t r, int64_t l, int64_t s);
bool fresh_by_timing(int64_t r, int64_t l, int64_t n, int64_t s);

int64_t forward_tick(int64_t n, int64_t s, int64_t r, int64_t k, int64_t l);
int64_t backward_tick(int64_t n, int64_t s, int64_t r, int64_t k, int64_t l);

// A worker's j-th operation: its cycle, stage and direction, and the tick it starts.
struct CyclicOp {
  int64_t tick = 0;
  int64_t worker = 0;
  int64_t cycle = 0;
  int64_t stage = 0;
  bool backward = false;
};
CyclicOp cyclic_op(int64_t n, int64_t s, int64_t r, int64_t j);
// The worker's operations in window k: indices [first, end) of its stream (first clipped to 0).
std::pair<int64_t, int64_t> window_ops(int64_t n, int64_t s, int64_t r, int64_t k);
// Whether every worker has run its backward of stage l in `cycle` (sent that stage's gradient)
// within the first `windows` windows: the last worker's backward starts before tick 2SN*windows.
bool sent_by_all(int64_t n, int64_t s, int64_t l, int64_t cycle, int64_t windows);

// Every operation of cycles [0, cycles) of n workers over s stages, sorted by tick, then worker.
std::vector<CyclicOp> cyclic_schedule(int64_t n, int64_t s, int64_t cycles);

// FLOPs per example of each model stage's convolutions and linear layers (2 * weight elements *
// output positions), measured by running the stage's layers one by one on `sample`.
std::vector<double> stage_flops(StagedModel& model, const torch::Tensor& sample);

// The model's stages grouped into cyclic stages: at stage_cuts when given, else min(n_stages,
// model stages) groups of balanced FLOPs. Throws ConfigError for cuts out of order or range, and
// for a tied model (model.tie_embeddings) whose tied stages fall in different cyclic stages.
std::vector<StageRange> cyclic_stages(StagedModel& model, const torch::Tensor& sample,
                                      const CyclicOptions& o);

// The wall clock of a staggered worker: tick t is due at origin + t * unit / n.
class CyclicClock {
 public:
  CyclicClock() = default;
  CyclicClock(int64_t n, double unit_seconds) : n_(n), unit_us_(unit_seconds * 1e6) {}

  // Tick `tick` is now.
  void anchor(int64_t tick);
  // Called at a window's first tick: a worker more than one unit late (after an evaluation or
  // any pause that held every worker) moves the origin so that the tick is now.
  void catch_up(int64_t tick);
  // Sleeps until `tick` is due (traced as a "cdp_clock" phase); returns at once when late.
  void wait_for(int64_t tick) const;

  double unit_seconds() const { return unit_us_ * 1e-6; }

 private:
  int64_t due_us(int64_t tick) const;

  int64_t n_ = 1;
  double unit_us_ = 0.0;
  int64_t origin_us_ = 0;
};

// The unit of the clock: unit_ms when set, else 0.6 x the largest forward + backward time of a
// cyclic stage, measured on one micro-batch on every rank (measure_stage_costs; collective on
// ctx.comm). A backward takes about twice a forward, so 0.6 leaves it a little slack.
double cyclic_unit_seconds(Context& ctx, const std::vector<StageRange>& stages,
                           const CyclicOptions& o);

// A probe micro-batch read directly from the dataset (not consumed), for measurements.
MicroBatch probe_batch(Context& ctx);

// The buffers (BatchNorm statistics) of stages `range` of `model`, put back as they were when it
// ends: around forwards run again on resume, which update them a second time. Unlike
// BufferSnapshot (pipeline/stages.h) it writes them through views with a version counter of
// their own: the graphs of those forwards keep the buffers as saved inputs, and a write they
// could see would fail their backwards.
class RerunBuffers {
 public:
  RerunBuffers(StagedModel& model, StageRange range);
  ~RerunBuffers();

 private:
  std::vector<torch::Tensor> live_, saved_;
};

// One micro-batch's pass through the cyclic stages of one worker: forward stage by stage, each
// stage's input a leaf of its own graph, so that backward can run one stage at a time from the
// loss down. Forwards run inside an ActivationScope: what they allocate is counted as live
// activations until backward frees it.
//
// A pass in flight between two steps goes into a checkpoint as what rebuilds it: the micro-batch,
// the RNG state at begin(), how many forwards and backwards it ran, and the gradient that the next
// backward takes. load() runs the forwards again: a stage's parameters do not change between its
// forward and its backward, so the same parameters (the model's, restored from the checkpoint)
// and the same RNG draws (dropout) give the same activations, bit for bit.
class StagedPass {
 public:
  StagedPass(StagedModel model, std::vector<StageRange> stages)
      : model_(std::move(model)), stages_(std::move(stages)) {}

  void begin(MicroBatch mb);
  bool active() const { return active_; }
  // Forward of stage l (0, 1, ... in order); the last one computes the loss.
  void forward(int64_t l);
  // Backward of stage l (S-1, S-2, ... in order): adds the stage's gradient of the mean loss
  // into its parameters' .grad. The pass ends after stage 0.
  void backward(int64_t l);
  double loss() const { return loss_value_; }
  int64_t samples() const { return samples_; }

  // The pass under `prefix` (nothing but "active" when no pass is active).
  void save(Archive& archive, const std::string& prefix) const;
  // Rebuilds the pass save() wrote, leaving the model's buffers (BatchNorm statistics, updated by
  // the first forwards already) and the RNG as they were.
  void load(const Archive& archive, const std::string& prefix);

 private:
  StagedModel model_;
  std::vector<StageRange> stages_;
  MicroBatch mb_;
  std::vector<torch::Tensor> inputs_, outputs_;
  torch::Tensor upstream_;  // the gradient of the last backward's stage input: the next one's
  torch::Tensor loss_;
  torch::Tensor rng_;  // the CPU generator's state at begin()
  double loss_value_ = 0.0;
  int64_t samples_ = 0;
  int64_t forwards_ = 0, backwards_ = 0;
  bool active_ = false;
};

}  // namespace desync
