#include "desync/train/trainer.h"

#include <fmt/core.h>

#include <deque>
#include <thread>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/common.h"
#include "desync/algorithms/registry.h"
#include "desync/core/checkpoint.h"
#include "desync/core/error.h"
#include "desync/core/fault.h"
#include "desync/core/fs.h"
#include "desync/core/progress.h"
#include "desync/core/system.h"
#include "desync/core/trace.h"
#include "desync/data/batch_source.h"
#include "desync/data/dataset.h"
#include "desync/models/staged_model.h"
#include "desync/optim/schedule.h"
#include "desync/report/metrics.h"
#include "desync/report/run_report.h"
#include "desync/report/summary.h"

namespace desync {
namespace {

constexpr size_t kTrainLossWindow = 100;  // summary's train_loss: mean of the last N steps

// Mean loss and accuracy of `model` on `data`, with the examples split across ranks.
EvalResult evaluate(StagedModel model, const Dataset& data, const Config& cfg, Communicator& comm) {
  int64_t n = data.size();
  if (cfg.eval.limit > 0) n = std::min(n, cfg.eval.limit);
  int64_t per_rank = (n + comm.world_size() - 1) / comm.world_size();
  int64_t begin = std::min(n, comm.rank() * per_rank);
  int64_t end = std::min(n, begin + per_rank);

  torch::NoGradGuard no_grad;
  bool was_training = model->is_training();
  model->eval();
  double loss_sum = 0.0, correct = 0.0, count = 0.0;
  for (int64_t b = begin; b < end; b += cfg.data.eval_batch_size) {
    MicroBatch mb =
        take_range(data, b, std::min(end, b + cfg.data.eval_batch_size), cfg.data.normalize);
    torch::Tensor logits = model->forward(mb.inputs);
    double items = static_cast<double>(mb.targets.numel());
    loss_sum += loss_of(logits, mb.targets).item<double>() * items;
    correct += logits.argmax(-1).eq(mb.targets).sum().item<double>();
    count += items;
  }
  if (was_training) model->train();
  torch::Tensor totals = torch::tensor({loss_sum, correct, count}, torch::kFloat64);
  comm.all_reduce(totals);
  auto t = totals.accessor<double, 1>();
  EvalResult r;
  r.examples = static_cast<int64_t>(t[2]);
  r.loss = t[2] > 0 ? t[0] / t[2] : 0.0;
  r.accuracy = t[2] > 0 ? t[1] / t[2] : 0.0;
  return r;
}

// Every rank's `value`, in rank order (all-reduce of a one-hot vector: works on any backend).
std::vector<double> per_rank(Communicator& comm, double value) {
  torch::Tensor v = torch::zeros({comm.world_size()}, torch::kFloat64);
  v[comm.rank()] = value;
  comm.all_reduce(v);
  return std::vector<double>(v.data_ptr<double>(), v.data_ptr<double>() + v.numel());
}

nlohmann::json eval_metrics_json(const std::vector<std::pair<std::string, double>>& extras) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [name, value] : extras) j[name] = value;
  return j;
}

std::vector<int64_t> as_ints(const std::vector<double>& v) {
  return std::vector<int64_t>(v.begin(), v.end());
}

void save_model(const StagedModel& model, Archive& a) {
  for (const auto& [name, t] : model->named_params()) a.put("model.param." + name, t);
  for (const auto& [name, t] : model->named_bufs()) a.put("model.buffer." + name, t);
}

void load_model(StagedModel& model, const Archive& a) {
  for (auto& [name, t] : model->named_params()) a.copy_into("model.param." + name, t);
  for (auto& [name, t] : model->named_bufs()) a.copy_into("model.buffer." + name, t);
}

int64_t intra_op_threads(const Config& cfg, int64_t local_workers) {
  if (cfg.run.threads > 0) return cfg.run.threads;
  int64_t cores = std::max<int64_t>(1, std::thread::hardware_concurrency());
  return std::max<int64_t>(1, cores / std::max<int64_t>(1, local_workers));
}

}  // namespace

std::string run_dir_of(const Config& cfg) {
  return cfg.run.out.empty() ? "runs/" + cfg.run.name : cfg.run.out;
}

