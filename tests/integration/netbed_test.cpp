// The throttled multi-host bed (scripts/netbed): network namespaces on a bridge, each host's
// link limited by tc, one desync node per host over real TCP. It checks desync's byte accounting
// against the wire (the interfaces' tx_bytes and rx_bytes) for every registered algorithm and
// against the rate, and that the bed cleans up after a failed job. Needs root and network
// namespaces; skips, saying why, without.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "test_util.h"

namespace desync {
namespace {

const std::string kDesync = testing::desync_binary();
const std::string kSource = testing::source_dir();

// An MLP of about 100k parameters (400 KB), so that a step moves ~600 KB per rank and the
// job's megabytes dwarf connection set-up; ten steps take a few seconds at 20 Mbit/s.
const char* kJob = R"(
[run]
name = "netbed"
steps = 10
log_every = 5
threads = 1
comm_timeout = 60
[data]
dataset = "synthetic"
synthetic_train = 2048
synthetic_test = 256
synthetic_shape = [256]
batch_size = 16
[model]
name = "mlp"
hidden = [256, 128]
[optimizer]
lr = 0.05
[checkpoint]
enabled = false
)";

// Why the bed cannot run here, or "" if it can.
std::string unavailable() {
  if (::geteuid() != 0) return "needs root (network namespaces, veth, tc)";
  if (testing::run_command("command -v ip && command -v tc").status != 0)
    return "needs ip and tc (Debian package iproute2; scripts/install-deps installs it)";
  const std::string probe = "desync-probe-" + std::to_string(::getpid());
  auto r = testing::run_command("ip netns add " + probe + " && ip netns del " + probe);
  if (r.status != 0) return "cannot create network namespaces here: " + r.output;
  return "";
}

// One job on a bed: `job` (a config's text) on `hosts` hosts, into dir/name.
struct BedJob {
  std::string name;
  std::string bed_args;    // options of scripts/netbed
  std::string train_args;  // options of desync train
  std::string env;         // NAME=value ... for the bed and its nodes
  int hosts = 4;
  std::string job = kJob;
};

struct BedRun {
  testing::CommandResult result;
  nlohmann::json bed, summary;
};

// The shell command that runs `j`, after writing its config.
std::string bed_command(const testing::TempDir& dir, const BedJob& j) {
  const std::string config = dir.file(j.name + ".toml");
  testing::write_file(config, j.job);
  return j.env + " " + kSource + "/scripts/netbed -k " + std::to_string(j.hosts) + " " +
         j.bed_args + " --desync " + kDesync + " -o " + dir.file(j.name) + " -- " + config +
         " --quiet " + j.train_args;
}

BedRun read_bed(const testing::TempDir& dir, const BedJob& j, testing::CommandResult result) {
  BedRun b;
  b.result = std::move(result);
  b.bed =
      nlohmann::json::parse(testing::read_file(dir.file(j.name + "/netbed.json")), nullptr, false);
  b.summary =
      nlohmann::json::parse(testing::read_file(dir.file(j.name + "/summary.json")), nullptr, false);
  return b;
}

BedRun netbed(const testing::TempDir& dir, const BedJob& j) {
  return read_bed(dir, j, testing::run_command(bed_command(dir, j)));
}

// Runs the jobs at once, each on its own bed (its own namespaces, bridge and links, so they do
// not meet). A bed spends most of its time waiting (on the kernel building and deleting
// namespaces, on start-up, on its links), so a few beds together take little longer than one.
std::vector<BedRun> netbeds(const testing::TempDir& dir, const std::vector<BedJob>& jobs) {
  std::string all;
  for (const BedJob& j : jobs) {
    const std::string log = dir.file(j.name + ".log"), status = dir.file(j.name + ".status");
    all += "(" + bed_command(dir, j) + " >" + log + " 2>&1; echo $? >" + status + ") & ";
  }
  testing::run_command(all + "wait");
  std::vector<BedRun> runs;
  for (const BedJob& j : jobs) {
    testing::CommandResult r;
    r.output = testing::read_file(dir.file(j.name + ".log"));
    r.status = std::atoi(testing::read_file(dir.file(j.name + ".status")).c_str());
    runs.push_back(read_bed(dir, j, std::move(r)));
  }
  return runs;
}

// What desync says rank r sent: training and evaluation traffic, counted apart; the wire carries
// both.
double desync_sent(const BedRun& b, int r) {
  return b.summary["bytes_sent"][r].get<double>() + b.summary["eval_bytes_sent"][r].get<double>();
}

TEST(Netbed, TwentyMbitBytesAgreeWithTheWireAndTheRate) {
  if (std::string why = unavailable(); !why.empty()) GTEST_SKIP() << why;
  const double kRate = 20e6;  // bit/s
  for (std::string algorithm : {"ddp", "zero1"}) {
    testing::TempDir dir;
    BedRun b = netbed(dir, {algorithm, "--rate 20mbit", "--set algorithm.name=" + algorithm, ""});
    ASSERT_EQ(b.result.status, 0) << b.result.output;
    ASSERT_FALSE(b.bed.is_discarded()) << b.result.output;
    ASSERT_FALSE(b.summary.is_discarded()) << b.result.output;
    ASSERT_EQ(b.summary["workers"], 4);
    for (int r = 0; r < 4; ++r) {
      // Rank r ran on host r; its interface counted every frame it sent, headers included.
      // desync counts training and evaluation traffic apart; the wire carries both.
      double sent = desync_sent(b, r);
      double wire = b.bed["tx_bytes"][r].get<double>();
      double in_flight = b.summary["comm_in_flight_seconds"][r].get<double>();
      EXPECT_GT(sent, 4e6) << algorithm << " rank " << r;
      EXPECT_NEAR(sent / wire, 1.0, 0.10)
          << algorithm << " rank " << r << ": desync counted " << sent << " B, the wire " << wire;
      EXPECT_LE(sent * 8 / in_flight, kRate)
          << algorithm << " rank " << r << ": " << sent << " B in " << in_flight << " s";
    }
  }
}

TEST(Netbed, FailedNodeStopsTheJobAndTheBedIsTornDown) {
  if (std::string why = unavailable(); !why.empty()) GTEST_SKIP() << why;
  testing::TempDir dir;
  BedRun b = netbed(dir, {"fail", "--rates none,none,none,50mbit", "--set algorithm.name=ddp",
                          "DESYNC_FAULT=rank=2,step=2,action=exit"});
  EXPECT_EQ(b.result.status, 1) << b.result.output;
  EXPECT_NE(b.result.output.find("node 2 exited with status"), std::string::npos)
      << b.result.output;
  ASSERT_FALSE(b.bed.is_discarded()) << b.result.output;
  EXPECT_EQ(b.bed["exit_status"][2], 1);  // the launcher reports its failed worker with 1

  // Nothing named with this bed's prefix is left: namespaces, links, processes.
  const std::string out = b.result.output;
  size_t at = out.find("(namespaces ");
  ASSERT_NE(at, std::string::npos) << out;
  at += std::string("(namespaces ").size();
  const std::string prefix = out.substr(at, out.find("h*", at) - at);
  ASSERT_GE(prefix.size(), 3u) << out;
  EXPECT_EQ(testing::run_command("ip netns list | grep " + prefix).status, 1);
  EXPECT_EQ(testing::run_command("ip -o link show | grep " + prefix).status, 1);
  // "[d]esync-test" matches the run directory in a command line, but not this grep itself.
  std::string run_dir = dir.file("fail");
  EXPECT_EQ(testing::run_command("ps -eo args | grep '[" + run_dir.substr(0, 1) + "]" +
                                 run_dir.substr(1) + "'")
                .status,
            1);
}

// Every registered algorithm's byte accounting against the wire.
//
// A job small enough for a 2-core machine, large enough that payload dwarfs what desync does not
// count: an MLP of 256 inputs and three hidden layers of 512 (about 660k parameters, 2.6 MB; four
// stages, one per pipeline rank), four steps, links at 200 Mbit/s. Every rank moves megabytes.
//
// What the 10% tolerance absorbs: the wire counts frames, desync counts tensor bytes. Each frame
// adds Ethernet, IPv4 and TCP headers (14 + 20 + 32 bytes), at most 4.6% of a full 1448-byte
// segment, far less here where the veth passes GSO super-frames of up to 64 KB whole and counts
// one header for each. A host's tx_bytes also holds the ACKs it sends for what it receives, and
// its rx_bytes the ACKs for what it sends (66 bytes each). Then what no Communicator call
// carries: Gloo's header on each message, the TCP and Gloo handshakes of every process group's
// full mesh, the rendezvous store's traffic (rank 0 serves it), a retransmission when a queue
// drops, the kernel's own IPv6 neighbour discovery. Measured, desync's figures run 0.5-2.5% under
// the wire; a wrong formula ((N-1)/N for 2(N-1)/N, N chunks for N-1, a call left out) is off by
// 12% or more.
const char* kWireJob = R"(
[run]
name = "wire"
steps = 4
log_every = 4
threads = 1
comm_timeout = 60
[data]
dataset = "synthetic"
synthetic_train = 2048
synthetic_test = 64
synthetic_shape = [256]
batch_size = 32
[model]
name = "mlp"
hidden = [512, 512, 512]
[optimizer]
lr = 0.05
[checkpoint]
enabled = false
)";

