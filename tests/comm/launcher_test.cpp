#include "desync/comm/launcher.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "test_util.h"

namespace desync {
namespace {

using std::chrono::milliseconds;
using testing::read_file;
using testing::TempDir;

// Runs launch() in a child process (it installs signal handlers and reaps every child) with
// `/bin/sh -c script` as each worker, its stderr in `log`. The launcher is stopped from
// `stop_at` to `continue_at` after its start; returns its exit status.
int launch_shell_workers(int64_t workers, const std::string& script, const std::string& log,
                         milliseconds stop_at, milliseconds continue_at) {
  const pid_t launcher = ::fork();
  if (launcher == 0) {
    std::FILE* f = std::fopen(log.c_str(), "w");
    if (!f) ::_exit(120);
    ::dup2(::fileno(f), STDERR_FILENO);
    LaunchSpec spec;
    spec.workers_per_node = workers;
    spec.worker_argv = {"/bin/sh", "-c", script};
    ::_exit(launch(spec));
  }
  std::this_thread::sleep_for(stop_at);
  ::kill(launcher, SIGSTOP);
  std::this_thread::sleep_for(continue_at - stop_at);
  ::kill(launcher, SIGCONT);
  int status = 0;
  ::waitpid(launcher, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Rank 0 exits with an error and rank 1 is killed while the launcher is stopped, so it finds
// both at once, rank 0 first (children are reaped oldest first). The killed worker is the cause;
// the one that exited is what a peer's broken collective looks like.
TEST(Launcher, AWorkerKilledBySignalIsNamedBeforeOneThatExitedWithAnError) {
  TempDir dir;
  const std::string script =
      "if [ \"$RANK\" = 1 ]; then sleep 0.8; kill -9 $$; else sleep 0.6; exit 3; fi";
  const int status = launch_shell_workers(2, script, dir.file("launcher.log"), milliseconds(200),
                                          milliseconds(2000));
  const std::string log = read_file(dir.file("launcher.log"));
  EXPECT_EQ(status, 1) << log;
  EXPECT_NE(log.find("worker rank 1 failed (killed by signal 9"), std::string::npos) << log;
}

// Without a signal among them, the first failure found is named, as before.
TEST(Launcher, AWorkerThatExitedWithAnErrorIsNamed) {
  TempDir dir;
  const std::string script = "if [ \"$RANK\" = 1 ]; then echo bad input; exit 4; fi; exec sleep 30";
  const int status = launch_shell_workers(2, script, dir.file("launcher.log"), milliseconds(0),
                                          milliseconds(0));
  const std::string log = read_file(dir.file("launcher.log"));
  EXPECT_EQ(status, 1) << log;
  EXPECT_NE(log.find("worker rank 1 failed (exit status 4); its last lines:\n  | bad input"),
            std::string::npos)
      << log;
}

}  // namespace
}  // namespace desync
