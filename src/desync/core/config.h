// Typed, validated run configuration.
//
// A run is described by a TOML file with the sections run, data, model, optimizer, schedule,
// algorithm, eval and checkpoint, plus command-line overrides `--set section.key=value`.
// load_config() parses, applies the overrides, reads every section into the structs below and
// rejects unknown keys, wrong types and out-of-range values with a ConfigError whose one-line
// message names the key, the file and line (or the override), and the valid choices.
//
// The [algorithm] section holds the common keys `name` and `accumulation`, and one table per
// algorithm, [algorithm.<name>], with that algorithm's own keys; only the selected algorithm's
// table applies to the run, but every table is validated against its algorithm's keys (by
// make_algorithm, algorithms/registry.h). Keys of the selected algorithm may also sit directly
// in [algorithm] (the older, flat form). Precedence, for the selected algorithm:
//   - an own key set both flat and in the table: a --set value beats the file's; two values from
//     the same source (both in the file, or both --set) are an error;
//   - `accumulation` in [algorithm] is the default of every algorithm; a table's `accumulation`
//     replaces it for that algorithm, unless the [algorithm] value comes from --set and the
//     table's from the file (--set beats the file).
// Algorithms read their keys through algorithm_options() (a SectionReader over the merged view)
// so that their keys are validated like every other key.
#pragma once

#include <toml++/toml.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace desync {

struct RunConfig {
  std::string name = "run";
  int64_t seed = 0;
  // The length of the run: `steps` optimizer steps when > 0; else the data budget, which is
  // `samples` examples or `tokens` tokens (text) when one is > 0, else `epochs` passes over the
  // training split. The trainer converts a data budget to global micro-batches, which every
  // algorithm consumes exactly. samples and tokens are exclusive; tokens needs data.dataset =
  // "text".
  int64_t steps = 0;     // optimizer steps; 0 = from the data budget
  double epochs = 1.0;   // used when steps, samples and tokens are 0
  int64_t samples = 0;   // training examples (all workers together); 0 = unset
  int64_t tokens = 0;    // training tokens (sequence datasets only); 0 = unset
  std::string out = "";  // run directory; "" = runs/<name>
  int64_t log_every = 50;
  int64_t threads = 0;          // intra-op threads per worker; 0 = cores / local workers
  int64_t workers = 1;          // worker processes (`desync train --workers N` overrides)
  double comm_timeout = 300.0;  // seconds a collective may wait for its peers
  // Communication backend of the workers: "gloo" (CPU, TCP) or "nccl" (CUDA devices; needs a
  // build with -DDESYNC_CUDA=ON and one GPU per local worker, see comm/nccl_communicator.h).
  std::string backend = "gloo";
  // Per-rank compute speed in (0, 1] to emulate uneven workers: each micro-batch's compute time
  // is stretched by 1/speed. Empty = all 1; one entry per worker otherwise.
  std::vector<double> worker_speed;
  double comm_latency_ms = 0.0;  // emulated latency added to every communication call
};

struct DataConfig {
  // fashion-mnist | mnist | cifar10 | text (UTF-8 files) | gcide (Debian's dict-gcide) | synthetic
  std::string dataset = "fashion-mnist";
  std::string path = "";                  // "" = the dataset's default location
  int64_t batch_size = 64;                // micro-batch size per worker
  int64_t eval_batch_size = 1000;
  bool normalize = true;
  bool augment = false;             // random crop + flip (CIFAR-format images only)
  int64_t train_limit = 0;          // use only the first N training examples; 0 = all
  int64_t test_limit = 0;           // use only the first N test examples; 0 = all
  int64_t seq_len = 64;             // text, gcide: tokens per example
  double text_test_fraction = 0.1;  // text, gcide: share of the documents held out
  int64_t split_seed = 0;           // text, gcide: seeds which documents are held out
  // text, gcide: "bpe" or "unigram" (SentencePiece, trained on the training documents, with byte
  // fallback), or "bytes" (one token per byte, vocabulary 256).
  std::string tokenizer = "bpe";
  int64_t vocab_size = 4096;                // bpe, unigram: pieces in the vocabulary
  std::string cache_dir = ".cache/desync";  // text, gcide: tokenizers and token files
  // synthetic: a seeded, learnable classification task (a random teacher network labels
  // Gaussian inputs).
  int64_t synthetic_train = 4096;
  int64_t synthetic_test = 1024;
  int64_t synthetic_classes = 10;
  std::vector<int64_t> synthetic_shape = {1, 8, 8};
  // Labelled datasets: keep only these classes, relabelled 0, 1, ... in the order given (e.g.
  // [5, 6, 7, 8, 9]); empty = all. Applied before the limits.
  std::vector<int64_t> classes;
  bool invert = false;  // images: x -> 255 - x, a shifted domain (normalised with the new stats)
};

