// Backups of a service's Redis (backup.hpp).
#include "core/backup.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <vector>

namespace descprod {

namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what); }

std::string errno_text() { return std::strerror(errno); }

// Reads one byte from `fd` (EOF and errors throw).
char read_byte(int fd) {
  char c = 0;
  for (;;) {
    ssize_t n = ::read(fd, &c, 1);
    if (n == 1) return c;
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) fail("Redis closed the connection before the snapshot came");
    fail("reading the snapshot's header: " + errno_text());
  }
}

struct fd_closer {
  int fd = -1;
  ~fd_closer() {
    if (fd >= 0) ::close(fd);
  }
};

void write_all(int fd, const char* p, std::size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail("writing " + path + ": " + errno_text());
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

struct sha256_ctx {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx{EVP_MD_CTX_new(), EVP_MD_CTX_free};
  sha256_ctx() {
    if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) fail("SHA-256 is not available");
  }
  void add(const char* p, std::size_t n) { EVP_DigestUpdate(ctx.get(), p, n); }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    EVP_DigestFinal_ex(ctx.get(), md, &len);
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (unsigned i = 0; i < len; ++i) {
      out.push_back(digits[md[i] >> 4]);
      out.push_back(digits[md[i] & 15]);
    }
    return out;
  }
};

bool starts_as_rdb(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[5] = {};
  return in.read(magic, 5) && std::memcmp(magic, "REDIS", 5) == 0;
}

}  // namespace

snapshot_info redis_snapshot(const redis_endpoint& ep, const std::string& path,
                             std::chrono::seconds idle_timeout) {
  redis_sync r(ep);
  // Redis 7 sends a replica that asks for the RDB only nothing after it; older ones ignore it.
  r.exec({"REPLCONF", "rdb-only", "1"});
  int sock = r.native_handle();
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(idle_timeout.count());
  ::setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  static const char sync_cmd[] = "*1\r\n$4\r\nSYNC\r\n";
  write_all(sock, sync_cmd, sizeof sync_cmd - 1, "the Redis connection");

  // While Redis saves, it sends newlines to keep the link alive; then "$<length>\r\n", or an
  // error ("-NOPERM ...") when the user may not SYNC.
  char c = read_byte(sock);
  while (c == '\n') c = read_byte(sock);
  std::string line(1, c);
  while (line.size() < 512 && line.back() != '\n') line.push_back(read_byte(sock));
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  if (line.empty() || line[0] != '$')
    fail("Redis refused the snapshot: " + line +
         (line.find("NOPERM") != std::string::npos ? " (the ACL user needs +sync and +replconf)" : ""));
  if (line.rfind("$EOF:", 0) == 0) fail("Redis answered a diskless snapshot, which was not asked for");
  std::uint64_t length = 0;
  for (std::size_t i = 1; i < line.size(); ++i) {
    if (line[i] < '0' || line[i] > '9' || length > (std::uint64_t(1) << 50))
      fail("bad snapshot header " + line);
    length = length * 10 + static_cast<std::uint64_t>(line[i] - '0');
  }

  std::string tmp = path + ".partial";
  fd_closer out{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)};
  if (out.fd < 0) fail("cannot write " + tmp + ": " + errno_text());
  sha256_ctx sha;
  std::vector<char> buf(1 << 20);
  std::uint64_t left = length;
  while (left > 0) {
    ssize_t n = ::read(sock, buf.data(), static_cast<std::size_t>(std::min<std::uint64_t>(left, buf.size())));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::unlink(tmp.c_str());
      fail(n == 0 ? "Redis closed the connection in the middle of the snapshot"
                  : "reading the snapshot: " + errno_text());
    }
    write_all(out.fd, buf.data(), static_cast<std::size_t>(n), tmp);
    sha.add(buf.data(), static_cast<std::size_t>(n));
    left -= static_cast<std::uint64_t>(n);
  }
  if (::fsync(out.fd) != 0) fail("fsync " + tmp + ": " + errno_text());
  ::close(out.fd);
  out.fd = -1;
  if (!starts_as_rdb(tmp)) {
    ::unlink(tmp.c_str());
    fail("what Redis sent is not an RDB file");
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename " + tmp + ": " + errno_text());
  snapshot_info info;
  info.bytes = length;
  info.sha256 = sha.hex();
  return info;
}

std::string file_sha256(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read " + path);
  sha256_ctx sha;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    sha.add(buf.data(), static_cast<std::size_t>(in.gcount()));
  }
  return sha.hex();
}

void restore_redis_dir(const std::string& rdb, const std::string& redis_dir) {
  if (!starts_as_rdb(rdb)) fail(rdb + " is not an RDB file (a backup's dump.rdb)");
  fs::path dir(redis_dir);
  for (const char* taken : {"appendonlydir", "dump.rdb", "appendonly.aof"})
    if (fs::exists(dir / taken))
      fail(redis_dir + " holds Redis data already (" + taken + "): restore into a fresh directory");
  fs::create_directories(dir);
  fs::path aof = dir / "appendonlydir";
  fs::path tmp = dir / "appendonlydir.partial";
  fs::remove_all(tmp);
  fs::create_directory(tmp);
  fs::copy_file(rdb, tmp / "appendonly.aof.1.base.rdb");
  {
    std::ofstream m(tmp / "appendonly.aof.manifest");
    m << "file appendonly.aof.1.base.rdb seq 1 type b\n";
    if (!m.flush()) fail("cannot write the manifest in " + tmp.string());
  }
  fs::permissions(tmp, fs::perms::owner_all, fs::perm_options::replace);
  fs::rename(tmp, aof);
}

}  // namespace descprod
