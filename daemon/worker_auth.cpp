// Worker tokens and the CURVE ZAP handler (see worker_auth.hpp).
#include "daemon/worker_auth.hpp"

#include <algorithm>
#include <chrono>

#include "core/curve.hpp"
#include "core/keys.hpp"
#include "core/log.hpp"

namespace descprod {

namespace {
std::vector<std::string> split_pools(const std::string& s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= s.size()) {
    auto end = s.find(',', start);
    if (end == std::string::npos) end = s.size();
    auto p = s.substr(start, end - start);
    if (!p.empty()) out.push_back(p);
    start = end + 1;
  }
  return out;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}
}  // namespace

net::awaitable<worker_grant> check_worker_token(redis_client& redis, const std::string& prefix,
                                                const std::string& token_sha256) {
  worker_grant g;
  const keys k(prefix);
  auto t = co_await redis.async_exec(
      redis_cmd("HMGET", k.token(token_sha256), "owner", "scope", "expires", "pools"));
  if (t.elements.size() != 4 || t.elements[0].is_nil()) {
    g.reason = "unknown or revoked worker token";
    co_return g;
  }
  g.owner = t.elements[0].str;
  if (t.elements[1].str != "worker") {
    g.reason = "the token's scope is '" + t.elements[1].str + "', not 'worker'";
    co_return g;
  }
  auto expires = t.elements[2].as_integer();
  if (expires > 0 && expires < now_s()) {
    g.reason = "the worker token has expired";
    co_return g;
  }
  g.pools = split_pools(t.elements[3].is_nil() ? std::string() : t.elements[3].str);
  std::vector<std::vector<std::string>> cmds;
  cmds.push_back(redis_cmd("HGET", k.user(g.owner), "status"));
  for (const auto& p : g.pools)
    if (p != "*") cmds.push_back(redis_cmd("SMEMBERS", k.pool(p)));
  auto replies = co_await redis.async_pipeline(std::move(cmds));
  if (replies.empty() || replies[0].str != "active") {
    g.reason = "the token's owner '" + g.owner + "' is not an active account";
    co_return g;
  }
  g.any_owner = std::find(g.pools.begin(), g.pools.end(), "*") != g.pools.end();
  g.owners.push_back(g.owner);
  for (std::size_t i = 1; i < replies.size(); ++i)
    for (const auto& m : replies[i].elements) g.owners.push_back(m.str);
  std::sort(g.owners.begin(), g.owners.end());
  g.owners.erase(std::unique(g.owners.begin(), g.owners.end()), g.owners.end());
  g.ok = true;
  co_return g;
}

zap_handler::zap_handler(zmq::context_t& ctx, std::filesystem::path authorized_dir)
    : sock_(ctx, zmq::socket_type::rep), dir_(std::move(authorized_dir)) {
  sock_.bind("inproc://zeromq.zap.01");
  reload_if_changed();
  if (keys_.empty()) log::warn("curve: no worker keys in {}: no worker can connect", dir_.string());
  thread_ = std::thread([this] { run(); });
}

zap_handler::~zap_handler() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

std::size_t zap_handler::allowed_keys() {
  std::lock_guard lock(mu_);
  return keys_.size();
}

void zap_handler::reload_if_changed() {
  std::error_code ec;
  auto t = std::filesystem::last_write_time(dir_, ec);
  if (ec) {
    log::warn("curve: cannot read the authorized keys folder {}: {}", dir_.string(), ec.message());
    return;
  }
  if (t == dir_time_ && !keys_.empty()) return;
  std::set<std::string> keys;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    if (e.path().extension() != ".pub") continue;
    try {
      keys.insert(curve_decode(read_curve_key_file(e.path().string())));
    } catch (const std::exception& ex) {
      log::warn("curve: key file skipped: {}", ex.what());
    }
  }
  std::lock_guard lock(mu_);
  if (keys != keys_) log::info("curve: worker keys loaded count={} dir={}", keys.size(), dir_.string());
  keys_ = std::move(keys);
  dir_time_ = t;
}

bool zap_handler::allowed(const std::string& key32) {
  auto now = std::chrono::steady_clock::now();
  if (now - checked_ > std::chrono::seconds(1)) {
    checked_ = now;
    reload_if_changed();
  }
  std::lock_guard lock(mu_);
  return keys_.count(key32) != 0;
}

void zap_handler::run() {
  // RFC 27: [version, request id, domain, address, identity, mechanism, credentials...] in;
  // [version, request id, status code, status text, user id, metadata] out.
  zmq::pollitem_t item{sock_.handle(), 0, ZMQ_POLLIN, 0};
  while (!stop_) {
    try {
      if (zmq::poll(&item, 1, std::chrono::milliseconds(200)) == 0) continue;
      std::vector<zmq::message_t> req;
      do {
        zmq::message_t m;
        if (!sock_.recv(m, zmq::recv_flags::none)) break;
        req.push_back(std::move(m));
      } while (req.back().more());
      std::string version = req.size() > 0 ? req[0].to_string() : "";
      std::string request_id = req.size() > 1 ? req[1].to_string() : "";
      std::string domain = req.size() > 2 ? req[2].to_string() : "";
      std::string address = req.size() > 3 ? req[3].to_string() : "";
      std::string mechanism = req.size() > 5 ? req[5].to_string() : "";
      std::string code = "400", text = "refused";
      if (version != "1.0") {
        text = "bad ZAP version";
      } else if (domain != worker_zap_domain) {
        code = "200", text = "OK";  // not the worker socket
      } else if (mechanism != "CURVE" || req.size() < 7 || req[6].size() != 32) {
        text = "CURVE required";
      } else if (allowed(req[6].to_string())) {
        code = "200", text = "OK";
      } else {
        text = "unknown worker key";
      }
      if (code != "200") {
        // ZeroMQ retries a refused handshake every reconnect interval: one line per key a minute.
        ++refused_;
        std::string key = (req.size() > 6 && req[6].size() == 32) ? curve_encode(req[6].to_string()) : "-";
        auto now = std::chrono::steady_clock::now();
        auto& last = last_logged_[key];
        if (last_logged_.size() > 10000) last_logged_.clear();
        if (last == std::chrono::steady_clock::time_point{} || now - last > std::chrono::minutes(1)) {
          last = now;
          log::warn(
              "curve: worker connection refused address={} mechanism={} key={} reason={} refused_total={}",
              address, mechanism, key, text, refused_.load());
        }
      }
      std::vector<std::string> rep{"1.0", request_id, code, text, code == "200" ? "worker" : "", ""};
      for (std::size_t i = 0; i < rep.size(); ++i)
        sock_.send(zmq::buffer(rep[i]),
                   i + 1 < rep.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) break;
      log::warn("curve: ZAP handler error={}", e.what());
    }
  }
}

}  // namespace descprod
