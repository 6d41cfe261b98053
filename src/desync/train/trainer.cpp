#include "desync/train/trainer.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <thread>

#include "desync/algorithms/client_data.h"
#include "desync/algorithms/common.h"
#include "desync/algorithms/eval_probe.h"
#include "desync/algorithms/eval_repair.h"
#include "desync/algorithms/local_heads.h"
#include "desync/algorithms/population/population.h"
#include "desync/core/activation_memory.h"
#include "desync/core/checkpoint.h"
#include "desync/core/error.h"
#include "desync/core/fault.h"
#include "desync/core/fs.h"
#include "desync/core/gauges.h"
#include "desync/core/progress.h"
#include "desync/core/reductions.h"
#include "desync/core/system.h"
#include "desync/core/trace.h"
#include "desync/data/dataset.h"
#include "desync/models/gpt.h"
#include "desync/report/metrics.h"
#include "desync/report/run_report.h"
#include "desync/report/summary.h"
#include "desync/train/assemble.h"
#include "desync/train/evaluation.h"
#include "desync/train/trainer_state.h"

namespace desync {
namespace {

// What rank 0 logs every run.log_every steps, over all ranks (one all-reduce).
struct StepLog {
  double loss = 0.0;         // the step's loss, weighted by the micro-batches each rank consumed
  int64_t samples = 0;       // global samples consumed so far
  bool interrupted = false;  // some rank was interrupted (ranks must agree on where to stop)
  std::vector<int64_t> bytes_sent_per_rank;  // training bytes each rank has sent so far
};

StepLog gather_step_log(Communicator& comm, const StepReport& report, int64_t samples,
                        int64_t bytes_sent) {
  const int64_t world = comm.world_size();
  enum { kLossSum, kMicroBatches, kSamples, kInterrupted, kBytes };
  torch::Tensor t = torch::zeros({kBytes + world}, torch::kFloat64);
  {
    auto a = t.accessor<double, 1>();
    a[kLossSum] = report.loss * static_cast<double>(report.micro_batches);
    a[kMicroBatches] = static_cast<double>(report.micro_batches);
    a[kSamples] = static_cast<double>(samples);
    a[kInterrupted] = interrupted() ? 1.0 : 0.0;
    a[kBytes + comm.rank()] = static_cast<double>(bytes_sent);
  }
  if (world > 1) comm.all_reduce(t);
  auto a = t.accessor<double, 1>();
  StepLog log;
  log.loss = a[kLossSum] / std::max(1.0, a[kMicroBatches]);
  log.samples = static_cast<int64_t>(a[kSamples]);
  log.interrupted = a[kInterrupted] > 0;
  for (int64_t r = 0; r < world; ++r)
    log.bytes_sent_per_rank.push_back(static_cast<int64_t>(a[kBytes + r]));
  return log;
}

// One run on this rank: what assemble_run() built, the loop's state, and the outputs.
class Run {
 public:
  Run(const Config& cfg, Communicator& comm, const TrainOptions& opts, const std::string& dir)
      : cfg_(cfg),
        comm_(comm),
        opts_(opts),
        dir_(dir),
        leader_(comm.rank() == 0),
        data_(load_dataset(cfg.data, static_cast<uint64_t>(cfg.run.seed))),
        parts_(assemble_run(cfg, data_, comm.rank(), comm.world_size())),
        // Counted before setup(): an algorithm may release what a worker does not hold (sdp).
        model_parameters_(parts_.model->parameter_count()),
        // Evaluation traffic (test-set totals, models averaged for evaluation) has its own
        // channel, so that the bytes and waits reported for training exclude it.
        eval_comm_(comm.split("eval")),
        ctx_(make_context(cfg, comm, parts_)),
        store_(dir + "/checkpoints", comm.rank(), comm.world_size()),
        // A run whose consumption varies has no known step count: it shows the budget's share.
        progress_(parts_.budget.varies && parts_.budget.counts_data() ? 0 : parts_.budget.steps,
                  cfg.run.log_every, stderr_is_tty()) {
    ctx_.eval_comm = eval_comm_.get();
    parts_.algorithm->setup(ctx_);
    // Debugging aid: every micro-batch's example ids, one file per rank (docs/distributed.md).
    if (const char* ids = std::getenv("DESYNC_EXAMPLE_IDS"); ids && *ids && std::string(ids) != "0")
      start_id_log();
  }

