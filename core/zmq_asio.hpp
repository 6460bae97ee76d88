// A ZeroMQ socket driven by Asio: the socket's ZMQ_FD is watched with a posix::stream_descriptor.
// ZMQ_FD is edge-triggered and any zmq call may consume the edge, so the receive loop always asks
// ZMQ_EVENTS (via a non-blocking receive) before it waits, and a send that leaves input pending
// wakes the waiting receiver (checked once per turn of the event loop, after all of its sends).
//
// Thread-safety: none; the socket belongs to one io_context thread.
#pragma once

#include <boost/asio.hpp>
#include <memory>
#include <string>
#include <vector>
#include <zmq.hpp>

namespace descprod {

namespace net = boost::asio;

class zmq_socket {
 public:
  zmq_socket(net::any_io_executor ex, zmq::context_t& ctx, zmq::socket_type type);
  ~zmq_socket();
  zmq_socket(const zmq_socket&) = delete;
  zmq_socket& operator=(const zmq_socket&) = delete;

  zmq::socket_t& raw() { return socket_; }

  // Waits for one whole multipart message. Throws system_error(operation_aborted) after close().
  net::awaitable<std::vector<zmq::message_t>> async_recv();
  // Sends a multipart message without blocking. Returns false when it could not be queued
  // (peer unknown to a ROUTER with ROUTER_MANDATORY, or high-water mark reached).
  bool send(const std::vector<std::string>& frames);
  void close();

 private:
  void wake_receiver();
  void wake_receiver_soon();
  zmq::socket_t socket_;
  net::posix::stream_descriptor fd_;
  bool closed_ = false;
  bool wake_posted_ = false;
  std::shared_ptr<zmq_socket*> self_;  // for the posted wake-up: null once destroyed
};

}  // namespace descprod
