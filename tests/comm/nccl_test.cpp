#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <string>
#include <thread>
#include <vector>

#include "desync/comm/launcher.h"
#include "desync/comm/nccl_communicator.h"
#include "desync/core/error.h"

// The nccl backend. Without -DDESYNC_CUDA=ON only its refusal is tested; with it, the tests that
// need CUDA devices skip, saying so, where torch::cuda::is_available() is false.

namespace desync {
namespace {

// The message of the UsageError that connect_nccl(info) throws, or "" if none.
std::string usage_error(const WorldInfo& info) {
  try {
    connect_nccl(info);
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

#ifndef DESYNC_CUDA

TEST(NcclCommunicator, WithoutCudaBuildIsAUsageErrorNamingTheFlag) {
  WorldInfo info;
  std::string e = usage_error(info);
  EXPECT_NE(e.find("run.backend = \"nccl\""), std::string::npos) << e;
  EXPECT_NE(e.find("-DDESYNC_CUDA=ON"), std::string::npos) << e;
}

#else  // DESYNC_CUDA

TEST(NcclCommunicator, NoDeviceIsAUsageErrorNamingIt) {
  if (torch::cuda::is_available())
    GTEST_SKIP() << "a CUDA device is visible: the no-device refusal cannot be seen here";
  WorldInfo info;
  std::string e = usage_error(info);
  EXPECT_NE(e.find("no CUDA device"), std::string::npos) << e;
}

// A world of one rank on device 0: staging of CPU tensors, every collective, a send to itself
// and its receive launched as one group, and a split.
TEST(NcclCommunicator, OneRankStagesCpuTensors) {
  if (!torch::cuda::is_available())
    GTEST_SKIP() << "no CUDA device: torch::cuda::is_available() is false";
  WorldInfo info;
  info.master_port = free_loopback_port();
  info.job_token = "nccl-test";
  info.timeout_seconds = 30;
  auto c = connect_nccl(info);

  torch::Tensor t = torch::full({5}, 3.0f);
  c->all_reduce(t);
  EXPECT_TRUE(torch::equal(t, torch::full({5}, 3.0f)));
  EXPECT_TRUE(t.device().is_cpu());

  torch::Tensor b = torch::arange(4, torch::kFloat32);
  c->broadcast(b, 0);
  EXPECT_TRUE(torch::equal(b, torch::arange(4, torch::kFloat32)));

  std::vector<torch::Tensor> parts{torch::zeros({2})};
  c->all_gather(parts, torch::full({2}, 7.0f));
  EXPECT_TRUE(torch::equal(parts[0], torch::full({2}, 7.0f)));

  torch::Tensor out = torch::zeros({4});
  c->all_to_all_async(out, torch::arange(4, torch::kFloat32))->wait();
  EXPECT_TRUE(torch::equal(out, torch::arange(4, torch::kFloat32)));

  torch::Tensor rs = torch::zeros({3});
  c->reduce_scatter(rs, torch::full({3}, 2.0));
  EXPECT_TRUE(torch::equal(rs, torch::full({3}, 2.0f)));

  torch::Tensor got = torch::zeros({4});
  auto r = c->recv_async(got, 0, 1);
  auto s = c->send_async(torch::full({4}, 5.0f), 0, 1);
  r->wait();  // launches both, as one group
  s->wait();
  EXPECT_TRUE(torch::equal(got, torch::full({4}, 5.0f)));

  torch::Tensor on_device = torch::ones({3}, torch::Device(torch::kCUDA, 0));
  c->all_reduce(on_device);  // used in place
  EXPECT_TRUE(torch::equal(on_device.cpu(), torch::ones({3})));

  auto side = c->split("side");
  torch::Tensor x = torch::ones({3});
  side->all_reduce(x);
  EXPECT_TRUE(torch::equal(x, torch::ones({3})));
  c->barrier();
  EXPECT_EQ(c->stats().bytes_sent, 0);  // one rank moves nothing
}

// Two ranks as threads, one device each (NCCL allows one rank per device in a communicator).
TEST(NcclCommunicator, TwoRanksExchangeOverTheDevices) {
  if (!torch::cuda::is_available())
    GTEST_SKIP() << "no CUDA device: torch::cuda::is_available() is false";
  if (torch::cuda::device_count() < 2)
    GTEST_SKIP() << "needs 2 CUDA devices, " << torch::cuda::device_count() << " visible";
  const int64_t n = 2;
  setenv("TORCH_NCCL_BLOCKING_WAIT", "1", /*overwrite=*/0);  // before the threads: not racing
  int64_t port = free_loopback_port();
  std::vector<std::string> errors(n);
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      try {
        WorldInfo info;
        info.rank = r;
        info.world_size = n;
        info.local_rank = r;
        info.local_world_size = n;
        info.master_port = port;
        info.job_token = "nccl-test";
        info.timeout_seconds = 30;
        auto c = connect_nccl(info);
        torch::Tensor t = torch::full({5}, static_cast<float>(r + 1));
        c->all_reduce(t);
        EXPECT_TRUE(torch::equal(t, torch::full({5}, 3.0f)));
        torch::Tensor rs_in =
            torch::cat({torch::full({2}, 1.0f), torch::full({2}, 10.0f)}) * (r + 1);
        torch::Tensor rs_out = torch::zeros({2});
        c->reduce_scatter(rs_out, rs_in);
        EXPECT_TRUE(torch::equal(rs_out, torch::full({2}, r == 0 ? 3.0f : 30.0f)));
        // Both send first, then receive: queued and launched as one group, no deadlock.
        torch::Tensor got = torch::zeros({1 << 20});
        auto s = c->send_async(torch::full({1 << 20}, static_cast<float>(r)), 1 - r, 0);
        auto g = c->recv_async(got, 1 - r, 0);
        s->wait();
        g->wait();
        EXPECT_TRUE(torch::equal(got, torch::full({1 << 20}, static_cast<float>(1 - r))));
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (int64_t r = 0; r < n; ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

#endif  // DESYNC_CUDA

}  // namespace
}  // namespace desync