// How a job's evaluation moves bytes. summary.json counts what evaluation sends
// (eval_bytes_sent) but not what it receives, so the check adds what each rank received for it.
enum class EvalTraffic {
  kAllReduce,     // all-reduces only (a loss, an average of the workers' models): a rank receives
                  // what it sends
  kSharedStages,  // a pipeline gathers the model: every rank receives, by broadcast, each stage
                  // it does not hold
  kSharedStagesAndHeads,  // as kSharedStages, and the auxiliary heads of local learning too
  kSharedStagesOwnHeads,  // as kSharedStages; heads stay with their owners (contrastive_local's
                          // projection heads), but memory_bytes counts a rank's with its stages
};

struct WireCase {
  std::string name;        // the run's name: the algorithm, and a variant where there are several
  std::string algorithm;   // algorithm.name
  std::string train_args;  // more options of desync train
  EvalTraffic eval = EvalTraffic::kAllReduce;
  // A rank that sends nothing while training by design (local learning's last block): its
  // training bytes must be nil and the wire must show nothing else; what it received is judged
  // as for every rank.
  int quiet_rank = -1;
  std::string job = kWireJob;  // the config
  // Compressed pipelines: the bytes of one boundary codec's evaluation state (MAPL's projector
  // and anchors), which every rank but the boundary's receiver gets by broadcast.
  double codec_eval_bytes = 0;
};

