// The `desync` command.
//
//   desync train CONFIG [--set section.key=value]... [--out DIR] [--resume] [--quiet]
//                [--workers N] [--nnodes K --node-rank I --master-addr HOST --master-port P]
//   desync worker CONFIG [...]      (rank and rendezvous from RANK, WORLD_SIZE, MASTER_ADDR, ...)
//   desync meta-train CONFIG [--workers N] [--out DIR] [--resume] [--quiet]
//                [--set section.key=value]...
//   desync compare RUN_DIR... [--out PAGE.html] [--target-accuracy X]
//   desync generate RUN_DIR [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K] [--seed S]
//   desync checkpoint inspect RUN_DIR [--step S] [--rank R]
//   desync tokenize CONFIG [--set section.key=value]...
//   desync partition CONFIG [--set section.key=value]...
//   desync corpus --out FILE [--gcide DIR] [--wordnet DIR] [--no-glosses] [--keep-syn]
//   desync wn-bats --corpus FILE --out DIR [--wordnet DIR] [--pairs N] [--min-count N]
//   desync embeddings RUN_DIR --out FILE [--format auto|text|binary] [--c-compat]
//   desync regularities EMB --categories DIR [--json F] [--html F] [options]
//   desync paraphrase RUN_DIR --categories DIR [--json F]
//   desync list
//   desync version
//
// Exit status: 0 success, 1 failure at run time, 2 usage or configuration error, 130 stopped
// by a signal (after writing a checkpoint). Errors are one line on stderr, never a stack trace.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "desync/cli/commands.h"
#include "desync/core/error.h"
#include "desync/core/system.h"

namespace {

// The first line of an exception message (LibTorch appends stack traces on later lines).
std::string first_line(const char* what) {
  std::string s(what);
  auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

// On a terminal, erases a progress bar the error would otherwise be appended to.
const char* clear_line() { return desync::stderr_is_tty() ? "\r\033[K" : ""; }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"desync: decoupled and communication-efficient distributed training", "desync"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(DESYNC_VERSION));

  desync::TrainArgs train;
  CLI::App* train_cmd = app.add_subcommand("train", "train a model as a config file describes");
  train_cmd->add_option("config", train.config, "TOML config file")->required();
  train_cmd->add_option("--set", train.overrides,
                        "override a config value: section.key=value (repeatable)");
  train_cmd->add_option("--out", train.out, "run directory (default: run.out or runs/<run.name>)");
  train_cmd->add_flag("--resume", train.resume,
                      "continue from the newest intact checkpoint in the run directory");
  train_cmd->add_flag("--quiet", train.quiet, "no progress output (the summary is still printed)");
  train_cmd
      ->add_option("--workers,--workers-per-node", train.workers,
                   "worker processes on this node (default: run.workers)")
      ->check(CLI::Range(1, 4096));
  train_cmd->add_option("--nnodes", train.nnodes, "nodes in the job")->check(CLI::Range(1, 4096));
  train_cmd->add_option("--node-rank", train.node_rank, "this node's index in [0, nnodes)");
  train_cmd->add_option("--master-addr", train.master_addr,
                        "host of rank 0's rendezvous (default 127.0.0.1)");
  train_cmd
      ->add_option("--master-port", train.master_port,
                   "rendezvous port (default: a free loopback port)")
      ->check(CLI::Range(1, 65535));
  train_cmd->add_option("--job-token", train.job_token,
                        "shared secret that a worker must present to join (default: random, or "
                        "derived from the config on multi-node jobs)");

  desync::TrainArgs worker;
  CLI::App* worker_cmd = app.add_subcommand(
      "worker",
      "run one worker; RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT come from the environment");
  worker_cmd->add_option("config", worker.config, "TOML config file")->required();
  worker_cmd->add_option("--set", worker.overrides, "override a config value (repeatable)");
  worker_cmd->add_option("--out", worker.out, "run directory");
  worker_cmd->add_flag("--resume", worker.resume, "continue from the newest common checkpoint");
  worker_cmd->add_flag("--quiet", worker.quiet, "no progress output");

