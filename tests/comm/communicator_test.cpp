#include "desync/comm/communicator.h"

#include <gtest/gtest.h>

#include <thread>

#include "desync/comm/comm_thread.h"
#include "desync/comm/fake_communicator.h"
#include "desync/comm/gloo_communicator.h"
#include "desync/comm/launcher.h"
#include "desync/core/error.h"

namespace desync {
namespace {

// Exercises every collective on `comm` (rank r of n) and checks the results.
void check_collectives(int64_t r, Communicator& c) {
  const int64_t n = c.world_size();
  torch::Tensor t = torch::full({5}, static_cast<float>(r + 1));
  c.all_reduce(t);
  EXPECT_TRUE(torch::equal(t, torch::full({5}, static_cast<float>(n * (n + 1) / 2))));

  torch::Tensor b = torch::full({3}, static_cast<float>(r));
  c.broadcast(b, n - 1);
  EXPECT_TRUE(torch::equal(b, torch::full({3}, static_cast<float>(n - 1))));

  std::vector<torch::Tensor> parts;
  for (int64_t i = 0; i < n; ++i) parts.push_back(torch::empty({2}));
  c.all_gather(parts, torch::full({2}, static_cast<float>(10 * r)));
  for (int64_t i = 0; i < n; ++i)
    EXPECT_TRUE(torch::equal(parts[i], torch::full({2}, static_cast<float>(10 * i))));

  // all_to_all: rank r sends value 100*r + d to rank d.
  torch::Tensor in = torch::empty({n * 2});
  for (int64_t d = 0; d < n; ++d) in.narrow(0, 2 * d, 2).fill_(static_cast<float>(100 * r + d));
  torch::Tensor out = torch::empty({n * 2});
  c.all_to_all_async(out, in)->wait();
  for (int64_t s = 0; s < n; ++s)
    EXPECT_TRUE(
        torch::equal(out.narrow(0, 2 * s, 2), torch::full({2}, static_cast<float>(100 * s + r))));

  // reduce_scatter: chunk d of rank r holds r + d; rank d receives sum_r (r + d).
  torch::Tensor rs_in = torch::empty({n * 3});
  for (int64_t d = 0; d < n; ++d) rs_in.narrow(0, 3 * d, 3).fill_(static_cast<float>(r + d));
  torch::Tensor rs_out = torch::empty({3});
  c.reduce_scatter(rs_out, rs_in);
  EXPECT_TRUE(torch::equal(rs_out, torch::full({3}, static_cast<float>(n * (n - 1) / 2 + n * r))));

  // Ring send/recv with two tags in flight.
  if (n > 1) {
    torch::Tensor got_a = torch::empty({4}), got_b = torch::empty({4});
    auto ra = c.recv_async(got_a, (r + n - 1) % n, 7);
    auto rb = c.recv_async(got_b, (r + n - 1) % n, 8);
    c.send(torch::full({4}, static_cast<float>(r + 0.5)), (r + 1) % n, 8);
    c.send(torch::full({4}, static_cast<float>(r)), (r + 1) % n, 7);
    ra->wait();
    rb->wait();
    EXPECT_TRUE(torch::equal(got_a, torch::full({4}, static_cast<float>((r + n - 1) % n))));
    EXPECT_TRUE(torch::equal(got_b, torch::full({4}, static_cast<float>((r + n - 1) % n + 0.5))));
  }
  c.barrier();
}

TEST(FakeCommunicator, CollectivesAreCorrect) {
  for (int64_t n : {1, 2, 3, 4}) {
    auto world = FakeWorld::create(n);
    world->run([](int64_t r, Communicator& c) { check_collectives(r, c); });
  }
}

TEST(FakeCommunicator, SplitChannelsAreIndependent) {
  // Rank 0 issues on the split first, rank 1 on the main channel first: no mix-up, no deadlock.
  auto world = FakeWorld::create(2);
  world->run([](int64_t r, Communicator& c) {
    auto side = c.split("side");
    torch::Tensor a = torch::full({2}, 1.0f), b = torch::full({2}, 10.0f);
    std::shared_ptr<Work> wa, wb;
    if (r == 0) {
      wb = side->all_reduce_async(b);
      wa = c.all_reduce_async(a);
    } else {
      wa = c.all_reduce_async(a);
      wb = side->all_reduce_async(b);
    }
    wa->wait();
    wb->wait();
    EXPECT_TRUE(torch::equal(a, torch::full({2}, 2.0f)));
    EXPECT_TRUE(torch::equal(b, torch::full({2}, 20.0f)));
    EXPECT_EQ(c.total_stats().calls, c.stats().calls + side->stats().calls);
  });
}

TEST(FakeCommunicator, TimeoutNamesMissingRanks) {
  auto world = FakeWorld::create(3, std::chrono::milliseconds(200));
  try {
    world->run([](int64_t r, Communicator& c) {
      if (r == 2) return;  // never arrives
      c.all_reduce(torch::ones({1}));
    });
    FAIL() << "no timeout";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("did not arrive: 2"), std::string::npos) << e.what();
  }
}

// The world owns its ranks' communicators and their splits, which must not own it back: that
// cycle leaked every world and all it held (LeakSanitizer, `make test-asan`). A communicator the
// world hands out keeps it alive.
TEST(FakeCommunicator, WorldIsFreedWithItsLastHandle) {
  std::weak_ptr<FakeWorld> weak;
  {
    auto world = FakeWorld::create(2);
    weak = world;
    world->run([](int64_t, Communicator& c) { c.split("side")->barrier(); });
  }
  EXPECT_TRUE(weak.expired());

  std::shared_ptr<Communicator> comm = FakeWorld::create(1)->comm(0);
  torch::Tensor t = torch::ones({2});
  comm->all_reduce(t);
  EXPECT_TRUE(torch::equal(t, torch::ones({2})));
}

TEST(Communicator, BytesFollowRingFormulas) {
  for (int64_t n : {1, 2, 3, 4}) {
    auto world = FakeWorld::create(n);
    world->run([n](int64_t r, Communicator& c) {
      const int64_t psi = 1200;  // divisible by 1..4
      torch::Tensor t = torch::zeros({psi});
      c.all_reduce(t);
      EXPECT_EQ(c.stats().bytes_sent, 2 * (n - 1) * psi * 4 / n);
      EXPECT_EQ(c.stats().bytes_received, 2 * (n - 1) * psi * 4 / n);

      CommStats before = c.stats();
      torch::Tensor out = torch::zeros({psi / n});
      c.reduce_scatter(out, t);
      EXPECT_EQ(c.stats().bytes_sent - before.bytes_sent, (n - 1) * psi * 4 / n);

      before = c.stats();
      std::vector<torch::Tensor> parts;
      for (int64_t i = 0; i < n; ++i) parts.push_back(torch::zeros({psi / n}));
      c.all_gather(parts, out);
      EXPECT_EQ(c.stats().bytes_sent - before.bytes_sent, (n - 1) * psi * 4 / n);

      // bf16 all-reduce: reduce-scatter + all-gather of 2-byte elements = the ring figure at b=2.
      before = c.stats();
      c.all_reduce_async(t, torch::kBFloat16)->wait();
      EXPECT_EQ(c.stats().bytes_sent - before.bytes_sent, 2 * (n - 1) * psi * 2 / n);
    });
  }
}

TEST(Communicator, BroadcastBytesFormBinomialTree) {
  // Every non-root receives once, so the ranks' sends add up to (N-1) * size.
  for (int64_t n : {1, 2, 3, 5, 8})
    for (int64_t root : {int64_t{0}, n - 1}) {
      int64_t total = 0;
      for (int64_t r = 0; r < n; ++r) total += broadcast_bytes_sent(r, root, n, 100);
      EXPECT_EQ(total, (n - 1) * 100) << n << " " << root;
    }
  EXPECT_EQ(broadcast_bytes_sent(0, 0, 8, 1), 3);  // root of 8: children 1, 2, 4
}

TEST(Communicator, LowPrecisionAllReduceSumsInFloat32) {
  auto world = FakeWorld::create(4);
  world->run([](int64_t r, Communicator& c) {
    torch::Tensor t = torch::linspace(-3, 3, 1001) * (r + 1);
    c.all_reduce_async(t, torch::kBFloat16)->wait();
    torch::Tensor expect = torch::linspace(-3, 3, 1001) * 10;
    // Inputs and result are rounded to bf16 (8-bit mantissa): relative error <= 2 * 2^-8.
    EXPECT_TRUE(((t - expect).abs() <= expect.abs() * (2.0 / 256) + 1e-3).all().item<bool>());
  });
}

TEST(Communicator, WaitTimeIsCounted) {
  auto world = FakeWorld::create(2);
  world->run([](int64_t r, Communicator& c) {
    if (r == 1) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    c.all_reduce(torch::ones({1}));
    if (r == 0) {
      EXPECT_GT(c.stats().wait_seconds, 0.15);
    }
  });
}

TEST(GlooCommunicator, CollectivesAreCorrectOverLoopback) {
  for (int64_t n : {2, 3}) {
    const LoopbackListener store = listen_on_free_loopback_port();
    std::vector<std::thread> threads;
    std::vector<std::string> errors(n);
    for (int64_t r = 0; r < n; ++r)
      threads.emplace_back([&, r] {
        try {
          WorldInfo info;
          info.rank = r;
          info.world_size = n;
          info.master_port = store.port;
          if (r == 0) info.store_fd = store.fd;
          info.job_token = "test";
          info.timeout_seconds = 30;
          auto c = connect_gloo(info);
          check_collectives(r, *c);
          auto side = c->split("side");
          torch::Tensor x = torch::ones({3});
          side->all_reduce(x);
          EXPECT_TRUE(torch::equal(x, torch::full({3}, static_cast<float>(n))));
        } catch (const std::exception& e) {
          errors[r] = e.what();
        }
      });
    for (auto& t : threads) t.join();
    for (int64_t r = 0; r < n; ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
  }
}

// The launcher opens the store's socket itself and hands it to rank 0, so that no other process
// can take the port in between. The socket stays open here: a store that bound the port anew
// instead of serving on it would find the port taken.
TEST(GlooCommunicator, RankZeroServesOnTheSocketItIsHanded) {
  LoopbackListener listener = listen_on_free_loopback_port();
  std::vector<std::string> errors(2);
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      try {
        WorldInfo info;
        info.rank = r;
        info.world_size = 2;
        info.master_port = listener.port;
        if (r == 0) info.store_fd = listener.fd;
        info.job_token = "handed";
        info.timeout_seconds = 10;
        auto c = connect_gloo(info);
        torch::Tensor x = torch::ones({2});
        c->all_reduce(x);
        EXPECT_TRUE(torch::equal(x, torch::full({2}, 2.0f)));
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (int64_t r = 0; r < 2; ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

TEST(GlooCommunicator, WrongJobTokenIsRejected) {
  const LoopbackListener store = listen_on_free_loopback_port();
  std::string error;
  std::thread server([&] {
    WorldInfo info;
    info.world_size = 2;
    info.master_port = store.port;
    info.store_fd = store.fd;
    info.job_token = "job-a";
    info.timeout_seconds = 3;
    try {
      connect_gloo(info);
    } catch (const std::exception&) {
      // times out waiting for its peer: expected
    }
  });
  WorldInfo info;
  info.rank = 1;
  info.world_size = 2;
  info.master_port = store.port;
  info.job_token = "job-b";
  info.timeout_seconds = 3;
  try {
    connect_gloo(info);
  } catch (const CommError& e) {
    error = e.what();
  }
  server.join();
  EXPECT_NE(error.find("job token mismatch"), std::string::npos) << error;
}

}  // namespace
}  // namespace desync

namespace desync {
namespace {

TEST(Communicator, EmulatedLatencyDelaysCompletion) {
  auto world = FakeWorld::create(2);
  world->run([](int64_t r, Communicator& c) {
    c.set_emulated_latency(0.1);
    auto side = c.split("side");
    c.all_reduce(torch::ones({1}));
    side->all_reduce(torch::ones({1}));
    EXPECT_GE(c.stats().wait_seconds, 0.1);
    EXPECT_GE(side->stats().wait_seconds, 0.1);  // splits inherit it
  });
}

}  // namespace
}  // namespace desync

namespace desync {
namespace {

// Waits on the training thread's channels block training; a comm thread's waits overlap it,
// except the training thread's wait to join it; a server's wait for a request is idle.
TEST(Communicator, TimeDividesIntoBlockedOverlappedAndIdle) {
  auto world = FakeWorld::create(2);
  world->run([](int64_t r, Communicator& c) {
    c.set_emulated_latency(0.05);
    CommThread thread(c, "comm-thread");
    auto server = c.split("server", Caller::kBackgroundThread);
    thread.start([&] { thread.channel().all_reduce(torch::ones({1})); });
    thread.join();
    c.all_reduce(torch::ones({1}));
    server->all_reduce(torch::ones({1}));
    server->record_idle(0.75 * server->stats().wait_seconds);  // most of it: a request's wait

    const CommStats main = c.stats(), bg = thread.channel().stats(), srv = server->stats();
    EXPECT_GE(main.wait_seconds, 0.05);
    EXPECT_GE(bg.wait_seconds, 0.05);
    EXPECT_GT(bg.join_wait_seconds, 0.0);
    const CommTime t = c.time();
    EXPECT_DOUBLE_EQ(t.blocked, main.wait_seconds + bg.join_wait_seconds);
    EXPECT_DOUBLE_EQ(t.overlapped, bg.wait_seconds + 0.25 * srv.wait_seconds);
    EXPECT_DOUBLE_EQ(t.idle, 0.75 * srv.wait_seconds);
    EXPECT_EQ(thread.channel().caller(), Caller::kBackgroundThread);
  });
}

}  // namespace
}  // namespace desync