Trainer::Trainer(Config config, Communicator& comm, TrainOptions options)
    : cfg_(std::move(config)), comm_(comm), opts_(options), run_dir_(run_dir_of(cfg_)) {}

nlohmann::json Trainer::run() {
  Stopwatch wall;
  Tracer::instance().clear();
  const int64_t rank = comm_.rank(), world = comm_.world_size();
  const bool leader = rank == 0;
  at::set_num_threads(static_cast<int>(intra_op_threads(cfg_, opts_.local_workers)));
  comm_.set_emulated_latency(cfg_.run.comm_latency_ms * 1e-3);

  if (leader) {
    make_dirs(run_dir_);
    write_file_atomic(run_dir_ + "/config.toml", cfg_.resolved_toml());
  }

  // Everything random below (synthetic data, initial weights) follows from the seed.
  torch::manual_seed(static_cast<uint64_t>(cfg_.run.seed));
  DatasetSplits data = load_dataset(cfg_.data, static_cast<uint64_t>(cfg_.run.seed));
  StagedModel model =
      make_model(cfg_.model, ModelInput{data.train.example_shape(), data.train.num_classes});
  std::unique_ptr<Algorithm> algorithm = make_algorithm(cfg_.algorithm);
  const bool shard = algorithm->shards_data();  // pipelines: rank 0 reads the whole stream
  MicroBatchSource batches(data.train, cfg_.data.batch_size, shard ? rank : 0, shard ? world : 1,
                           static_cast<uint64_t>(cfg_.run.seed),
                           TransformOptions{cfg_.data.normalize, cfg_.data.augment});

  const int64_t accumulation = cfg_.algorithm.accumulation;
  int64_t total_steps = cfg_.run.steps;
  if (total_steps == 0) {
    double micro = cfg_.run.epochs * static_cast<double>(batches.batches_per_epoch());
    total_steps = std::max<int64_t>(1, static_cast<int64_t>(micro / accumulation));
  }
  Schedule schedule(cfg_.schedule, cfg_.optimizer.lr, total_steps);
  // Evaluation traffic (the test-set totals, models averaged for evaluation) has its own
  // channel, so that the bytes and waits reported for training exclude it.
  std::shared_ptr<Communicator> eval_comm = comm_.split("eval");
  Context ctx{cfg_, comm_, model, batches, schedule, 0};
  ctx.eval_comm = eval_comm.get();
  if (!cfg_.run.worker_speed.empty()) {
    if (static_cast<int64_t>(cfg_.run.worker_speed.size()) != world)
      throw ConfigError(fmt::format("run.worker_speed has {} entries; the job has {} workers",
                                    cfg_.run.worker_speed.size(), world));
    ctx.compute_stretch = 1.0 / cfg_.run.worker_speed[rank];
  }
  algorithm->setup(ctx);

  // State that a checkpoint carries besides the model and the algorithm.
  int64_t start_step = 0, samples = 0;  // samples: consumed by this rank
  double train_seconds = 0.0, wall_before = 0.0, idle_seconds = 0.0, idle_in_split_calls = 0.0;
  std::deque<double> recent_losses;

  CheckpointStore store(run_dir_ + "/checkpoints", rank, world);
  Progress progress(total_steps, cfg_.run.log_every, stderr_is_tty());
  auto say = [&](const std::string& line) {
    if (leader && opts_.show_progress) progress.note(line);
  };

  if (opts_.resume) {
    // Every rank must continue from the same step: the newest one that all ranks have intact.
    auto warn = [&](const std::string& w) { say("warning: " + w); };
    auto loaded = store.load_latest(warn);
    std::vector<double> newest = per_rank(comm_, loaded ? static_cast<double>(loaded->step) : -1.0);
    auto agreed = static_cast<int64_t>(*std::min_element(newest.begin(), newest.end()));
    if (agreed >= 0 && loaded && loaded->step != agreed) loaded = store.load_latest(warn, agreed);
    if (agreed < 0 || !loaded || loaded->step != agreed)
      throw CheckpointError(fmt::format(
          "--resume: no intact checkpoint common to all {} ranks in {}/checkpoints; start without "
          "--resume",
          world, run_dir_));
    const Archive& a = loaded->archive;
    if (a.string("meta.algorithm") != cfg_.algorithm.name)
      throw CheckpointError(
          fmt::format("--resume: the checkpoint was written by algorithm '{}', "
                      "the config selects '{}'",
                      a.string("meta.algorithm"), cfg_.algorithm.name));
    load_model(model, a);
    algorithm->load(a);
    batches.seek({a.integer("sampler.epoch"), a.integer("sampler.batch")});
    {
      auto gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(a.tensor("rng.torch"));
    }
    start_step = loaded->step;
    samples = a.integer("trainer.samples");
    idle_seconds = a.real("trainer.idle_seconds");
    train_seconds = a.real("trainer.train_seconds");
    wall_before = a.real("trainer.wall_seconds");
    torch::Tensor losses = a.tensor("trainer.recent_losses");
    for (int64_t i = 0; i < losses.numel(); ++i) recent_losses.push_back(losses[i].item<double>());
    say(fmt::format("resumed from step {} of {}", start_step, total_steps));
  }

  std::unique_ptr<MetricsWriter> metrics;
  if (leader)
    metrics = std::make_unique<MetricsWriter>(run_dir_ + "/metrics.jsonl",
                                              opts_.resume ? start_step : -1);

  auto checkpoint = [&](int64_t step) {
    TraceSpan span("checkpoint", "checkpoint");
    Archive a;
    a.put("meta.step", step);
    a.put("meta.algorithm", cfg_.algorithm.name);
    a.put("meta.world_size", world);
    save_model(model, a);
    algorithm->save(a);
    a.put("sampler.epoch", batches.position().epoch);
    a.put("sampler.batch", batches.position().batch);
    a.put("rng.torch", at::detail::getDefaultCPUGenerator().get_state());
    a.put("trainer.samples", samples);
    a.put("trainer.idle_seconds", idle_seconds);
    a.put("trainer.train_seconds", train_seconds);
    a.put("trainer.wall_seconds", wall_before + wall.seconds());
    a.put("trainer.recent_losses",
          torch::tensor(std::vector<double>(recent_losses.begin(), recent_losses.end()),
                        torch::kFloat64));
    store.write(step, a, cfg_.checkpoint.keep);
  };

  std::vector<std::pair<std::string, double>> eval_extras;  // the last evaluation's
  auto eval_record = [&](int64_t step) {
    TraceSpan span("eval", "eval");
    EvalResult r = evaluate(algorithm->model_for_eval(ctx), data.test, cfg_, *eval_comm);
    eval_extras = algorithm->eval_metrics();
    if (leader) {
      nlohmann::json record = {{"type", "eval"},
                               {"step", step},
                               {"test_loss", r.loss},
                               {"test_accuracy", r.accuracy},
                               {"elapsed", train_seconds}};
      std::string extras;
      for (const auto& [name, value] : eval_extras) {
        record[name] = value;
        extras += fmt::format("  {} {:.4g}", name, value);
      }
      metrics->write(record);
      say(fmt::format("eval  step {}  test loss {:.4f}  test accuracy {:.4f}{}", step, r.loss,
                      r.accuracy, extras));
    }
    return r;
  };

  const std::optional<Fault> fault = fault_from_env();
  bool stopped = false;
  int64_t step = start_step;
  int64_t window_samples = samples * world;  // global samples at the window's start (estimate)
  Stopwatch window;
  double shown_loss = 0.0, shown_sps = 0.0;
  if (leader && opts_.show_progress && start_step == 0)
    say(fmt::format("training {} · {} · {} · {} worker{} · {} steps → {}", cfg_.algorithm.name,
                    cfg_.model.name, cfg_.data.dataset, world, world == 1 ? "" : "s", total_steps,
                    run_dir_));
  while (step < total_steps) {
    ctx.step = step;
    Stopwatch step_clock;
    StepReport report = algorithm->step(ctx);
    train_seconds += step_clock.seconds();
    ++step;
    maybe_inject_fault(fault, rank, step);
    samples += report.samples;  // this rank's; ranks may differ (ACCO, uneven workers)
    idle_seconds += report.idle_seconds;
    idle_in_split_calls += report.idle_in_split_calls;
    if (report.micro_batches > 0) {  // a step may consume nothing (a worker with fewer steps)
      recent_losses.push_back(report.loss);
      if (recent_losses.size() > kTrainLossWindow) recent_losses.pop_front();
    }

    if (world == 1) stopped = interrupted();
    if (step % cfg_.run.log_every == 0 || step == total_steps) {
      // Over all ranks: the step's loss, weighted by micro-batches, the samples consumed, and
      // whether any rank was interrupted (ranks must agree on the step at which they stop).
      // Then one slot per rank: the training bytes it has sent so far.
      torch::Tensor t = torch::zeros({4 + world}, torch::kFloat64);
      {
        auto a = t.accessor<double, 1>();
        a[0] = report.loss * static_cast<double>(report.micro_batches);
        a[1] = static_cast<double>(report.micro_batches);
        a[2] = static_cast<double>(samples);
        a[3] = interrupted() ? 1.0 : 0.0;
        a[4 + rank] = static_cast<double>(comm_.total_stats().bytes_sent -
                                          eval_comm->total_stats().bytes_sent);
      }
      if (world > 1) {
        comm_.all_reduce(t);
        stopped = t[3].item<double>() > 0;
      }
      double loss = t[0].item<double>() / std::max(1.0, t[1].item<double>());
      auto global_samples = static_cast<int64_t>(t[2].item<double>());
      double lr = schedule.lr(step - 1);
      double sps = (global_samples - window_samples) / std::max(1e-9, window.seconds());
      if (leader) {
        double epoch = static_cast<double>(batches.position().epoch) +
                       static_cast<double>(batches.position().batch) / batches.batches_per_epoch();
        metrics->write({{"type", "train"},
                        {"step", step},
                        {"epoch", epoch},
                        {"loss", loss},
                        {"lr", lr},
                        {"samples", global_samples},
                        {"samples_per_second", sps},
                        {"elapsed", train_seconds},
                        {"bytes_sent_per_rank",
                         as_ints(std::vector<double>(t.data_ptr<double>() + 4,
                                                     t.data_ptr<double>() + 4 + world))}});
      }
      shown_loss = loss;
      shown_sps = sps;
      window_samples = global_samples;
      window.reset();
    }
    if (leader && opts_.show_progress)
      progress.update(step, shown_loss, schedule.lr(step - 1), shown_sps);

    if (step == total_steps) break;
    if (cfg_.eval.every > 0 && step % cfg_.eval.every == 0) eval_record(step);
    if (cfg_.checkpoint.enabled &&
        (stopped || (cfg_.checkpoint.every > 0 && step % cfg_.checkpoint.every == 0)))
      checkpoint(step);
    if (stopped) break;
  }
  if (leader && opts_.show_progress) progress.finish();
  algorithm->finish(ctx);

  nlohmann::json summary;
  EvalResult final_eval;
  if (!stopped) {
    final_eval = eval_record(step);
    if (cfg_.checkpoint.enabled) checkpoint(step);
  } else {
    say(fmt::format("interrupted: checkpoint written at step {}; continue with --resume", step));
  }

  double train_loss = 0.0;
  for (double l : recent_losses) train_loss += l;
  if (!recent_losses.empty()) train_loss /= static_cast<double>(recent_losses.size());
  if (world > 1) {  // the mean over the ranks that computed losses (pipelines: the last one)
    torch::Tensor t =
        torch::tensor({train_loss, recent_losses.empty() ? 0.0 : 1.0}, torch::kFloat64);
    comm_.all_reduce(t);
    train_loss = t[0].item<double>() / std::max(1.0, t[1].item<double>());
  }

  // Waiting that blocked training: the main channel's waits plus waits for a background comm
  // thread. Communication of background threads is reported as overlapped.
  CommStats cs = comm_.total_stats();
  cs -= eval_comm->total_stats();
  const double main_wait = comm_.stats().wait_seconds;  // before the calls below add to it
  std::vector<double> sent = per_rank(comm_, static_cast<double>(cs.bytes_sent));
  std::vector<double> received = per_rank(comm_, static_cast<double>(cs.bytes_received));
  std::vector<double> waited = per_rank(comm_, main_wait + idle_seconds);
  std::vector<double> overlapped =
      per_rank(comm_, cs.wait_seconds - main_wait - idle_in_split_calls -
                          algorithm->background_idle_seconds());
  std::vector<double> rank_samples = per_rank(comm_, static_cast<double>(samples));
  int64_t global_samples = 0;
  for (double v : rank_samples) global_samples += static_cast<int64_t>(v);
  std::vector<double> rss = per_rank(comm_, static_cast<double>(peak_rss_bytes()));
  nlohmann::json memory = nlohmann::json::object();
  for (const auto& [name, bytes] : algorithm->memory())
    memory[name] = as_ints(per_rank(comm_, static_cast<double>(bytes)));
  nlohmann::json algorithm_stats = nlohmann::json::object();
  for (const auto& [name, count] : algorithm->stats())
    algorithm_stats[name] = as_ints(per_rank(comm_, static_cast<double>(count)));

  // Where each rank's time went since the run started, from its trace (see core/trace.h).
  const int64_t now_us = Tracer::now_us();
  const int64_t begin_us = now_us - static_cast<int64_t>(wall.seconds() * 1e6);
  const Tracer::ThreadTime tt = Tracer::instance().thread_time(begin_us, now_us);
  nlohmann::json time_breakdown = {
      {"window", per_rank(comm_, static_cast<double>(now_us - begin_us) * 1e-6)},
      {"compute", per_rank(comm_, tt.compute)},
      {"optimizer", per_rank(comm_, tt.optimizer)},
      {"wait", per_rank(comm_, tt.wait)},
      {"eval", per_rank(comm_, tt.eval)},
      {"checkpoint", per_rank(comm_, tt.checkpoint)},
      {"other", per_rank(comm_, tt.other)}};
  std::vector<double> in_flight =
      per_rank(comm_, Tracer::instance().busy_seconds("comm", begin_us, now_us));
  // Evaluation traffic, kept out of bytes_sent but on the wire all the same (netbed's check).
  std::vector<double> eval_sent =
      per_rank(comm_, static_cast<double>(eval_comm->total_stats().bytes_sent));

  double wall_seconds = wall_before + wall.seconds();
  summary = {
      {"algorithm", cfg_.algorithm.name},
      {"model", cfg_.model.name},
      {"dataset", cfg_.data.dataset},
      {"workers", world},
      {"steps", step},
      {"total_steps", total_steps},
      {"samples", global_samples},
      {"samples_per_rank", as_ints(rank_samples)},
      {"epochs", static_cast<double>(global_samples) / static_cast<double>(data.train.size())},
      {"test_accuracy", stopped ? nlohmann::json() : nlohmann::json(final_eval.accuracy)},
      {"test_loss", stopped ? nlohmann::json() : nlohmann::json(final_eval.loss)},
      {"train_loss", train_loss},
      {"wall_seconds", wall_seconds},
      {"train_seconds", train_seconds},
      {"samples_per_second", global_samples / std::max(1e-9, train_seconds)},
      {"peak_rss_bytes", as_ints(rss)},
      {"bytes_sent", as_ints(sent)},
      {"bytes_received", as_ints(received)},
      {"comm_wait_seconds", waited},
      {"overlapped_comm_seconds", overlapped},
      {"memory_bytes", memory},
      {"algorithm_stats", algorithm_stats},
      {"eval_metrics", eval_metrics_json(eval_extras)},
      {"parameters", model->parameter_count()},
      {"seed", cfg_.run.seed},
      {"interrupted", stopped},
      {"run_dir", run_dir_}};
  summary["time_breakdown_seconds"] = std::move(time_breakdown);
  summary["comm_in_flight_seconds"] = in_flight;
  summary["eval_bytes_sent"] = as_ints(eval_sent);
  if (leader) write_file_atomic(run_dir_ + "/summary.json", summary.dump(2) + "\n");
  make_dirs(run_dir_);
  Tracer::instance().write(fmt::format("{}/trace-rank{}.json", run_dir_, rank), rank);
  if (leader) {
    try {
      write_run_report(run_dir_);
    } catch (const std::exception& e) {  // the run itself succeeded; say so and go on
      std::fprintf(stderr, "warning: report.html not written: %s\n", e.what());
    }
  }
  return summary;
}

}  // namespace desync