  void resume();
  void train();
  // Rank 0 copies a text dataset's tokenizer into the run directory (`desync generate` reads it).
  void keep_tokenizer() const;
  nlohmann::json finish();

 private:
  void say(const std::string& line) {
    if (leader_ && opts_.show_progress) progress_.note(line);
  }
  // A warning that rank 0 gives even when quiet.
  void warn(const std::string& line) {
    if (!leader_) return;
    if (opts_.show_progress)
      progress_.note("warning: " + line);
    else
      std::fprintf(stderr, "warning: %s\n", line.c_str());
  }
  int64_t global_micro_batches(const StepReport& report);
  void log_step(const StepReport& report);
  EvalResult evaluate_and_log(int64_t limit, bool last = false);
  void checkpoint() {
    TraceSpan span("checkpoint", "checkpoint");
    store_.write(state_.step,
                 checkpoint_archive(cfg_.algorithm.name, comm_.world_size(), state_,
                                    state_.wall_seconds + wall_.seconds(), parts_.model,
                                    *parts_.algorithm, *parts_.batches),
                 cfg_.checkpoint.keep);
  }
  void start_id_log();
  void log_ids();
  RankFigures rank_figures(int64_t begin_us, int64_t end_us) const;
  bool is_text() const { return data_.train.kind == DataKind::kText; }
  int64_t tokens_per_sample() const { return cfg_.data.seq_len; }  // text only
  nlohmann::json summary(const std::optional<EvalResult>& final_eval);