// What rank r of `b` received for evaluation.
double eval_received(const BedRun& b, const WireCase& c, int r) {
  if (c.eval == EvalTraffic::kAllReduce) return b.summary["eval_bytes_sent"][r].get<double>();
  const double model = b.summary["parameters"].get<double>() * 4;  // float32, no buffers (MLP)
  double received = model - b.summary["memory_bytes"]["parameters"][r].get<double>();
  if (c.eval == EvalTraffic::kSharedStagesAndHeads) {  // heads without buffers (mlp)
    const nlohmann::json& heads = b.summary["algorithm_stats"]["aux_parameters"];
    double all = 0;
    for (const auto& h : heads) all += h.get<double>();
    // memory_bytes counts a rank's heads with its blocks: take them back out of what it holds.
    received += heads[r].get<double>() * 4 + (all - heads[r].get<double>()) * 4;
  }
  if (c.eval == EvalTraffic::kSharedStagesOwnHeads)  // take the rank's own heads back out
    received += b.summary["algorithm_stats"]["aux_parameters"][r].get<double>() * 4;
  const int boundaries = static_cast<int>(b.summary["bytes_sent"].size()) - 1;
  received += c.codec_eval_bytes * (r >= 1 ? boundaries - 1 : boundaries);
  return received;
}