struct ModelConfig {
  std::string name = "cnn";  // mlp | cnn | resnet18 | revnet18 | revnet34 | revnet | gpt | sgns
  std::vector<int64_t> hidden = {256, 128};  // mlp: hidden widths
  std::vector<int64_t> channels = {32, 64};  // cnn: channels of the conv blocks
  // resnet18: channels of the first stage; revnet*: width of each of the two streams in group 1
  // (doubled at every later group).
  int64_t width = 64;
  std::vector<int64_t> blocks = {2, 2};  // revnet: blocks per group (revnet18/34 fix their own)
  bool batch_norm = true;                // cnn: BatchNorm after each conv
  // gpt: a decoder-only transformer (models/gpt.h) over data.seq_len tokens.
  int64_t n_layer = 4;
  int64_t n_head = 4;
  int64_t d_model = 128;
  int64_t d_ff = 0;                 // 0 = 4 * d_model (gelu) or 8/3 * d_model, rounded (swiglu)
  int64_t seq_len = 0;              // context length; 0 = data.seq_len (never shorter than it)
  std::string norm = "layernorm";   // layernorm | rmsnorm
  std::string position = "learned";  // learned | rope
  std::string activation = "gelu";   // gelu | swiglu
  bool tie_embeddings = false;       // head shares the token embedding (not across pipelines)
  // Precision of the parameters and of everything computed from them: "float32", or "float64"
  // to check equivalences to rounding (1e-10) rather than to float32's 1e-5.
  std::string dtype = "float32";
  // A run directory whose newest complete checkpoint (rank 0's) gives the initial parameters and
  // buffers; every shape must match. "" = initialise from run.seed.
  std::string init_from = "";
  // mlp, gpt: every linear layer but the embeddings and the head becomes a LowRankLinear
  // W = A·Bᵀ (models/low_rank.h). 0 = dense; in (0, 1) the rank as a share of min(in, out)
  // (rounded, at least 1); >= 1 the rank itself (at most min(in, out)).
  double low_rank = 0.0;
  // mlp, gpt: "sp" (standard) or "mup" (μP, models/mup.h): init scales, forward multipliers and
  // per-tensor learning-rate scales (ParamSlot::lr_scale) for adamw, spectron and mulo.
  std::string parametrization = "sp";
  double mup_input_mult = 1.0;           // mup: forward multiplier of the input layer
  double mup_output_mult = 1.0;          // mup: the head's forward multiplier is this / fan_in
  double mup_hidden_lr_mult = 1.0;       // mup: hidden matrices' lr scale is this / fan_in
  std::string mup_output_init = "zero";  // mup: the head's weights start at zero | normal
};