  const Config& cfg_;
  Communicator& comm_;
  const TrainOptions& opts_;
  const std::string dir_;
  const bool leader_;
  Stopwatch wall_;
  DatasetSplits data_;
  RunParts parts_;
  const int64_t model_parameters_;
  std::shared_ptr<Communicator> eval_comm_;
  Context ctx_;
  CheckpointStore store_;
  Progress progress_;
  ActivationSampler activations_;  // live activation bytes over training (core/activation_memory.h)
  TrainerState state_;
  int64_t resumed_from_ = -1;  // the checkpoint's step (in its own world's steps) on --resume
  std::unique_ptr<MetricsWriter> metrics_;
  std::vector<std::pair<std::string, double>> eval_extras_;  // the last evaluation's
  std::optional<PopulationResult> population_;  // the last evaluation's, for a population
  bool stopped_ = false;
  // DESYNC_EXAMPLE_IDS: a copy of the stream over a dataset whose examples are their own ids,
  // kept at the real stream's position, and the file its micro-batches go to.
  Dataset id_data_;
  std::unique_ptr<MicroBatchSource> id_stream_;
  std::shared_ptr<std::FILE> id_log_;
  Stopwatch window_;            // since the last logged step
  int64_t window_samples_ = 0;  // global samples at the window's start
  double shown_loss_ = 0.0, shown_sps_ = 0.0;
};

void Run::start_id_log() {
  const bool sharded = parts_.algorithm->traits().data == AlgorithmTraits::Data::kSharded;
  const int64_t n = data_.train.size();
  id_data_.name = "ids";
  id_data_.kind = DataKind::kFeatures;
  id_data_.inputs = torch::arange(n, torch::kFloat64).reshape({n, 1});
  id_stream_ = std::make_unique<MicroBatchSource>(
      id_data_, cfg_.data.batch_size, sharded ? comm_.rank() : 0, sharded ? comm_.world_size() : 1,
      static_cast<uint64_t>(cfg_.run.seed), TransformOptions{});
  make_dirs(dir_);
  const std::string path = fmt::format("{}/example-ids-rank{}.txt", dir_, comm_.rank());
  std::FILE* f = std::fopen(path.c_str(), "a");
  if (!f) throw Error("cannot open " + path + " to record example ids");
  id_log_ = std::shared_ptr<std::FILE>(f, std::fclose);
}

// Writes "<workers> <rank> <epoch> <batch> <id>..." for each micro-batch the real stream gave
// since the last call.
void Run::log_ids() {
  if (!id_stream_) return;
  while (!(id_stream_->position() == parts_.batches->position())) {
    const MicroBatch b = id_stream_->next();
    std::string line =
        fmt::format("{} {} {} {}", comm_.world_size(), comm_.rank(), b.epoch, b.index);
    const torch::Tensor ids = b.inputs.reshape({-1}).to(torch::kLong).contiguous();
    for (int64_t i = 0; i < ids.numel(); ++i)
      line += fmt::format(" {}", ids.data_ptr<int64_t>()[i]);
    line += "\n";
    std::fputs(line.c_str(), id_log_.get());
  }
  std::fflush(id_log_.get());  // a killed worker leaves whole steps
}

void Run::keep_tokenizer() const {
  if (!leader_ || data_.tokenizer_path.empty()) return;
  write_file_atomic(dir_ + "/tokenizer.model", read_file(data_.tokenizer_path));
}

void Run::resume() {
  // Every rank must continue from the same step: the newest one that all ranks have intact.
  const CheckpointStore::Resumable loaded = load_common_resumable(
      store_, comm_, dir_, [&](const std::string& w) { say("warning: " + w); });
  resumed_from_ = loaded.step;
  if (loaded.world == comm_.world_size()) {
    restore_checkpoint(loaded.archives.front(), cfg_.algorithm.name, state_, parts_.model,
                       *parts_.algorithm, *parts_.batches);
  } else {
    // Elastic restart: every rank has read all the old ranks' archives.
    restore_resharded(loaded.archives, cfg_.algorithm.name, comm_.rank(), comm_.world_size(),
                      parts_.budget.per_step, state_, parts_.model, *parts_.algorithm,
                      *parts_.batches);
    warn(fmt::format(
        "resuming a {}-worker checkpoint on {} workers: optimizer state re-sharded, the run is no "
        "longer bitwise comparable to an uninterrupted one",
        loaded.world, comm_.world_size()));
    // This world's first checkpoint, at once; then the old world's are removed (their step
    // numbers count another world's steps). The all-reduce waits until every rank has read the
    // old files and written its own.
    if (cfg_.checkpoint.enabled) checkpoint();
    comm_.all_reduce(torch::zeros({1}, torch::kFloat64));
    if (leader_ && cfg_.checkpoint.enabled) store_.remove_other_worlds(state_.step);
  }
  window_samples_ = state_.samples * comm_.world_size();
  say(fmt::format("resumed from step {} of {}", state_.step, parts_.budget.steps));
}

// Micro-batches all ranks consumed in the step that produced `report`, as far as the budget
// needs to know: counted across ranks only when consumption varies and the budget is data.
int64_t Run::global_micro_batches(const StepReport& report) {
  if (!parts_.budget.varies || !parts_.budget.counts_data()) return parts_.budget.per_step;
  torch::Tensor n = torch::full({1}, static_cast<double>(report.micro_batches), torch::kFloat64);
  comm_.all_reduce(n);
  return static_cast<int64_t>(n.item<double>());
}

void Run::log_step(const StepReport& report) {
  CommStats training = comm_.total_stats();
  training -= eval_comm_->total_stats();
  StepLog log = gather_step_log(comm_, report, state_.samples, training.bytes_sent);
  if (comm_.world_size() > 1) stopped_ = log.interrupted;
  const double lr = parts_.schedule->lr(state_.step - 1);
  const double sps =
      static_cast<double>(log.samples - window_samples_) / std::max(1e-9, window_.seconds());
  if (leader_) {
    const StreamPosition pos = parts_.batches->position();
    const double epoch = static_cast<double>(pos.epoch) +
                         static_cast<double>(pos.batch) / parts_.batches->batches_per_epoch();
    nlohmann::json record = {{"type", "train"},
                             {"step", state_.step},
                             {"epoch", epoch},
                             {"loss", log.loss},
                             {"lr", lr},
                             {"samples", log.samples},
                             {"samples_per_second", sps},
                             {"elapsed", state_.train_seconds},
                             {"bytes_sent_per_rank", log.bytes_sent_per_rank}};
    if (is_text()) record["tokens"] = log.samples * tokens_per_sample();
    for (const auto& [name, value] : Gauges::instance().take()) record[name] = value;
    metrics_->write(record);
  }
  shown_loss_ = log.loss;
  shown_sps_ = sps;
  window_samples_ = log.samples;
  window_.reset();
}

EvalResult Run::evaluate_and_log(int64_t limit, bool last) {
  TraceSpan span("eval", "eval");
  const Population* population = as_population(*parts_.algorithm);
  std::optional<PopulationResult> members;
  EvalResult r;
  if (population) {
    members = evaluate_population(ctx_.model, parts_.algorithm->model_for_eval(ctx_), data_, limit,
                                  population->population().repair_batches, cfg_, *eval_comm_);
    r = members->average;
  } else {
    StagedModel model = parts_.algorithm->model_for_eval(ctx_);
    if (const int64_t batches = repair_batches_of(*parts_.algorithm); batches > 0)
      reestimate_batchnorm(model, data_.train, batches, cfg_);  // sdp's assembled model
    r = evaluate(model, data_.test, limit, cfg_, *eval_comm_);
  }
  eval_extras_ = parts_.algorithm->report().eval_metrics;
  if (LocalHeads* heads = as_local_heads(*parts_.algorithm)) {  // after model_for_eval()
    std::vector<StagedModel> models = heads->head_models(ctx_);
    for (size_t k = 0; k < models.size(); ++k) {
      const EvalResult h = evaluate(models[k], data_.test, limit, cfg_, *eval_comm_);
      eval_extras_.push_back({fmt::format("aux_accuracy_{}", k + 1), h.accuracy});
      eval_extras_.push_back({fmt::format("aux_loss_{}", k + 1), h.loss});
    }
  }
  if (EvalProbe* probe = as_eval_probe(*parts_.algorithm))  // after model_for_eval()
    for (auto& figure : probe->probe(ctx_, last)) eval_extras_.push_back(std::move(figure));
  if (members) {
    const std::vector<double>& acc = members->member_accuracy;
    double mean = 0.0;
    for (double a : acc) mean += a / static_cast<double>(acc.size());
    eval_extras_.insert(eval_extras_.begin(),
                        {{"ensemble_accuracy", members->ensemble.accuracy},
                         {"ensemble_loss", members->ensemble.loss},
                         {"member_accuracy_mean", mean},
                         {"member_accuracy_min", *std::min_element(acc.begin(), acc.end())},
                         {"member_accuracy_max", *std::max_element(acc.begin(), acc.end())}});
    population_ = *members;
  }
  if (leader_) {
    nlohmann::json record = {{"type", "eval"},
                             {"step", state_.step},
                             {"test_loss", r.loss},
                             {"test_accuracy", r.accuracy},
                             {"test_examples", r.examples},
                             {"elapsed", state_.train_seconds}};
    if (members) {
      record["member_accuracy"] = members->member_accuracy;
      record["member_loss"] = members->member_loss;
      record["average_repaired"] = members->repaired;
    }
    std::string extras;
    if (is_text()) {
      record["test_perplexity"] = r.perplexity;
      record["test_bits_per_byte"] = r.bits_per_byte;
      // Every rank's consumption, at any step (the figure train records log every log_every).
      record["tokens"] = state_.budget_used * cfg_.data.batch_size * tokens_per_sample();
      extras += fmt::format("  ppl {:.2f}  bits/byte {:.4f}", r.perplexity, r.bits_per_byte);
    }
    for (const auto& [name, value] : eval_extras_) {
      record[name] = value;
      extras += fmt::format("  {} {:.4g}", name, value);
    }
    metrics_->write(record);
    say(fmt::format("eval  step {}  test loss {:.4f}  test accuracy {:.4f}{}", state_.step, r.loss,
                    r.accuracy, extras));
  }
  return r;
}

void Run::train() {
  const Budget& budget = parts_.budget;
  if (leader_)
    metrics_ =
        std::make_unique<MetricsWriter>(dir_ + "/metrics.jsonl", opts_.resume ? resumed_from_ : -1);
  if (state_.step == 0)
    say(fmt::format("training {} · {} · {} · {} worker{} · {} → {}", cfg_.algorithm.name,
                    cfg_.model.name, cfg_.data.dataset, comm_.world_size(),
                    comm_.world_size() == 1 ? "" : "s",
                    budget.varies && budget.counts_data()
                        ? fmt::format("{} micro-batches", budget.micro_batches)
                        : fmt::format("{} steps", budget.steps),
                    dir_));
  const std::optional<Fault> fault = fault_from_env();
  window_samples_ = state_.samples * comm_.world_size();
  reset_peak_activation_bytes();
  activations_.start();
  if (id_stream_) id_stream_->seek(parts_.batches->position());
  if (cfg_.eval.at_start && state_.step == 0) evaluate_and_log(cfg_.eval.limit);
  while (!budget.spent(state_.step, state_.budget_used)) {
    ctx_.step = state_.step;
    ctx_.micro_batches_left = budget.left(state_.budget_used);
    Stopwatch step_clock;
    activations_.begin_step(state_.step);
    StepReport report = parts_.algorithm->step(ctx_);
    activations_.end_step();
    state_.train_seconds += step_clock.seconds();
    log_ids();
    const int64_t consumed = global_micro_batches(report);
    state_.add_step(report, consumed);
    maybe_inject_fault(fault, comm_.rank(), state_.step);
    const bool last = budget.spent(state_.step, state_.budget_used) || consumed == 0;

    if (comm_.world_size() == 1) stopped_ = interrupted();
    if (state_.step % cfg_.run.log_every == 0 || last) log_step(report);
    if (leader_ && opts_.show_progress)
      progress_.update(state_.step, shown_loss_, parts_.schedule->lr(state_.step - 1), shown_sps_,
                       budget.fraction(state_.step, state_.budget_used));
    if (last) break;
    if (cfg_.eval.every > 0 && state_.step % cfg_.eval.every == 0)
      evaluate_and_log(cfg_.eval.limit);
    if (cfg_.checkpoint.enabled &&
        (stopped_ || (cfg_.checkpoint.every > 0 && state_.step % cfg_.checkpoint.every == 0)))
      checkpoint();
    if (stopped_) break;
  }
  activations_.stop();
  if (leader_ && opts_.show_progress) progress_.finish();
  parts_.algorithm->finish(ctx_);
}

RankFigures Run::rank_figures(int64_t begin_us, int64_t end_us) const {
  RankFigures f;
  f.samples = state_.samples;
  f.micro_batches = state_.micro_batches;
  f.training = comm_.total_stats();
  f.training -= eval_comm_->total_stats();
  f.comm_time = comm_.time();
  f.comm_time -= eval_comm_->time();
  f.eval_bytes_sent = eval_comm_->total_stats().bytes_sent;
  f.comm_in_flight_seconds = Tracer::instance().busy_seconds("comm", begin_us, end_us);
  f.comm_overlapped_seconds =
      Tracer::instance().busy_seconds_unless("comm", "wait", begin_us, end_us);
  f.wait_without_comm_seconds =
      Tracer::instance().occupied_seconds_unless("wait", "comm", begin_us, end_us);
  f.peak_rss_bytes = peak_rss_bytes();
  f.algorithm = parts_.algorithm->report();
  f.window_seconds = static_cast<double>(end_us - begin_us) * 1e-6;
  f.time = Tracer::instance().thread_time(begin_us, end_us);
  f.train_loss = state_.mean_recent_loss();
  f.has_train_loss = !state_.recent_losses.empty();
  return f;
}

nlohmann::json Run::summary(const std::optional<EvalResult>& final_eval) {
  // Where each rank's time went since the run started, from its trace (see core/trace.h).
  const int64_t now_us = Tracer::now_us();
  const RankFigures mine =
      rank_figures(now_us - static_cast<int64_t>(wall_.seconds() * 1e6), now_us);
  const Budget& budget = parts_.budget;
  nlohmann::json s = {
      {"algorithm", cfg_.algorithm.name},
      {"model", cfg_.model.name},
      {"dataset", cfg_.data.dataset},
      {"workers", comm_.world_size()},
      {"steps", state_.step},
      {"total_steps", budget.steps},
      {"budget",
       {{"micro_batches",
         budget.counts_data() ? nlohmann::json(budget.micro_batches) : nlohmann::json()},
        {"samples", budget.counts_data()
                        ? nlohmann::json(budget.micro_batches * cfg_.data.batch_size)
                        : nlohmann::json()},
        {"steps", budget.steps}}},
      {"test_accuracy", final_eval ? nlohmann::json(final_eval->accuracy) : nlohmann::json()},
      {"test_loss", final_eval ? nlohmann::json(final_eval->loss) : nlohmann::json()},
      {"test_examples", final_eval ? nlohmann::json(final_eval->examples) : nlohmann::json()},
      {"wall_seconds", state_.wall_seconds + wall_.seconds()},
      {"train_seconds", state_.train_seconds},
      {"eval_metrics", nlohmann::json::object()},
      {"parameters", model_parameters_},
      {"seed", cfg_.run.seed},
      {"interrupted", stopped_},
      {"run_dir", dir_}};
  for (const auto& [name, value] : eval_extras_) s["eval_metrics"][name] = value;
  if (population_)
    s["population"] = {{"member_accuracy", population_->member_accuracy},
                       {"member_loss", population_->member_loss},
                       {"ensemble_accuracy", population_->ensemble.accuracy},
                       {"ensemble_loss", population_->ensemble.loss},
                       {"average_accuracy", population_->average.accuracy},
                       {"average_loss", population_->average.loss},
                       {"average_repaired", population_->repaired}};
  if (const ClientData* clients = as_client_data(*parts_.algorithm)) {
    const ClientHistogram h = clients->client_histogram();
    s["clients"] = {{"ids", h.ids}, {"heldout", h.heldout}, {"label_counts", h.counts}};
  }
  add_rank_figures(s, comm_, mine);
  add_timelines(s, comm_, activations_.record(), peak_activation_bytes(), recorded_reductions());
  const auto samples = s["samples"].get<int64_t>();
  s["epochs"] = static_cast<double>(samples) / static_cast<double>(data_.train.size());
  s["samples_per_second"] = static_cast<double>(samples) / std::max(1e-9, state_.train_seconds);
  if (is_text()) {  // language-model figures: tokens, throughput, perplexity, bits per byte
    const auto tokens = samples * tokens_per_sample();
    const double tokens_per_second =
        static_cast<double>(tokens) / std::max(1e-9, state_.train_seconds);
    s["tokens"] = tokens;
    s["tokens_per_second"] = tokens_per_second;
    s["test_perplexity"] = final_eval ? nlohmann::json(final_eval->perplexity) : nlohmann::json();
    s["test_bits_per_byte"] =
        final_eval ? nlohmann::json(final_eval->bits_per_byte) : nlohmann::json();
    if (cfg_.model.name == "gpt") {
      const double flops =
          gpt_train_flops_per_token(cfg_.model, data_.train.num_classes, cfg_.data.seq_len);
      s["flops_per_token"] = flops;
      // All workers together: the job's achieved training throughput.
      s["gflops_per_second"] = flops * tokens_per_second * 1e-9;
    }
  }
  return s;
}

nlohmann::json Run::finish() {
  std::optional<EvalResult> final_eval;
  if (!stopped_) {
    final_eval = evaluate_and_log(cfg_.eval.final_full ? 0 : cfg_.eval.limit, /*last=*/true);
    if (cfg_.checkpoint.enabled) checkpoint();
  } else {
    say(fmt::format("interrupted: checkpoint written at step {}; continue with --resume",
                    state_.step));
  }
  nlohmann::json s = summary(final_eval);
  if (leader_) write_file_atomic(dir_ + "/summary.json", s.dump(2) + "\n");
  make_dirs(dir_);
  Tracer::instance().write(fmt::format("{}/trace-rank{}.json", dir_, comm_.rank()), comm_.rank());
  if (leader_) {
    try {
      write_run_report(dir_);
    } catch (const std::exception& e) {  // the run itself succeeded; say so and go on
      std::fprintf(stderr, "warning: report.html not written: %s\n", e.what());
    }
  }
  return s;
}

}  // namespace

int64_t intra_op_threads(const Config& cfg, int64_t local_workers) {
  if (cfg.run.threads > 0) return cfg.run.threads;
  int64_t cores = std::max<int64_t>(1, std::thread::hardware_concurrency());
  return std::max<int64_t>(1, cores / std::max<int64_t>(1, local_workers));
}

std::string run_dir_of(const Config& cfg) {
  return cfg.run.out.empty() ? "runs/" + cfg.run.name : cfg.run.out;
}

Trainer::Trainer(Config config, Communicator& comm, TrainOptions options)
    : cfg_(std::move(config)), comm_(comm), opts_(options), run_dir_(run_dir_of(cfg_)) {}

nlohmann::json Trainer::run() {
  Tracer::instance().clear();
  clear_reductions();
  at::set_num_threads(static_cast<int>(intra_op_threads(cfg_, opts_.local_workers)));
  comm_.set_emulated_latency(cfg_.run.comm_latency_ms * 1e-3);
  if (comm_.rank() == 0) {
    make_dirs(run_dir_);
    write_file_atomic(run_dir_ + "/config.toml", cfg_.resolved_toml());
  }
  Run run(cfg_, comm_, opts_, run_dir_);
  run.keep_tokenizer();
  if (opts_.resume) run.resume();
  run.train();
  return run.finish();
}

}  // namespace desync