// Runs the cases at once, one bed each, and checks every rank's figures against its host's
// interface: what desync counts as sent (training and evaluation) against tx_bytes, what it
// counts as received (and what evaluation received) against rx_bytes.
void expect_bytes_agree_with_the_wire(const std::vector<WireCase>& cases) {
  testing::TempDir dir;
  std::vector<BedJob> jobs;
  for (const WireCase& c : cases)
    jobs.push_back({c.name, "--rate 200mbit --timeout 150",
                    "--set algorithm.name=" + c.algorithm + " " + c.train_args, "", 4, c.job});
  std::vector<BedRun> runs = netbeds(dir, jobs);
  for (size_t i = 0; i < cases.size(); ++i) {
    const WireCase& c = cases[i];
    const BedRun& b = runs[i];
    ASSERT_EQ(b.result.status, 0) << c.name << ":\n" << b.result.output;
    ASSERT_FALSE(b.bed.is_discarded()) << c.name << ":\n" << b.result.output;
    ASSERT_FALSE(b.summary.is_discarded()) << c.name << ":\n" << b.result.output;
    ASSERT_EQ(b.summary["workers"], 4) << c.name;
    for (int r = 0; r < 4; ++r) {
      // Rank r ran on host r.
      const double sent = desync_sent(b, r);
      const double received = b.summary["bytes_received"][r].get<double>() + eval_received(b, c, r);
      const double tx = b.bed["tx_bytes"][r].get<double>(), rx = b.bed["rx_bytes"][r].get<double>();
      std::printf(
          "[   wire   ] %-15s rank %d  sent/tx %10.0f / %10.0f = %.3f  received/rx %10.0f "
          "/ %10.0f = %.3f\n",
          c.name.c_str(), r, sent, tx, sent / tx, received, rx, received / rx);
      EXPECT_GT(received, 1e6) << c.name << " rank " << r << ": too little traffic to judge";
      if (r == c.quiet_rank) {
        // No training traffic but the Trainer's logged figures; on the wire, besides what its
        // evaluation relays (counted in `sent`), only the acknowledgements of what it receives.
        EXPECT_LT(b.summary["bytes_sent"][r].get<double>(), 1000.0) << c.name << " rank " << r;
        EXPECT_LT(tx - sent, 0.1 * rx) << c.name << " rank " << r << " should send next to nothing";
      } else {
        EXPECT_GT(sent, 1e6) << c.name << " rank " << r << ": too little traffic to judge";
        EXPECT_NEAR(sent / tx, 1.0, 0.10)
            << c.name << " rank " << r << ": desync counted " << sent << " B sent, the wire " << tx;
      }
      EXPECT_NEAR(received / rx, 1.0, 0.10) << c.name << " rank " << r << ": desync counted "
                                            << received << " B received, the wire " << rx;
    }
  }
}

// Pipelines: micro-batches of 64 (a 128 KB activation or gradient per boundary), eight per step,
// so that training traffic outweighs the gathering of the model for evaluation.
const std::string kPipelineArgs = "--set data.batch_size=64 --set algorithm.accumulation=8";

const std::vector<WireCase> kDataParallelCases = {
    {"ddp", "ddp", ""},
    {"zero1", "zero1", ""},
    {"dpu", "dpu", ""},
    {"acco", "acco", ""},
    {"cdp", "cdp", ""},
    {"cdp_zero", "cdp_zero", ""},
    {"sdp", "sdp", ""},
    // Forward gradient: one all-reduce of the model's and the heads' gradients a step.
    {"forward_gradient", "forward_gradient", "--set algorithm.forward_gradient.aux=linear"},
    // B-SDP: each block's gradient goes round its holders only (sends and receives).
    {"sdp_blocks", "sdp",
     "--set model.name=resnet18 --set model.width=16 --set data.synthetic_shape=[1,8,8] "
     "--set algorithm.sdp.assignment=balanced"}};
