// The pieces of contrastive local learning (contrastive_local.h; spec §3 of
// ../shared/algorithms/local-learning-and-forward-gradient.md), as pure functions so that each
// can be tested alone:
//
//   contrastive_views  two augmented views of a batch, stacked [2B, ...], drawn from a
//                      counter-based generator keyed by (seed, micro-batch id): the same on
//                      every re-run and on resume
//   pool_features      one vector per example: images [B, C, H, W] averaged over H and W to
//                      [B, C]; flat [B, F] as is; anything else flattened
//   nt_xent            the NT-Xent (InfoNCE) loss of two views' projections
//   least_similar      the subsampling placeholder (OURS, not the paper's): the ratio of
//                      samples whose features have the lowest mean cosine to the rest
//   effective_rank     erank(Z) = exp(-sum_i p_i log p_i), p_i = sigma_i / sum_j sigma_j of the
//                      centred Z
//   linear_probe_accuracy  a linear classifier fitted on one set of features, scored on another
//
// Thread-safety: pure functions (each draws from a generator of its own).
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace desync {

// Two views of `inputs` [B, ...] stacked along the batch: rows [0, B) the first, [B, 2B) the
// second. Images [B, C, H, W]: each view an independent random crop of the image padded by 4
// pixels of zeros (the dataset's mean, as inputs are normalised) and a horizontal flip with
// probability 1/2. Other inputs: each view plus Gaussian noise of standard deviation `noise`.
// The draws depend on (seed, id) only.
torch::Tensor contrastive_views(const torch::Tensor& inputs, uint64_t seed, int64_t id,
                                double noise);

torch::Tensor pool_features(const torch::Tensor& h);

// NT-Xent of projections z [2n, d] whose rows i and i + n are the two views of example i:
// with u = z / |z| (rows), s_ij = u_i . u_j / temperature, the mean over the 2n rows of
//   -log( exp(s_{i,p(i)}) / sum_{j != i} exp(s_ij) ),   p(i) = i + n mod 2n.
torch::Tensor nt_xent(const torch::Tensor& z, double temperature);

// The subsampling hook's placeholder rule (ours; the paper's rule is not known): the indices,
// ascending, of the m = clamp(round(ratio * B), 2, B) rows of `features` [B, D] with the lowest
// mean cosine similarity to the other rows (ties to the lower index). ratio >= 1 keeps every row.
torch::Tensor least_similar(const torch::Tensor& features, double ratio);

// The effective rank of the rows of z [n, d] (computed in float64), centred over the rows.
double effective_rank(const torch::Tensor& z);

// Accuracy on (test, test_labels) of a linear softmax classifier fitted on (train, labels):
// features standardised with the training set's mean and deviation, weights from zero, `steps`
// full-batch Adam steps of learning rate `lr` on the cross-entropy. Deterministic.
double linear_probe_accuracy(const torch::Tensor& train, const torch::Tensor& labels,
                             const torch::Tensor& test, const torch::Tensor& test_labels,
                             int64_t classes, int64_t steps, double lr);

}  // namespace desync
