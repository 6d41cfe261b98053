// `wash`: weight shuffling, then average — a population of N models, one per worker, that
// stays in one basin because a few coordinates are permuted across the models every step.
// Reference: "Train your Ensemble with Communication-Efficient Weight Shuffling, then Average"
// (arXiv 2405.17517); docs/algorithms/wash.md.
//
//   every step, on worker k:
//     w_k <- Opt(w_k, grad of its own loss)                         (Member::local_step)
//     every shuffle_every steps, s = (run.seed, step):
//       for each parameter tensor l = 0..L-1 in depth order:
//         p_l = p (1 - d_l / (D - 1))       d_l: the tensor's depth index (tensor, or layer), D
//         M_l ~ Bernoulli(p_l) per coordinate                        RNG(s, l), the same on all
//         pi_c = argsort of N uniforms, for each selected c           ranks
//       w_k[c] <- w_{pi_c(k)}[c] for every selected c    to each worker, one message of the
//                                                         values it takes from this one
//       (shuffle_optimizer_state: the optimizer's per-coordinate state moves with its weight)
//   the final model: the members' average (the Trainer's evaluation: train/evaluation.h)
//
// Worker k sends each selected value to the one worker that takes it, unless it keeps it:
// about p̄ Ψ (N-1)/N values per shuffle. A permutation averages nothing: the multiset of values
// of every coordinate across the members, hence their mean, is unchanged.
//
// Options: p (0.01), shuffle_every (1), depth ("tensor" | "layer"), decay ("linear" | "none"),
// shuffle_optimizer_state (false), and the population's init ("shared": the members differ by
// their data; from distinct starts a shuffle swaps values of unrelated models), repair_batches
// (16), mixup and label_smoothing ([0]: the members' losses, member.h).
#pragma once

#include <memory>
#include <vector>

#include "desync/algorithms/population/member.h"

namespace desync {

// One shuffle, as rank `rank` of `world` sees it: which coordinates move, where its own values
// go and where its new values come from. Identical inputs give identical plans on every rank.
struct ShufflePlan {
  std::vector<torch::Tensor> index;  // per tensor: the selected coordinates (int64, ascending)
  torch::Tensor source;              // per selected coordinate (all tensors): rank pi_c(rank)
  torch::Tensor destination;         // per selected coordinate: the k with pi_c(k) = rank
  int64_t selected() const { return source.numel(); }
};

// The probability of each tensor: p (1 - d_l / (D - 1)) with d_l = depth[l], D = the number of
// distinct depths (p for all when there is one depth); `linear` = false: p for every tensor.
std::vector<double> wash_probabilities(const std::vector<int64_t>& depth, double p, bool linear);

// The plan of shuffle number `round` for tensors of `sizes` elements.
ShufflePlan wash_plan(uint64_t seed, int64_t round, const std::vector<int64_t>& sizes,
                      const std::vector<double>& probabilities, int64_t world, int64_t rank);

// Applies `plan` to `tensors` (one per parameter tensor, laid out like the plan's sizes) over
// `comm`: to each other rank, one message with the values it takes from this one (the bytes of
// an all-to-all with uneven splits; nothing where it takes none).
void apply_shuffle(const ShufflePlan& plan, const std::vector<torch::Tensor>& tensors,
                   Communicator& comm);

class Wash : public Population {
 public:
  Wash(Population::Options options, double p, int64_t every, bool by_layer, bool linear,
       bool shuffle_state)
      : Population(options),
        p_(p),
        every_(every),
        by_layer_(by_layer),
        linear_(linear),
        shuffle_state_(shuffle_state) {}
  void setup(Context& ctx) override;
  StepReport step(Context& ctx) override;
  StagedModel model_for_eval(Context& ctx) override { return member_->average(ctx); }
  void save(Archive& archive) const override { member_->save(archive); }
  void load(const Archive& archive) override { member_->load(archive); }
  AlgorithmReport report() const override;

  const std::vector<double>& probabilities() const { return probabilities_; }

 private:
  void shuffle(Context& ctx);

  double p_;
  int64_t every_;
  bool by_layer_, linear_, shuffle_state_;
  std::unique_ptr<Member> member_;
  std::vector<torch::Tensor> params_;               // per parameter tensor, depth order
  std::vector<std::vector<torch::Tensor>> states_;  // per optimizer state kind, like params_
  std::vector<int64_t> sizes_;
  std::vector<double> probabilities_;
  int64_t moved_ = 0, shuffles_ = 0;  // values sent, shuffles done
};

}  // namespace desync