// DiLoCo and GASLoC average every two local steps.
const std::vector<WireCase> kDecentralizedCases = {
    {"diloco", "diloco", "--set algorithm.diloco.local_steps=2"},
    {"dpsgd", "dpsgd", ""},
    {"adpsgd", "adpsgd", ""},
    {"gasloc", "gasloc", "--set algorithm.gasloc.local_steps=2"}};
// Populations: WASH shuffles a large share (p = 0.5) so that its shuffles outweigh the
// evaluation's; PAPA averages every two steps, PAPA-2 every step; the independent ensemble sends
// only at evaluation (the ensemble's probabilities and the members' average).
const std::vector<WireCase> kPopulationCases = {
    {"wash", "wash", "--set algorithm.wash.p=0.5"},
    {"papa_gradual", "papa", "--set algorithm.papa.ema_every=2"},
    {"papa_pair", "papa", "--set algorithm.papa.variant=pair --set algorithm.papa.every_steps=1"},
    {"ensemble", "ensemble", ""}};
const std::vector<WireCase> kPipelineCases = {
    {"pipeline_gpipe", "pipeline", kPipelineArgs + " --set algorithm.pipeline.schedule=gpipe",
     EvalTraffic::kSharedStages},
    {"pipeline_1f1b", "pipeline", kPipelineArgs + " --set algorithm.pipeline.schedule=1f1b",
     EvalTraffic::kSharedStages},
    {"pipedream", "pipedream", kPipelineArgs, EvalTraffic::kSharedStages},
    {"dsp", "dsp", kPipelineArgs, EvalTraffic::kSharedStages},
    {"petra", "petra", kPipelineArgs, EvalTraffic::kSharedStages},
    // N = 4 streams of micro-batches of 64 a step; finish() shares the stages on the training
    // channel, so the final evaluation only all-reduces its totals.
    {"cdp_mp", "cdp_mp", "--set data.batch_size=64", EvalTraffic::kAllReduce},
    // DGL: activations and labels forward only; the last block's rank sends nothing while
    // training. Heads of width 512 (about 3 MB each), gathered at evaluation with the stages,
    // so that rank 0, which receives nothing while training, has enough to judge.
    {"dgl", "dgl", kPipelineArgs + " --set algorithm.dgl.aux_hidden=512",
     EvalTraffic::kSharedStagesAndHeads, 3},
    // Contrastive local learning: both views' activations (2B rows) and the labels forward only;
    // the last rank (the last block and the model's head) sends nothing while training. Four
    // hidden layers: an encoder of four stages, one block per rank. The projection heads stay
    // with their owners at evaluation; rank 0 broadcasts the probe's few figures. Rank 0
    // receives only the stages gathered for evaluation: layers of 1024 (4 MB each) and four
    // micro-batches a step, so that what it receives outweighs the acknowledgements of what it
    // sends.
    {"contrastive_local", "contrastive_local",
     "--set data.batch_size=64 --set algorithm.accumulation=4 "
     "--set model.hidden=[1024,1024,1024,1024]",
     EvalTraffic::kSharedStagesOwnHeads, 3}};

// Federated rounds: 8 training clients (2 held out), all sampled every round, one local step
// each. fedavg all-reduces [A, W] once a round; with transport = server every client's update
// goes to rank 0, which broadcasts theta; fedlp moves only the head, widened to 512 classes so
// that it weighs megabytes; fedncm's round 0 all-reduces class sums, its rounds 1-3 are FT.
const std::string kFederatedArgs =
    "--set algorithm.clients=8 --set algorithm.heldout_clients=2 "
    "--set algorithm.clients_per_round=8 --set algorithm.local_steps=1 "
    "--set algorithm.partition=iid";
const std::vector<WireCase> kFederatedCases = {
    {"fedavg", "fedavg", kFederatedArgs},
    {"fedavg_server", "fedavg", kFederatedArgs + " --set algorithm.transport=server"},
    {"fedlp", "fedlp", kFederatedArgs + " --set data.synthetic_classes=512"},
    {"fedncm", "fedncm", kFederatedArgs}};

