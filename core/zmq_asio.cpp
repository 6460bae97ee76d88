// ZeroMQ on Asio; see zmq_asio.hpp for the edge-trigger rules this follows.
#include "core/zmq_asio.hpp"

#include <boost/asio/as_tuple.hpp>

namespace descprod {

zmq_socket::zmq_socket(net::any_io_executor ex, zmq::context_t& ctx, zmq::socket_type type)
    : socket_(ctx, type), fd_(ex), self_(std::make_shared<zmq_socket*>(this)) {
  socket_.set(zmq::sockopt::linger, 0);
  fd_.assign(socket_.get(zmq::sockopt::fd));
}

zmq_socket::~zmq_socket() {
  *self_ = nullptr;  // a wake-up still posted finds no socket
  close();
}

void zmq_socket::close() {
  if (closed_) return;
  closed_ = true;
  boost::system::error_code ignored;
  fd_.cancel(ignored);
  fd_.release();  // ZeroMQ owns the descriptor
  socket_.close();
}

net::awaitable<std::vector<zmq::message_t>> zmq_socket::async_recv() {
  while (true) {
    if (closed_) throw boost::system::system_error(net::error::operation_aborted);
    std::vector<zmq::message_t> parts;
    zmq::message_t msg;
    auto got = socket_.recv(msg, zmq::recv_flags::dontwait);
    if (got) {
      // The rest of a multipart message is already here once its first part is.
      parts.push_back(std::move(msg));
      while (socket_.get(zmq::sockopt::rcvmore)) {
        zmq::message_t more;
        (void)socket_.recv(more, zmq::recv_flags::none);
        parts.push_back(std::move(more));
      }
      co_return parts;
    }
    auto [ec] =
        co_await fd_.async_wait(net::posix::stream_descriptor::wait_read, net::as_tuple(net::use_awaitable));
    (void)ec;  // aborted waits (wake_receiver) simply loop and look again
  }
}

bool zmq_socket::send(const std::vector<std::string>& frames) {
  if (closed_) return false;
  for (std::size_t i = 0; i < frames.size(); ++i) {
    auto flags = zmq::send_flags::dontwait;
    if (i + 1 < frames.size()) flags = flags | zmq::send_flags::sndmore;
    try {
      auto sent = socket_.send(zmq::buffer(frames[i]), flags);
      if (!sent) {
        wake_receiver_soon();
        return false;
      }
    } catch (const zmq::error_t&) {
      wake_receiver_soon();
      return false;  // e.g. EHOSTUNREACH from a ROUTER_MANDATORY socket
    }
  }
  wake_receiver_soon();
  return true;
}

void zmq_socket::wake_receiver_soon() {
  // Once per turn of the event loop, however many messages this turn sends: the check costs
  // system calls (ZMQ_EVENTS polls the socket's mailbox), the sends themselves need none. Posted
  // work runs before the loop next blocks, so the receiver never sleeps on a consumed edge.
  if (wake_posted_) return;
  wake_posted_ = true;
  std::weak_ptr<zmq_socket*> weak = self_;
  net::post(fd_.get_executor(), [weak] {
    auto self = weak.lock();
    if (!self || !*self) return;
    (*self)->wake_posted_ = false;
    if (!(*self)->closed_) (*self)->wake_receiver();
  });
}

void zmq_socket::wake_receiver() {
  // The send may have consumed the descriptor's edge while input is pending: wake the receiver
  // so it looks again instead of sleeping on an edge that will not come.
  if (socket_.get(zmq::sockopt::events) & ZMQ_POLLIN) {
    boost::system::error_code ignored;
    fd_.cancel(ignored);
  }
}

}  // namespace descprod
