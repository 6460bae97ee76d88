// ZeroMQ on Asio (core/zmq_asio): a ROUTER and a DEALER on one io_context exchanging many messages
// both ways. Sends happen while the same socket's receiver waits, which is exactly when ZMQ_FD's
// edge can be consumed by the send; a lost edge shows up here as a stall, caught by the deadline.
#include <gtest/gtest.h>

#include <poll.h>

#include <boost/asio/as_tuple.hpp>

#include "core/zmq_asio.hpp"
#include "tests/support/support.hpp"

namespace descprod {
namespace {

using namespace std::chrono_literals;

struct exchange_state {
  int total = 0;
  int window = 0;
  int sent = 0;             // pings sent by the dealer
  int router_received = 0;  // pings the router saw, in order
  int dealer_received = 0;  // pongs the dealer saw, in order
  int pushes_received = 0;  // router-initiated messages the dealer saw, in order
  std::string error;
  bool done() const { return !error.empty() || (dealer_received == total && pushes_received == total); }
};

std::vector<std::string> frames(std::vector<zmq::message_t>& parts) {
  std::vector<std::string> out;
  for (auto& p : parts) out.push_back(p.to_string());
  return out;
}

// Dealer side, sending: pings with at most `window` unanswered, sleeping on `wake` when full.
net::awaitable<void> dealer_sender(zmq_socket& dealer, net::steady_timer& wake, exchange_state& s) {
  while (s.sent < s.total && s.error.empty()) {
    if (s.sent - s.dealer_received >= s.window) {
      wake.expires_at(std::chrono::steady_clock::time_point::max());
      co_await wake.async_wait(net::as_tuple(net::use_awaitable));
      continue;
    }
    std::vector<std::string> msg;
    msg.push_back("ping");
    msg.push_back(std::to_string(s.sent));
    if (!dealer.send(msg)) {
      s.error = "dealer send failed at " + std::to_string(s.sent);
      co_return;
    }
    ++s.sent;
    // Let the receivers run between bursts of sends.
    if (s.sent % 16 == 0) {
      auto ex = co_await net::this_coro::executor;
      co_await net::post(ex, net::use_awaitable);
    }
  }
}

// Dealer side, receiving: pongs (answers) and pushes (router-initiated), each in order.
net::awaitable<void> dealer_receiver(zmq_socket& dealer, net::steady_timer& wake, exchange_state& s) {
  while (!s.done()) {
    auto parts = co_await dealer.async_recv();
    auto f = frames(parts);
    if (f.size() != 2) {
      s.error = "dealer got " + std::to_string(f.size()) + " frames";
      co_return;
    }
    if (f[0] == "pong") {
      if (f[1] != std::to_string(s.dealer_received)) {
        s.error = "pong " + f[1] + " arrived when " + std::to_string(s.dealer_received) + " was due";
        co_return;
      }
      ++s.dealer_received;
      wake.cancel();
    } else if (f[0] == "push") {
      if (f[1] != std::to_string(s.pushes_received)) {
        s.error = "push " + f[1] + " arrived when " + std::to_string(s.pushes_received) + " was due";
        co_return;
      }
      ++s.pushes_received;
    } else {
      s.error = "dealer got command " + f[0];
      co_return;
    }
  }
}

// Router side: answers every ping at once from the receiving coroutine, and after every ping also
// pushes a message of its own.
net::awaitable<void> router_loop(zmq_socket& router, exchange_state& s) {
  while (s.router_received < s.total && s.error.empty()) {
    auto parts = co_await router.async_recv();
    auto f = frames(parts);
    if (f.size() != 3 || f[1] != "ping") {
      s.error = "router got a malformed message";
      co_return;
    }
    if (f[2] != std::to_string(s.router_received)) {
      s.error = "ping " + f[2] + " arrived when " + std::to_string(s.router_received) + " was due";
      co_return;
    }
    std::vector<std::string> pong;
    pong.push_back(f[0]);
    pong.push_back("pong");
    pong.push_back(f[2]);
    std::vector<std::string> push;
    push.push_back(f[0]);
    push.push_back("push");
    push.push_back(std::to_string(s.router_received));
    if (!router.send(pong) || !router.send(push)) {
      s.error = "router send failed at " + f[2];
      co_return;
    }
    ++s.router_received;
  }
}

TEST(ZmqSocket, RouterAndDealerExchangeTenThousandMessagesEachWayWithoutLossOrStall) {
  test::temp_dir dir;
  net::io_context ioc;
  zmq::context_t ctx;
  zmq_socket router(ioc.get_executor(), ctx, zmq::socket_type::router);
  router.raw().set(zmq::sockopt::router_mandatory, 1);
  router.raw().bind("ipc://" + dir.file("router.ipc"));
  zmq_socket dealer(ioc.get_executor(), ctx, zmq::socket_type::dealer);
  dealer.raw().set(zmq::sockopt::routing_id, "dealer-1");
  dealer.raw().connect("ipc://" + dir.file("router.ipc"));

  exchange_state s;
  s.total = 10000;
  s.window = 200;  // well under the high-water marks, so a refused send is a real failure
  net::steady_timer wake(ioc);
  auto note = [&](const char* who) {
    return [&s, who](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        if (s.error.empty()) s.error = std::string(who) + ": " + ex.what();
      }
    };
  };
  net::co_spawn(ioc, router_loop(router, s), note("router"));
  net::co_spawn(ioc, dealer_receiver(dealer, wake, s), note("dealer receiver"));
  net::co_spawn(ioc, dealer_sender(dealer, wake, s), note("dealer sender"));