// The embedding trainers: a words corpus of 3,000 types (written once), 64-wide tables, so that
// an average of the tables (local_avg), a step's touched rows (sparse_rows) and the merged
// co-occurrences with the broadcast vectors (ppmi_svd) each weigh megabytes.
std::string words_job() {
  static const testing::TempDir dir;
  static const bool written = [] {
    std::string text;
    uint64_t x = 11;
    for (int s = 0; s < 6000; ++s) {
      for (int i = 0; i < 12; ++i) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        int w = static_cast<int>((x >> 33) % 3000);
        text += i ? " w" : "w";
        do {
          text += static_cast<char>('a' + w % 26);
          w /= 26;
        } while (w > 0);
      }
      text += "\n";
    }
    testing::write_file(dir.file("corpus.txt"), text);
    return true;
  }();
  (void)written;
  return "[run]\nsteps = 4\nthreads = 1\n[data]\ndataset = \"words\"\npath = \"" +
         dir.file("corpus.txt") + "\"\ncache_dir = \"" + dir.file("cache") +
         "\"\ntext_test_fraction = 0.05\n[model]\nname = \"sgns\"\nd_model = 64\n"
         "[optimizer]\nname = \"sgd\"\nlr = 0.025\n[algorithm.sgns]\nmin_count = 1\n"
         "sync_words = 5000\nbatch_pairs = 2048\n[algorithm.ppmi_svd]\nmin_count = 1\n"
         "[checkpoint]\nenabled = false\n";
}

// Their job (words_job()) is filled in when the test runs, which writes the corpus.
const std::vector<WireCase> kEmbeddingCases = {
    {"sgns", "sgns", ""},
    {"sgns_sparse", "sgns", "--set algorithm.sgns.sgns_mode=sparse_rows"},
    {"ppmi_svd", "ppmi_svd", "--set run.steps=1"}};

TEST(Netbed, EmbeddingBytesAgreeWithTheWire) {
  if (std::string why = unavailable(); !why.empty()) GTEST_SKIP() << why;
  std::vector<WireCase> cases = kEmbeddingCases;
  for (WireCase& c : cases) c.job = words_job();
  expect_bytes_agree_with_the_wire(cases);
}

TEST(Netbed, DataParallelBytesAgreeWithTheWire) {
  if (std::string why = unavailable(); !why.empty()) GTEST_SKIP() << why;
  expect_bytes_agree_with_the_wire(kDataParallelCases);
}

TEST(Netbed, DecentralizedBytesAgreeWithTheWire) {
  if (std::string why = unavailable(); !why.empty()) GTEST_SKIP() << why;
  expect_bytes_agree_with_the_wire(kDecentralizedCases);
}

TEST(Netbed, PopulationBytesAgreeWithTheWire) {
  if (std::string why = unavailable(); !why.empty()) GTEST_SKIP() << why;
  expect_bytes_agree_with_the_wire(kPopulationCases);
}

TEST(Netbed, FederatedBytesAgreeWithTheWire) {
  if (std::string why = unavailable(); !why.empty()) GTEST_SKIP() << why;
  expect_bytes_agree_with_the_wire(kFederatedCases);
}

TEST(Netbed, PipelineBytesAgreeWithTheWire) {
  if (std::string why = unavailable(); !why.empty()) GTEST_SKIP() << why;
  expect_bytes_agree_with_the_wire(kPipelineCases);
}