  desync::MetaTrainArgs meta;
  CLI::App* meta_cmd = app.add_subcommand(
      "meta-train", "meta-train a learned optimizer by Persistent ES ([meta] of the config)");
  meta_cmd->add_option("config", meta.config, "TOML config file")->required();
  meta_cmd->add_option("--set", meta.overrides,
                       "override a config value: section.key=value (repeatable)");
  meta_cmd->add_option("--out", meta.out, "run directory (default: run.out or runs/<run.name>)");
  meta_cmd->add_flag("--resume", meta.resume,
                     "continue from the newest intact checkpoint in the run directory");
  meta_cmd->add_flag("--quiet", meta.quiet, "no progress output");
  meta_cmd->add_option("--workers", meta.workers, "local worker processes (default: run.workers)")
      ->check(CLI::Range(1, 4096));
  desync::MetaTrainArgs meta_worker;
  CLI::App* meta_worker_cmd =
      app.add_subcommand("meta-worker", "one meta-train worker (started by meta-train)");
  meta_worker_cmd->group("");  // hidden: meta-train starts it
  meta_worker_cmd->add_option("config", meta_worker.config, "TOML config file")->required();
  meta_worker_cmd->add_option("--set", meta_worker.overrides, "override a config value");
  meta_worker_cmd->add_option("--out", meta_worker.out, "run directory");
  meta_worker_cmd->add_flag("--resume", meta_worker.resume, "continue from a checkpoint");
  meta_worker_cmd->add_flag("--quiet", meta_worker.quiet, "no progress output");

  desync::CompareArgs compare;
  CLI::App* compare_cmd = app.add_subcommand(
      "compare", "compare runs: a table on stdout and an HTML page of their curves overlaid");
  compare_cmd->add_option("runs", compare.runs, "run directories")->required();
  compare_cmd->add_option("--out", compare.out, "the HTML page to write (default compare.html)");
  compare_cmd
      ->add_option("--target-accuracy", compare.target_accuracy,
                   "accuracy for the time-to-target column (default: the lowest final accuracy)")
      ->check(CLI::Range(0.0, 1.0));