  bool finished = test::run_until(
      ioc, [&] { return s.done(); }, 60s);
  EXPECT_TRUE(finished) << "stalled: sent " << s.sent << ", router got " << s.router_received
                        << ", dealer got " << s.dealer_received << " pongs and " << s.pushes_received
                        << " pushes";
  EXPECT_EQ(s.error, "");
  EXPECT_EQ(s.sent, s.total);
  EXPECT_EQ(s.router_received, s.total);
  EXPECT_EQ(s.dealer_received, s.total);
  EXPECT_EQ(s.pushes_received, s.total);
  router.close();
  dealer.close();
}

// The exact race the edge handling exists for: a message reaches the DEALER while its receiver
// sleeps, and a zmq call on the same socket (here ZMQ_EVENTS; in production the command
// processing inside a send) drains ZMQ_FD before Asio sees it. The next send from that socket
// must wake the receiver, or the message would sit there unnoticed forever.
TEST(ZmqSocket, SendWakesAReceiverWhoseEdgeAnotherCallConsumed) {
  test::temp_dir dir;
  net::io_context ioc;
  zmq::context_t ctx;
  zmq_socket router(ioc.get_executor(), ctx, zmq::socket_type::router);
  router.raw().set(zmq::sockopt::router_mandatory, 1);
  router.raw().bind("ipc://" + dir.file("router.ipc"));
  zmq_socket dealer(ioc.get_executor(), ctx, zmq::socket_type::dealer);
  dealer.raw().set(zmq::sockopt::routing_id, "dealer-1");
  dealer.raw().connect("ipc://" + dir.file("router.ipc"));

  // Handshake, so that the router knows the dealer.
  ASSERT_TRUE(dealer.send({"hello"}));
  auto hello = net::co_spawn(ioc, router.async_recv(), net::use_future);
  ASSERT_TRUE(test::run_until(
      ioc, [&] { return hello.wait_for(0s) == std::future_status::ready; }, 10s));
  ASSERT_EQ(hello.get().size(), 2u);

  // The dealer's receiver goes to sleep on ZMQ_FD.
  auto received = net::co_spawn(ioc, dealer.async_recv(), net::use_future);
  ioc.poll();
  ASSERT_NE(received.wait_for(0s), std::future_status::ready);

  // A message arrives; wait (without running the io_context) until ZMQ_FD signals it.
  ASSERT_TRUE(router.send({"dealer-1", "job", "{}"}));
  pollfd pfd{};
  pfd.fd = dealer.raw().get(zmq::sockopt::fd);
  pfd.events = POLLIN;
  ASSERT_EQ(::poll(&pfd, 1, 10000), 1) << "the message did not reach the dealer";
  // Another zmq call drains the descriptor: the edge Asio waits for is gone.
  ASSERT_TRUE(dealer.raw().get(zmq::sockopt::events) & ZMQ_POLLIN);

  // A send from the receiving side must wake the receiver.
  ASSERT_TRUE(dealer.send({"ready", "{}"}));
  ASSERT_TRUE(test::run_until(
      ioc, [&] { return received.wait_for(0s) == std::future_status::ready; }, 10s))
      << "the receiver slept through a pending message";
  auto parts = received.get();
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0].to_string(), "job");
}

TEST(ZmqSocket, ReceiveThrowsOperationAbortedAfterClose) {
  net::io_context ioc;
  zmq::context_t ctx;
  zmq_socket dealer(ioc.get_executor(), ctx, zmq::socket_type::dealer);
  dealer.raw().connect("inproc://nobody");
  auto pending = net::co_spawn(ioc, dealer.async_recv(), net::use_future);
  // Let the receiver reach its wait, then close the socket under it.
  ioc.poll();
  ASSERT_NE(pending.wait_for(0s), std::future_status::ready);
  dealer.close();
  ASSERT_TRUE(test::run_until(
      ioc, [&] { return pending.wait_for(0s) == std::future_status::ready; }, 10s));
  try {
    pending.get();
    ADD_FAILURE() << "async_recv returned after close";
  } catch (const boost::system::system_error& e) {
    EXPECT_EQ(e.code(), net::error::operation_aborted);
  }
  EXPECT_FALSE(dealer.send({"ready", "{}"}));
}

TEST(ZmqSocket, RouterSendToAnUnknownPeerIsRefused) {
  test::temp_dir dir;
  net::io_context ioc;
  zmq::context_t ctx;
  zmq_socket router(ioc.get_executor(), ctx, zmq::socket_type::router);
  router.raw().set(zmq::sockopt::router_mandatory, 1);
  router.raw().bind("ipc://" + dir.file("r.ipc"));
  EXPECT_FALSE(router.send({"no-such-peer", "job", "{}"}));
}

}  // namespace
}  // namespace descprod
