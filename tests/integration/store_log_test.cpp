// The store's log pieces (reports op 'l', issue #17 item 5) against a real redis-server: stored in
// order in the job's :log stream, a resent piece dropped, a gap and a new attempt noted, the cap
// kept (with the per-entry charge, so tiny pieces cannot outgrow it), and pieces of a stale
// attempt, another worker or a missing job refused without creating a key.
#include "tests/integration/store_fixture.hpp"

namespace descprod {
namespace {

using namespace test_store;

class StoreLog : public StoreTest {
 protected:
  static store::report piece(job_id id, long long attempt, std::string worker,
                             std::optional<long long> offset, long long next, std::string text,
                             long long cap = 1 << 20, bool capped = false) {
    store::log_report q;
    q.id = id;
    q.attempt = attempt;
    q.worker = std::move(worker);
    q.offset = offset;
    q.next = next;
    q.capped = capped;
    q.cap = cap;
    q.text = std::move(text);
    return q;
  }
  std::vector<transition_result> apply(std::vector<store::report> q) {
    return run(st.async_reports(std::move(q)));
  }
  // The stored log, entry texts concatenated.
  std::string stored(job_id id) {
    std::string out;
    for (auto& e : stream(st.job_key(id) + ":log")) out += e["text"];
    return out;
  }
};

TEST_F(StoreLog, PiecesAreStoredInOrderAndAResentPieceIsDropped) {
  auto id = create_one();
  auto a = run_job(id);
  std::vector<store::report> q;
  q.push_back(piece(id, a, "w1", 0, 6, "one\nb\n"));
  q.push_back(piece(id, a, "w1", 6, 10, "two\n"));
  q.push_back(piece(id, a, "w1", 0, 6, "one\nb\n"));  // a resend after a reconnect
  auto rs = apply(std::move(q));
  ASSERT_EQ(rs.size(), 3u);
  EXPECT_TRUE(rs[0].ok);
  EXPECT_EQ(rs[0].state, "stored");
  EXPECT_EQ(rs[2].state, "duplicate");
  EXPECT_EQ(stored(id), "one\nb\ntwo\n");
  EXPECT_EQ(stream(st.job_key(id) + ":log").size(), 2u);
  auto h = hash(id);
  EXPECT_EQ(h["log_next"], "10");
  EXPECT_EQ(h["log_attempt"], std::to_string(a));
  EXPECT_EQ(h["log_bytes"], std::to_string(10 + 2 * 64));
}

TEST_F(StoreLog, APieceSentAgainAfterARewindKeepsOnlyTheLinesPastWhatIsStored) {
  // After log_from the worker ships from Redis's end again; a piece stored meanwhile (in flight
  // before the rewind) makes the resent one overlap: its lines' end offsets say which to drop.
  auto id = create_one();
  auto a = run_job(id);
  std::vector<store::report> q;
  q.push_back(piece(id, a, "w1", 0, 10, "aaa\nbbbbb\n"));
  auto resent = piece(id, a, "w1", 4, 13, "bbbbb\ncc\n");
  std::get<store::log_report>(resent).ends = {10, 13};
  q.push_back(resent);
  auto rs = apply(std::move(q));
  ASSERT_TRUE(rs[1].ok);
  EXPECT_EQ(stored(id), "aaa\nbbbbb\ncc\n");
  EXPECT_EQ(hash(id)["log_next"], "13");
}

TEST_F(StoreLog, AGapAndANewAttemptAreNotedInTheLog) {
  auto id = create_one();
  auto a = run_job(id);
  std::vector<store::report> q;
  q.push_back(piece(id, a, "w1", 0, 4, "one\n"));
  q.push_back(piece(id, a, "w1", 104, 108, "far\n"));  // 100 bytes never arrived
  apply(std::move(q));
  EXPECT_EQ(
      stored(id),
      "one\ndescprod: 100 bytes of this log were lost on the way (the run directory has the whole file)\n"
      "far\n");
  // The worker is lost; the next attempt's log starts at offset 0 again, after a note.
  ASSERT_TRUE(run(st.async_requeue(id, a, "w1", store::requeue_mode::lost, "test")).ok);
  auto b = run_job(id, "w2");
  ASSERT_EQ(b, a + 1);
  std::vector<store::report> q2;
  q2.push_back(piece(id, a, "w1", 108, 112, "old\n"));  // the lost worker, late: refused
  q2.push_back(piece(id, b, "w2", 0, 6, "again\n"));
  auto rs = apply(std::move(q2));
  EXPECT_FALSE(rs[0].ok);
  EXPECT_EQ(rs[0].reason, refusal::stale);
  EXPECT_TRUE(rs[1].ok);
  EXPECT_NE(stored(id).find("far\ndescprod: attempt " + std::to_string(b) + " starts here\nagain\n"),
            std::string::npos)
      << stored(id);
}

TEST_F(StoreLog, TheCapKeepsWholeLinesAndCountsEachEntry) {
  auto id = create_one();
  auto a = run_job(id);
  const long long cap = 1000;
  std::vector<store::report> q;
  // 10 lines of 100 bytes (with the newline) in one piece: 64 + 900 fit, the tenth does not.
  std::string text;
  for (int i = 0; i < 10; ++i) text += std::string(99, static_cast<char>('a' + i)) + "\n";
  q.push_back(piece(id, a, "w1", 0, 1000, text, cap));
  q.push_back(piece(id, a, "w1", 1000, 1004, "more\n", cap));  // past the cap: nothing
  apply(std::move(q));
  auto log = stored(id);
  EXPECT_EQ(log.substr(0, 900), text.substr(0, 900));
  EXPECT_EQ(log.substr(900),
            "descprod: the log reached its cap of 1000 bytes here; the rest is only in the run directory\n");
  EXPECT_EQ(hash(id)["log_capped"], "1");
  EXPECT_EQ(stream(st.job_key(id) + ":log").size(), 1u);

  // Tiny pieces: each entry counts 64 bytes, so 1-byte lines stop after cap / 66 entries, and one
  // more holds the note.
  auto id2 = create_one();
  auto a2 = run_job(id2);
  std::vector<store::report> q2;
  for (int i = 0; i < 100; ++i) q2.push_back(piece(id2, a2, "w1", i * 2, i * 2 + 2, "x\n", cap));
  apply(std::move(q2));
  auto entries = stream(st.job_key(id2) + ":log");
  EXPECT_EQ(entries.size(), 1000u / 66 + 1);
  EXPECT_EQ(entries.back()["text"].rfind("descprod: the log reached its cap", 0), 0u);
  EXPECT_LE(std::stoll(hash(id2)["log_bytes"]), cap);
}

TEST_F(StoreLog, TheWorkersCapFlagEndsTheLogWithTheNote) {
  auto id = create_one();
  auto a = run_job(id);
  std::vector<store::report> q;
  q.push_back(piece(id, a, "w1", 0, 4, "one\n", 1 << 20, true));
  apply(std::move(q));
  EXPECT_EQ(stored(id),
            "one\ndescprod: the log reached its cap of 1048576 bytes here; the rest is only in the run "
            "directory\n");
}

TEST_F(StoreLog, PiecesOfAnotherWorkerOrAMissingJobAreRefusedAndCreateNoKey) {
  auto id = create_one();
  auto a = run_job(id);
  std::vector<store::report> q;
  q.push_back(piece(id, a, "intruder", 0, 4, "evil\n"));
  q.push_back(piece(id + 1000, 1, "w1", 0, 4, "evil\n"));
  auto rs = apply(std::move(q));
  EXPECT_FALSE(rs[0].ok);
  EXPECT_EQ(rs[0].reason, refusal::stale);
  EXPECT_FALSE(rs[1].ok);
  EXPECT_EQ(rs[1].reason, refusal::missing);
  EXPECT_EQ(
      cmd({"EXISTS", st.job_key(id) + ":log", st.job_key(id + 1000) + ":log", st.job_key(id + 1000)}).integer,
      0);
}

TEST_F(StoreLog, APieceFromAnOlderWorkerWithoutOffsetsIsAppended) {
  auto id = create_one();
  auto a = run_job(id);
  std::vector<store::report> q;
  q.push_back(piece(id, a, "w1", std::nullopt, 0, "a\n"));
  q.push_back(piece(id, a, "w1", std::nullopt, 0, "a\n"));
  apply(std::move(q));
  EXPECT_EQ(stored(id), "a\na\n");
}

}  // namespace
}  // namespace descprod