  desync::GenerateArgs generate;
  CLI::App* generate_cmd =
      app.add_subcommand("generate", "sample text from a language-model run's newest checkpoint");
  generate_cmd->add_option("run_dir", generate.run_dir, "run directory")->required();
  generate_cmd->add_option("--prompt", generate.prompt, "text to continue (default: none)");
  generate_cmd->add_option("--tokens", generate.tokens, "tokens to sample (default 200)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  generate_cmd
      ->add_option("--temperature", generate.temperature, "softmax temperature; 0 = greedy (1)")
      ->check(CLI::Range(0.0, 100.0));
  generate_cmd
      ->add_option("--top-k", generate.top_k, "sample among the K likeliest tokens; 0 = all (0)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  generate_cmd->add_option("--seed", generate.seed, "seed of the draws (0)");

  desync::CheckpointInspectArgs inspect;
  CLI::App* checkpoint_cmd = app.add_subcommand("checkpoint", "look into a run's checkpoints");
  checkpoint_cmd->require_subcommand(1);
  CLI::App* inspect_cmd = checkpoint_cmd->add_subcommand(
      "inspect",
      "print a checkpoint's contents (step, world, algorithm, entries, sizes, "
      "checksums) and verify it on every rank");
  inspect_cmd->add_option("path", inspect.path, "run directory or its checkpoints/ folder")
      ->required();
  inspect_cmd->add_option("--step", inspect.step, "the step to inspect (default: the newest)")
      ->check(CLI::NonNegativeNumber);
  inspect_cmd->add_option("--rank", inspect.rank, "whose entries to list (default 0)")
      ->check(CLI::NonNegativeNumber);

  desync::TokenizeArgs tokenize;
  CLI::App* tokenize_cmd = app.add_subcommand(
      "tokenize", "build or check the token cache of a text corpus (data.dataset text or gcide)");
  tokenize_cmd->add_option("config", tokenize.config, "TOML config file")->required();
  tokenize_cmd->add_option("--set", tokenize.overrides,
                           "override a config value: section.key=value (repeatable)");

  desync::PartitionArgs partition;
  CLI::App* partition_cmd = app.add_subcommand(
      "partition", "print the clients of a federated config: sizes and label histograms");
  partition_cmd->add_option("config", partition.config, "TOML config file")->required();
  partition_cmd->add_option("--set", partition.overrides,
                            "override a config value: section.key=value (repeatable)");

  desync::CorpusArgs corpus;
  CLI::App* corpus_cmd = app.add_subcommand(
      "corpus", "write the GCIDE + WordNet-gloss word corpus, one sentence per line");
  corpus_cmd->add_option("--out", corpus.out, "the text file to write")->required();
  corpus_cmd->add_option("--gcide", corpus.gcide_dir, "dict-gcide folder (/usr/share/dictd)");
  corpus_cmd->add_option("--wordnet", corpus.wordnet_dir, "WordNet folder (/usr/share/wordnet)");
  corpus_cmd->add_flag("!--no-glosses", corpus.glosses, "leave out the WordNet glosses");
  corpus_cmd->add_flag("--keep-syn", corpus.keep_syn, "keep GCIDE's Syn: blocks");

  desync::WnBatsArgs wn_bats;
  CLI::App* wn_bats_cmd = app.add_subcommand(
      "wn-bats", "build relation categories from WordNet (BATS layout), filtered by a corpus");
  wn_bats_cmd->add_option("--corpus", wn_bats.corpus, "corpus text file (desync corpus)")
      ->required();
  wn_bats_cmd->add_option("--out", wn_bats.out, "folder to write")->required();
  wn_bats_cmd->add_option("--wordnet", wn_bats.wordnet_dir, "WordNet folder (/usr/share/wordnet)");
  wn_bats_cmd->add_option("--pairs", wn_bats.pairs, "pairs per category (50)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  wn_bats_cmd->add_option("--min-count", wn_bats.min_count, "corpus count of every word (5)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  wn_bats_cmd->add_flag("--both-directions", wn_bats.both_directions,
                        "antonyms in both directions (as BATS L10)");

  desync::ExportArgs export_args;
  CLI::App* export_cmd = app.add_subcommand(
      "embeddings", "write an sgns or ppmi_svd run's word vectors as a word2vec file");
  export_cmd->add_option("run_dir", export_args.run_dir, "run directory")->required();
  export_cmd->add_option("--out", export_args.out, "file to write (.gz compresses)")->required();
  export_cmd->add_option("--format", export_args.format, "auto (binary for .bin), text, binary")
      ->check(CLI::IsMember({"auto", "text", "binary"}));
  export_cmd->add_flag("--c-compat", export_args.c_compat, "text values as C's %lf");

  desync::RegularitiesArgs reg;
  CLI::App* reg_cmd = app.add_subcommand(
      "regularities",
      "analogy tests, their decompositions, OCS and PCS with control sets, per category");
  reg_cmd->add_option("embeddings", reg.embeddings, "word2vec text/binary or GloVe file")
      ->required();
  reg_cmd->add_option("--categories", reg.categories, "folder of categories (BATS layout)")
      ->required();
  reg_cmd->add_option("--json", reg.json, "write the results as JSON");
  reg_cmd->add_option("--html", reg.html, "write an HTML page with per-category charts");
  reg_cmd->add_option("--limit", reg.limit, "read only the first N words (0 = all)");
  reg_cmd->add_option("--restrict-vocab", reg.restrict_vocab, "analogy candidates (300000)");
  reg_cmd->add_option("--shuffles", reg.shuffles, "PCS derangements per category (50)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  reg_cmd->add_option("--draws", reg.draws, "draws per control set (10)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  reg_cmd->add_option("--size-random", reg.size_random, "pairs of the fully random control (50)");
  reg_cmd->add_option("--limit-word", reg.limit_word, "random words come from the first N (10000)");
  reg_cmd->add_option("--min-pairs", reg.min_pairs, "fewer pairs give no OCS/PCS (5)");
  reg_cmd->add_option("--cosmul-eps", reg.cosmul_eps, "3CosMul's epsilon (1e-3)");
  reg_cmd->add_option("--seed", reg.seed, "seed of every draw (0)");
  reg_cmd->add_option("--derangement", reg.derangement, "uniform or repo")
      ->check(CLI::IsMember({"uniform", "repo"}));
  reg_cmd->add_flag("--no-controls", reg.no_controls, "skip the six control sets");
  reg_cmd->add_flag("--all-targets", reg.all_targets, "keep every alternative target");
  reg_cmd->add_flag("--float64", reg.float64, "compute in float64");
  reg_cmd->add_flag("--allow-nonfinite", reg.allow_nonfinite, "accept NaN and Inf values");
  reg_cmd->add_flag("--keep-first", reg.keep_first, "keep the first of duplicate words");
  reg_cmd->add_flag("--replace-invalid-utf8", reg.replace_invalid_utf8,
                    "read invalid UTF-8 as U+FFFD instead of failing");

  desync::ParaphraseArgs para;
  CLI::App* para_cmd =
      app.add_subcommand("paraphrase", "the paraphrase test of an sgns run (arXiv 2102.11749)");
  para_cmd->add_option("run_dir", para.run_dir, "sgns run directory")->required();
  para_cmd->add_option("--categories", para.categories, "folder of categories (BATS layout)")
      ->required();
  para_cmd->add_option("--json", para.json, "write the report as JSON");
  para_cmd->add_option("--n-pmi", para.n_pmi, "rows of the linear fit (2000)");
  para_cmd->add_option("--n-tri", para.n_tri, "most frequent words kept for triples (10000)");
  para_cmd->add_flag("--full-context", para.full_context, "pseudo-inverse of all of C");
  para_cmd->add_option("--closeness", para.closeness, "increasing or notebook")
      ->check(CLI::IsMember({"increasing", "notebook"}));

  CLI::App* list_cmd = app.add_subcommand("list", "list algorithms, models and datasets");
  CLI::App* version_cmd = app.add_subcommand("version", "print the version");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "desync: %s (see desync --help)\n", first_line(e.what()).c_str());
    return 2;
  }

  try {
    if (*train_cmd) return desync::run_train(train);
    if (*worker_cmd) return desync::run_worker(worker);
    if (*meta_cmd) return desync::run_meta_train(meta);
    if (*meta_worker_cmd) return desync::run_meta_worker(meta_worker);
    if (*compare_cmd) return desync::run_compare(compare);
    if (*generate_cmd) return desync::run_generate(generate);
    if (*inspect_cmd) return desync::run_checkpoint_inspect(inspect);
    if (*tokenize_cmd) return desync::run_tokenize(tokenize);
    if (*partition_cmd) return desync::run_partition(partition);
    if (*corpus_cmd) return desync::run_corpus(corpus);
    if (*wn_bats_cmd) return desync::run_wn_bats(wn_bats);
    if (*export_cmd) return desync::run_export_embeddings(export_args);
    if (*reg_cmd) return desync::run_regularities(reg);
    if (*para_cmd) return desync::run_paraphrase(para);
    if (*list_cmd) return desync::run_list();
    if (*version_cmd) return desync::run_version();
  } catch (const desync::Error& e) {
    std::fprintf(stderr, "%sdesync: %s\n", clear_line(), first_line(e.what()).c_str());
    return e.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%sdesync: internal error: %s\n", clear_line(),
                 first_line(e.what()).c_str());
    return 1;
  }
  return 0;
}
