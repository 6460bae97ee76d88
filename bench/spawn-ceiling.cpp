// bench/spawn-ceiling: the machine's process-spawn ceiling. N runs of /bin/true (posix_spawn +
// waitpid), shared by one driver thread per core (or --threads T). Prints "jobs=N threads=T
// seconds=S rate=R" (R in processes per second).
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

int main(int argc, char** argv) {
  long long n = 10000;
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  std::string prog = "/bin/true";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::printf(
          "Usage: spawn-ceiling [-n N] [--threads T] [--program PATH]\n"
          "Runs PATH (default /bin/true) N times (default 10000) with posix_spawn + waitpid,\n"
          "T driver threads (default: one per core), and prints the rate per second.\n");
      return 0;
    } else if ((a == "-n" || a == "--jobs") && i + 1 < argc) n = std::stoll(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::stoi(argv[++i]);
    else if (a == "--program" && i + 1 < argc) prog = argv[++i];
    else {
      std::fprintf(stderr, "spawn-ceiling: bad argument %s (see -h)\n", a.c_str());
      return 2;
    }
  }
  if (threads < 1 || n < 1) return 2;
  std::atomic<long long> next{0}, failed{0};
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&] {
      char* args[] = {prog.data(), nullptr};
      while (next.fetch_add(1) < n) {
        pid_t pid;
        if (posix_spawn(&pid, prog.c_str(), nullptr, nullptr, args, environ) != 0) {
          ++failed;
          continue;
        }
        int st = 0;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
        }
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) ++failed;
      }
    });
  for (auto& t : ts) t.join();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("jobs=%lld threads=%d seconds=%.3f rate=%.0f failed=%lld\n", n, threads, s, n / s,
              failed.load());
  return failed ? 1 : 0;
}