struct OptimizerConfig {
  std::string name = "sgd";  // sgd | adamw | spectron | mulo
  double lr = 0.1;
  double momentum = 0.0;
  bool nesterov = false;
  double dampening = 0.0;
  double weight_decay = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  bool no_decay_norm_bias = false;  // no weight decay on normalisation weights and biases
  double grad_clip = 0.0;           // global gradient-norm clip; 0 = off
  // spectron (optim/spectron.h): LowRankLinear factor pairs; every other tensor by AdamW
  // (beta1, beta2, eps).
  double spectron_beta = 0.95;       // EMA momentum of the factor gradients
  int64_t spectron_ns_steps = 5;     // Newton–Schulz steps
  int64_t spectron_power_steps = 1;  // power-iteration steps per update (warm-started)
  bool spectron_exact = false;       // SVD polar factor and exact spectral norms (tests)
  // mulo (optim/mulo.h): the learned optimizer small_fc_lopt.
  std::string lopt_weights = "";  // meta-parameters written by `desync meta-train`; "" = drawn
  int64_t lopt_seed = 0;          // draws the meta-parameters when lopt_weights is ""
  double lopt_alpha1 = 1e-3;      // step = alpha1 * direction * exp(alpha2 * magnitude)
  double lopt_alpha2 = 1e-3;
  bool lopt_clip = false;  // clip the gradients' global norm to 1 before the features
};

struct ScheduleConfig {
  std::string name = "constant";  // constant | step | cosine
  int64_t warmup_steps = 0;       // linear warm-up from 0 (all schedules)
  int64_t step_size = 1000;       // step: multiply by gamma every step_size steps
  double gamma = 0.1;
  double min_lr = 0.0;  // cosine: final learning rate
};

struct AlgorithmConfig {
  std::string name = "single";
  // Micro-batches accumulated per optimizer step: the algorithm's table's value or [algorithm]'s
  // (see the precedence above).
  int64_t accumulation = 1;
  std::shared_ptr<const toml::table> doc;  // the whole document (keeps source positions)
  std::string file;                        // where it came from, for messages
  // True for the run's algorithm, whose options also include the flat keys of [algorithm];
  // false for a config made by for_table() to validate another algorithm's table.
  bool selected = true;

  // The [algorithm] table (common keys, flat keys, per-algorithm tables); null if none.
  const toml::table* section() const {
    const toml::node* n = doc ? doc->get("algorithm") : nullptr;
    return n ? n->as_table() : nullptr;
  }
  // The table [algorithm.<name>] of this algorithm; null if none.
  const toml::table* table() const;
  // The names of the per-algorithm tables of [algorithm], in order.
  std::vector<std::string> table_names() const;
  // The config algorithm `other` would get from its table [algorithm.<other>] (flat keys
  // excluded), to validate that table when another algorithm is selected.
  AlgorithmConfig for_table(const std::string& other) const;
};

struct EvalConfig {
  int64_t every = 0;        // evaluate every N steps; 0 = only at the end
  int64_t limit = 0;        // evaluate on the first N test examples; 0 = all
  bool final_full = false;  // the final evaluation uses the whole test split, whatever `limit`
  bool at_start = false;    // also evaluate the model as set up, before the first step (step 0)
};

struct CheckpointConfig {
  int64_t every = 0;  // write a checkpoint every N steps; 0 = only at the end
  int64_t keep = 2;   // complete checkpoints kept on disk
  bool enabled = true;
};

// `desync meta-train` (meta/pes.h): truncated Persistent Evolution Strategies over a learned
// optimizer's meta-parameters, on MLP tasks built from [data], [model] and [optimizer].
struct MetaConfig {
  // "mlp": MLP classifiers on [data] trained by mulo; "quadratic": SGD with learning rate
  // exp(theta) on a 1-D quadratic (a check with a known optimum).
  std::string task = "mlp";
  int64_t outer_steps = 1000;
  int64_t tasks = 8;                   // antithetic pairs, spread over the workers
  int64_t unroll = 50;                 // inner steps per truncation
  int64_t horizon_min = 100;           // inner horizons ~ LogUniform[horizon_min, horizon_max]
  int64_t horizon_max = 1000;
  std::vector<int64_t> widths = {128};  // a task's hidden width, drawn per task
  double sigma = 0.01;                 // perturbation scale
  bool persistent = true;              // accumulate ξ (PES); false = truncated ES (biased)
  double lr_start = 3e-10;             // meta-AdamW: lr_start -> lr_peak over warmup_steps,
  double lr_peak = 3e-3;               // then linearly to lr_final at outer_steps
  double lr_final = 1e-3;
  int64_t warmup_steps = 100;
  double grad_clip = 1.0;  // the ES gradient's global norm; 0 = off
  int64_t checkpoint_every = 50;
};