// A compressed pipeline: MAPL (d/r = 2) on a GPT of byte tokens (d_model 128, 4 layers: 6 stages
// on 4 ranks, 3 boundaries), micro-batches of 16 x 64 tokens, 8 per step, 12 steps (compressed
// messages are small: enough of them that the fixed traffic weighs little). Besides the
// compressed activations and gradients, every codec's per-step messages (projector, its
// gradient, anchor rows) and its evaluation state must be counted.
TEST(Netbed, CompressedPipelineBytesAgreeWithTheWire) {
  if (std::string why = unavailable(); !why.empty()) GTEST_SKIP() << why;
  testing::TempDir corpus;
  testing::write_file(corpus.file("corpus.txt"), testing::dictionary_corpus(2000));
  const std::string job = std::string(R"(
[run]
name = "wire"
steps = 12
log_every = 4
threads = 1
comm_timeout = 60
[data]
dataset = "text"
tokenizer = "bytes"
seq_len = 64
batch_size = 16
eval_batch_size = 64
path = ")") + corpus.file("corpus.txt") +
                          R"("
cache_dir = ")" + corpus.file("cache") +
                          R"("
[model]
name = "gpt"
n_layer = 4
n_head = 4
d_model = 128
[eval]
limit = 64
[checkpoint]
enabled = false
)";
  testing::write_file(corpus.file("job.toml"), job);  // the token cache, built once beforehand
  auto tokenize = testing::run_command(kDesync + " tokenize " + corpus.file("job.toml"));
  ASSERT_EQ(tokenize.status, 0) << tokenize.output;
  WireCase c{"pipeline_mapl", "pipeline",
             "--set algorithm.accumulation=8 --set algorithm.compression=mapl "
             "--set algorithm.compression_ratio=2",
             EvalTraffic::kSharedStages};
  c.job = job;
  c.codec_eval_bytes = (128 * 64 + 257 * 64) * 4.0;  // A [d, r] and E [V, r], float32
  expect_bytes_agree_with_the_wire({c});
}

// `single` refuses more than one worker, and on one it has no peer: desync counts nothing, and
// nothing of the job reaches the host's link (rank 0's rendezvous store is at its own address,
// so on loopback). What the interface may carry is the kernel's own IPv6 neighbour discovery, a
// few hundred bytes.
TEST(Netbed, SingleWorkerSendsNothing) {
  if (std::string why = unavailable(); !why.empty()) GTEST_SKIP() << why;
  testing::TempDir dir;
  BedRun b = netbed(dir, {"single", "--rate 200mbit --timeout 150", "--set algorithm.name=single",
                          "", 1, kWireJob});
  ASSERT_EQ(b.result.status, 0) << b.result.output;
  ASSERT_FALSE(b.bed.is_discarded()) << b.result.output;
  ASSERT_FALSE(b.summary.is_discarded()) << b.result.output;
  ASSERT_EQ(b.summary["workers"], 1);
  const double tx = b.bed["tx_bytes"][0].get<double>(), rx = b.bed["rx_bytes"][0].get<double>();
  std::printf("[   wire   ] single rank 0  sent %.0f, received %.0f; tx %.0f, rx %.0f\n",
              desync_sent(b, 0), b.summary["bytes_received"][0].get<double>(), tx, rx);
  EXPECT_EQ(desync_sent(b, 0), 0);
  EXPECT_EQ(b.summary["bytes_received"][0].get<double>(), 0);
  EXPECT_LT(tx, 4096);
  EXPECT_LT(rx, 4096);
}

// The algorithms `desync list` shows.
std::set<std::string> registered_algorithms() {
  auto r = testing::run_command(kDesync + " list");
  EXPECT_EQ(r.status, 0) << r.output;
  std::set<std::string> names;
  std::istringstream lines(r.output);
  bool in_algorithms = false;
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty() && line[0] != ' ') {
      in_algorithms = line == "algorithms:";
      continue;
    }
    std::istringstream words(line);
    std::string name;
    if (in_algorithms && words >> name) names.insert(name);
  }
  return names;
}

// A newly registered algorithm gets a wire check, or this fails.
TEST(Netbed, EveryRegisteredAlgorithmHasAWireCheck) {
  std::set<std::string> checked = {"single"};  // SingleWorkerSendsNothing
  for (const auto* cases : {&kDataParallelCases, &kDecentralizedCases, &kPopulationCases,
                            &kPipelineCases, &kFederatedCases, &kEmbeddingCases})
    for (const WireCase& c : *cases) checked.insert(c.algorithm);
  std::set<std::string> registered = registered_algorithms();
  ASSERT_FALSE(registered.empty());
  for (const std::string& name : registered)
    EXPECT_TRUE(checked.count(name)) << name << " is registered but no Netbed test runs it";
}

}  // namespace
}  // namespace desync
