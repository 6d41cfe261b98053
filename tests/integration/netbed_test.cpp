// The throttled multi-host bed (scripts/netbed): four network namespaces on a bridge, each
// host's link limited by tc, one desync node per host over real TCP. It checks desync's byte
// accounting against the wire (the interfaces' tx_bytes) and against the rate, and that the bed
// cleans up after a failed job. Needs root and network namespaces; skips, saying why, without.
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

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

struct BedRun {
  testing::CommandResult result;
  nlohmann::json bed, summary;
};

BedRun netbed(const testing::TempDir& dir, const std::string& name, const std::string& bed_args,
              const std::string& train_args, const std::string& env = "") {
  testing::write_file(dir.file("job.toml"), kJob);
  BedRun b;
  b.result = testing::run_command(env + " " + kSource + "/scripts/netbed -k 4 " + bed_args +
                                  " --desync " + kDesync + " -o " + dir.file(name) + " -- " +
                                  dir.file("job.toml") + " --quiet " + train_args);
  b.bed =
      nlohmann::json::parse(testing::read_file(dir.file(name + "/netbed.json")), nullptr, false);
  b.summary =
      nlohmann::json::parse(testing::read_file(dir.file(name + "/summary.json")), nullptr, false);
  return b;
}

TEST(Netbed, TwentyMbitBytesAgreeWithTheWireAndTheRate) {
  if (std::string why = unavailable(); !why.empty()) GTEST_SKIP() << why;
  const double kRate = 20e6;  // bit/s
  for (std::string algorithm : {"ddp", "zero1"}) {
    testing::TempDir dir;
    BedRun b = netbed(dir, algorithm, "--rate 20mbit", "--set algorithm.name=" + algorithm);
    ASSERT_EQ(b.result.status, 0) << b.result.output;
    ASSERT_FALSE(b.bed.is_discarded()) << b.result.output;
    ASSERT_FALSE(b.summary.is_discarded()) << b.result.output;
    ASSERT_EQ(b.summary["workers"], 4);
    for (int r = 0; r < 4; ++r) {
      // Rank r ran on host r; its interface counted every frame it sent, headers included.
      // desync counts training and evaluation traffic apart; the wire carries both.
      double sent =
          b.summary["bytes_sent"][r].get<double>() + b.summary["eval_bytes_sent"][r].get<double>();
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
  BedRun b = netbed(dir, "fail", "--rates none,none,none,50mbit", "--set algorithm.name=ddp",
                    "DESYNC_FAULT=rank=2,step=2,action=exit");
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

}  // namespace
}  // namespace desync