struct Config {
  RunConfig run;
  DataConfig data;
  ModelConfig model;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  AlgorithmConfig algorithm;
  EvalConfig eval;
  CheckpointConfig checkpoint;
  MetaConfig meta;

  std::string source;                // the file it was loaded from
  std::shared_ptr<toml::table> doc;  // the merged document (file + overrides), before defaults

  // The fully resolved configuration (every key with its value, defaults included) as TOML.
  std::string resolved_toml() const;
};

// Reads keys of one TOML table, tracking which were read, so finish() can reject the rest.
// Values are checked for type and range; errors name `section.key`, file and line.
class SectionReader {
 public:
  // A key, its value, and the section that messages name it by.
  struct Entry {
    std::string key;
    const toml::node* node;
    std::string section;
  };

  SectionReader(const toml::table* table, std::string section, std::string file);
  // A view assembled from several tables (the selected algorithm's table plus the flat keys of
  // [algorithm]); `section` names keys not present. Keys must be unique.
  SectionReader(std::vector<Entry> entries, std::string section, std::string file);

  bool get(const char* key, bool fallback);
  int64_t get(const char* key, int64_t fallback, int64_t min = std::numeric_limits<int64_t>::min(),
              int64_t max = std::numeric_limits<int64_t>::max());
  // Range is [min, max]; exclusive_min turns the lower bound into min < value.
  double get(const char* key, double fallback, double min = -std::numeric_limits<double>::max(),
             double max = std::numeric_limits<double>::max(), bool exclusive_min = false);
  std::string get(const char* key, const std::string& fallback);
  std::string get_choice(const char* key, const std::string& fallback,
                         const std::vector<std::string>& choices);
  std::vector<int64_t> get(const char* key, const std::vector<int64_t>& fallback,
                           int64_t min = std::numeric_limits<int64_t>::min());
  std::vector<double> get(const char* key, const std::vector<double>& fallback, double min,
                          double max);

  // Throws ConfigError for the first key that no get() asked for, listing the valid keys.
  void finish() const;

  // "file:line" of a key if it is present ("--set" for an override), else the file.
  std::string where(const char* key) const;

  // finish() also stores the keys asked for in *sink (the registry learns each algorithm's
  // keys this way). The sink must outlive the reader.
  void record_keys(std::vector<std::string>* sink) { sink_ = sink; }

  const std::vector<Entry>& entries() const { return entries_; }

 private:
  const Entry* entry(const char* key) const;
  const toml::node* find(const char* key);
  [[noreturn]] void fail(const char* key, const std::string& what) const;

  std::vector<Entry> entries_;
  std::string section_;
  std::string file_;
  std::vector<std::string> known_;
  std::vector<std::string>* sink_ = nullptr;
};

// The options of cfg's algorithm: its table [algorithm.<name>] and, when cfg.selected, the flat
// keys of [algorithm] (name, accumulation and tables excluded); throws ConfigError when a key is
// set in both from the same source. Algorithms use algorithm_options() (registry.h), which
// wraps this.
SectionReader algorithm_reader(const AlgorithmConfig& cfg);

// Parses `path`, applies overrides of the form "section.key=value" or, into a table,
// "section.table.key=value" (algorithm.ddp.bucket_cap_mb=10; value in TOML syntax, a bare word
// is taken as a string) and validates everything but the algorithms' own keys, which
// make_algorithm() checks. Throws ConfigError.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// Same, from TOML text (tests, and `desync train` on a resolved config).
Config parse_config(const std::string& toml_text, const std::string& source_name,
                    const std::vector<std::string>& overrides = {});

// The checks that need the job's world size (workers on all nodes): run.worker_speed has one
// entry per worker. Throws ConfigError. Call once the world size is known.
void validate_for_world(const Config& cfg, int64_t world);

}  // namespace desync
