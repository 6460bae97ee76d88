// core/async_util.hpp: backoff, spawn_logged, field_or_empty.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <stdexcept>

#include "core/async_util.hpp"

namespace descprod {
namespace {

using std::chrono::milliseconds;

TEST(Backoff, DoublesUpToTheMaximumAndResets) {
  backoff b(milliseconds(100), milliseconds(350));
  EXPECT_EQ(b.next(), milliseconds(100));
  EXPECT_EQ(b.next(), milliseconds(200));
  EXPECT_EQ(b.next(), milliseconds(350));
  EXPECT_EQ(b.next(), milliseconds(350));
  b.reset();
  EXPECT_EQ(b.peek(), milliseconds(100));
  EXPECT_EQ(b.next(), milliseconds(100));
}

TEST(Backoff, MaximumBelowInitialIsRaisedToIt) {
  backoff b(milliseconds(500), milliseconds(10));
  EXPECT_EQ(b.next(), milliseconds(500));
  EXPECT_EQ(b.next(), milliseconds(500));
}

boost::asio::awaitable<void> set_then_throw(int* ran, bool do_throw) {
  ++*ran;
  if (do_throw) throw std::runtime_error("boom");
  co_return;
}

TEST(SpawnLogged, RunsTheTaskAndSurvivesItsFailure) {
  boost::asio::io_context io;
  int ran = 0;
  spawn_logged(io.get_executor(), set_then_throw(&ran, false), "ok");
  spawn_logged(io.get_executor(), set_then_throw(&ran, true), "fails");
  spawn_logged(io.get_executor(), set_then_throw(&ran, true), "quiet", [] { return true; });
  EXPECT_NO_THROW(io.run());
  EXPECT_EQ(ran, 3);
}

TEST(FieldOrEmpty, AbsentIsEmpty) {
  std::map<std::string, std::string> m{{"state", "ready"}};
  EXPECT_EQ(field_or_empty(m, "state"), "ready");
  EXPECT_EQ(field_or_empty(m, "owner"), "");
}

}  // namespace
}  // namespace descprod
