// The store's contracts with Redis beyond single transitions: the refusal words of the scripts
// (every one parsed, an unknown one an error), typed reports of every kind in one script call, the
// keys a job's whole life touches (only its prefix's: the scripts get their keys as KEYS or build
// them with the rendered prelude), the Lua convention (no key text or state name written by hand
// outside the rendered prelude), and a data set written as the store before the typed API wrote
// it, run on by this one (the layout is unchanged).
#include <regex>

#include "core/accounts.hpp"
#include "core/keys.hpp"
#include "tests/integration/store_fixture.hpp"

namespace descprod {
namespace {

using namespace test_store;

redis_reply reply_of(const std::vector<std::string>& words) {
  redis_reply r;
  r.type = redis_reply::kind::array;
  for (const auto& w : words) {
    redis_reply e;
    e.type = redis_reply::kind::string;
    e.str = w;
    r.elements.push_back(e);
  }
  return r;
}

TEST(Refusal, EveryNameRoundTripsAndAnUnknownWordIsNone) {
  for (auto r : {refusal::none, refusal::missing, refusal::illegal, refusal::stale, refusal::terminal,
                 refusal::bad_parent, refusal::active, refusal::error, refusal::bad_op, refusal::bad_dep}) {
    EXPECT_EQ(parse_refusal(to_string(r)), r) << to_string(r);
  }
  EXPECT_EQ(to_string(refusal::bad_parent), "bad_parent");
  EXPECT_FALSE(parse_refusal("frobbed"));
  EXPECT_FALSE(parse_refusal(""));
}

TEST(Refusal, EveryRefusalWordTheScriptsAnswerIsParsed) {
  std::regex word(R"(\{'err', '([a-z_]+)')");
  std::set<std::string> seen;
  for (const auto& src : store_scripts())
    for (std::sregex_iterator it(src.begin(), src.end(), word), end; it != end; ++it) seen.insert((*it)[1]);
  EXPECT_EQ(seen, (std::set<std::string>{"missing", "illegal", "stale", "terminal", "bad_parent", "active",
                                         "error", "bad_op", "bad_dep"}));
  for (const auto& w : seen) {
    auto tr = to_transition_result(reply_of({"err", w, "running"}));
    EXPECT_FALSE(tr.ok);
    EXPECT_EQ(to_string(tr.reason), w);
    EXPECT_EQ(tr.state, "running");
  }
}

TEST(Refusal, AnUnknownWordOrAMalformedAnswerIsAClearError) {
  try {
    to_transition_result(reply_of({"err", "frobbed", "ready"}));
    FAIL() << "no error for an unknown refusal";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown refusal 'frobbed'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(to_transition_result(reply_of({"err"})), std::runtime_error);
  EXPECT_THROW(to_transition_result(reply_of({"maybe", "x"})), std::runtime_error);
  EXPECT_THROW(to_transition_result(reply_of({"err", "none", "ready"})), std::runtime_error);
  auto ok = to_transition_result(reply_of({"ok", "running", "2", "w1"}));
  EXPECT_TRUE(ok.ok);
  EXPECT_EQ(ok.reason, refusal::none);
  EXPECT_EQ(ok.attempt, 2);
}

TEST(LuaConvention, NoKeyTextNorStateNameIsWrittenByHandOutsideTheRenderedPrelude) {
  const auto prelude = keys::lua_prelude();
  for (const auto& src : store_scripts()) {
    // Every script starts with the fence, then the key functions.
    ASSERT_EQ(src.rfind("local FENCE = table.remove(ARGV) or ''\n", 0), 0u);
    auto at = src.find(prelude);
    ASSERT_NE(at, std::string::npos) << "every script has the key functions";
    EXPECT_EQ(src.substr(0, at).find("P .."), std::string::npos) << "the fence builds no key";
    auto rest = src.substr(at + prelude.size());
    EXPECT_EQ(rest.find("P .."), std::string::npos) << "keys from the prefix only in K";
    for (const char* text :
         {"'token:", "'user:", "':events'", "':log'", "':children'", "':jobs'", "'queue'", "'leases'",
          "'events'", "'next_job_id'", "jobs_by_state", "':dependents'", "'deps:"})
      EXPECT_EQ(rest.find(text), std::string::npos) << text;
    // State names: only in the tables rendered from job.cpp, which end with S's metatable.
    auto tables_end = rest.find("setmetatable(S");
    ASSERT_NE(tables_end, std::string::npos);
    auto code = rest.substr(tables_end);
    for (auto s : all_job_states())
      EXPECT_EQ(code.find("'" + std::string(to_string(s)) + "'"), std::string::npos) << to_string(s);
  }
}

TEST(LuaConvention, TheKeyFunctionsBuildWhatKeysBuilds) {
  auto p = keys::lua_prelude();
  EXPECT_NE(p.find("K.job = function(x) return P .. 'job:' .. x end"), std::string::npos) << p;
  EXPECT_NE(p.find("K.job_events = function(x) return P .. 'job:' .. x .. ':events' end"), std::string::npos);
  EXPECT_NE(p.find("K.user_jobs = function(x) return P .. 'user:' .. x .. ':jobs' end"), std::string::npos);
  EXPECT_NE(p.find("K.user_active = function(x) return P .. 'user:' .. x .. ':active' end"),
            std::string::npos);
  EXPECT_NE(p.find("K.token = function(x) return P .. 'token:' .. x end"), std::string::npos);
  EXPECT_NE(p.find("K.job_dependents = function(x) return P .. 'job:' .. x .. ':dependents' end"),
            std::string::npos);
  EXPECT_NE(p.find("K.deps_ended = P .. 'deps:ended'"), std::string::npos);
}

TEST_F(StoreTest, AReportRunOfEveryKindIsOneScriptCall) {
  std::vector<new_job> jobs;
  for (int i = 0; i < 2; ++i) jobs.push_back(make_job("mysleep", std::to_string(i)));
  auto ids = create("alice", std::move(jobs));
  for (auto id : ids) ASSERT_TRUE(run(st.async_lease(id, "w1", 30)).ok);
  ASSERT_EQ(cmd({"CONFIG", "RESETSTAT"}).str, "OK");
  std::vector<store::report> q;
  q.push_back(start_r(ids[0], 1, "w1", "h0", "/r0", 10));
  q.push_back(start_r(ids[1], 1, "w1", "h1", "/r1", 11));
  q.push_back(progress_r(ids[0], 1, "w1", "a third", 1, 3));
  q.push_back(progress_r(ids[1], 1, "w1", "no counts", std::nullopt, std::nullopt));
  q.push_back(finish_r(ids[0], 1, "w1", job_state::failed, 3, "Failed", "exit 3"));
  q.push_back(finish_r(ids[1], 1, "w1", job_state::timeout, 124, "Timeout", ""));
  auto rs = run(st.async_reports(std::move(q)));
  ASSERT_EQ(rs.size(), 6u);
  for (const auto& r : rs) EXPECT_TRUE(r.ok) << r.reason << " " << r.state;
  auto stats = cmd({"INFO", "commandstats"}).str;
  EXPECT_NE(stats.find("cmdstat_evalsha:calls=1,"), std::string::npos) << stats;
  auto a = hash(ids[0]), b = hash(ids[1]);
  EXPECT_EQ(a["host"], "h0");
  EXPECT_EQ(a["pid"], "10");
  EXPECT_EQ(a["done_count"], "1");
  EXPECT_EQ(a["total_count"], "3");
  EXPECT_EQ(a["state"], "failed");
  EXPECT_EQ(a["return_status"], "3");
  EXPECT_EQ(a["progress"], "Failed. exit 3");
  EXPECT_EQ(b.count("done_count"), 0u) << "a progress without counts writes none";
  EXPECT_EQ(b["state"], "timeout");
  EXPECT_EQ(b["progress"], "Timeout.");
}

// Every key under the connection, by SCAN (bounded by the keyspace).
std::set<std::string> all_keys(redis_sync& r) {
  std::set<std::string> out;
  std::string cursor = "0";
  for (int i = 0; i < 10000; ++i) {
    auto page = r.exec({"SCAN", cursor, "COUNT", "1000"});
    cursor = page.elements.at(0).str;
    for (const auto& k : page.elements.at(1).elements) out.insert(k.str);
    if (cursor == "0") break;
  }
  return out;
}

TEST_F(StoreTest, AJobsWholeLifeUnderAnotherPrefixTouchesOnlyThatPrefixsKeys) {
  // As a Redis ACL user limited to the prefix (descprod-up's `~descprod:*`): Redis refuses any
  // declared key outside it, so a key passed as KEYS that is not the prefix's (an empty one for
  // "none", say) fails the script.
  ASSERT_EQ(cmd({"ACL", "SETUSER", "iso", "on", ">isopw", "~iso{x}:*", "&*", "+@all", "-@dangerous"}).str,
            "OK");
  auto ep = server.endpoint();
  ep.username = "iso";
  ep.password = "isopw";
  redis_client limited{ioc.get_executor(), ep};
  run_async(ioc, limited.async_connect());
  store other(limited, "iso{x}:");
  const keys k("iso{x}:");
  run(other.async_recount_start(false));
  run(other.async_recount_states());
  std::vector<new_job> jobs;
  for (int i = 0; i < 4; ++i) jobs.push_back(make_job("mysleep", std::to_string(i), 0, 1));
  auto cr = run(other.async_create("zed", std::move(jobs)));
  ASSERT_TRUE(cr.ok) << cr.reason;
  auto& ids = cr.ids;
  std::vector<new_job> child;
  child.push_back(make_job("mysleep", "c"));
  child.back().parent = ids[0];
  auto cc = run(other.async_create("zed", std::move(child)));
  ASSERT_TRUE(cc.ok) << cc.reason;
  // Job 1: claimed with a token, started, progress, cancel requested, killed → cancelled, archived,
  // deleted (with its child's link). Job 2: leased in a batch with a token, lost. Job 3: handed back
  // and cancelled while ready. Job 4: a report run, done.
  ASSERT_TRUE(run(other.async_claim(ids[0], "w1", 30, std::string(64, 'a'), 600)).ok);
  ASSERT_TRUE(run(other.async_start(ids[0], 1, "w1", "h", "/r", 1)).ok);
  ASSERT_TRUE(run(other.async_progress(ids[0], 1, "w1", "m", 1, 2)).ok);
  ASSERT_EQ(run(other.async_cancel(ids[0], "zed")).state, "cancel_requested");
  ASSERT_EQ(run(other.async_finish(ids[0], 1, "w1", job_state::killed, -9, "Killed", "")).state, "cancelled");
  ASSERT_TRUE(run(other.async_set_archive(ids[0], true)).ok);
  std::vector<store::claim_request> many;
  many.push_back({ids[1], "w2", std::string(64, 'b')});
  many.push_back({ids[2], "w2", ""});
  many.push_back({ids[3], "w2", std::string(64, 'd')});
  for (const auto& r : run(other.async_claim_many(std::move(many), 30, 600))) ASSERT_TRUE(r.ok) << r.reason;
  ASSERT_TRUE(run(other.async_start(ids[1], 1, "w2", "h", "/r", 2)).ok);
  ASSERT_EQ(run(other.async_requeue(ids[1], 1, "w2", store::requeue_mode::lost, "gone")).state, "lost");
  ASSERT_TRUE(run(other.async_requeue(ids[2], 1, "w2", store::requeue_mode::handback, "drain")).ok);
  ASSERT_EQ(run(other.async_cancel(ids[2], "zed")).state, "cancelled");
  std::vector<store::report> q;
  q.push_back(start_r(ids[3], 1, "w2", "h", "/r", 4));
  q.push_back(finish_r(ids[3], 1, "w2", job_state::done, 0, "Done", ""));
  for (const auto& r : run(other.async_reports(std::move(q)))) ASSERT_TRUE(r.ok) << r.reason;
  ASSERT_TRUE(run(other.async_delete(ids[0])).ok);
  ASSERT_EQ(run(other.async_delete(ids[3] + 1)).reason, refusal::active);  // the child, still ready
  run(other.async_recount_start(true));
  run(other.async_recount_states());

  auto keys_now = all_keys(inspect);
  ASSERT_FALSE(keys_now.empty());
  for (const auto& key : keys_now) EXPECT_EQ(key.rfind("iso{x}:", 0), 0u) << key;
  // And exactly the layout's keys: job 1 and its token are gone, the others' tokens too.
  std::set<std::string> want = {k.next_job_id(),   k.queue(),          k.events(),
                                k.jobs_by_state(), k.user_jobs("zed"), k.user_active("zed"),
                                k.user_find("zed")};
  for (auto id : {ids[1], ids[2], ids[3], ids[3] + 1}) want.insert(k.job(id));
  for (auto id : {ids[1], ids[2], ids[3]}) want.insert(k.job_events(id));
  EXPECT_EQ(keys_now, want);
  EXPECT_EQ(cmd({"SISMEMBER", k.job_children(ids[0]), std::to_string(ids[3] + 1)}).integer, 0);
  EXPECT_EQ(cmd({"ZCARD", k.leases()}).integer, 0);
}

// ---- data written by the store before the typed API -----------------------------------------

// Writes, by plain commands, what the store of main before issue 14 wrote for: job 1 ready (no
// stream yet), job 2 dispatched by a claim with a job token, job 3 running with a child job 4
// (ready), job 5 done; user ann with a user token and a worker token as descprod-admin wrote
// them; the counts hash after a recount.
void write_legacy_data_set(redis_sync& r) {
  auto x = [&](std::vector<std::string> c) { ASSERT_FALSE(r.exec(c).is_error()) << c[0] << " " << c[1]; };
  const std::string t = "1700000000.250000";
  auto job = [&](int id, const std::string& state, std::vector<std::string> more) {
    std::vector<std::string> c{"HSET",         "descprod:job:" + std::to_string(id),
                               "id",           std::to_string(id),
                               "descname",     "ann",
                               "jobtype",      "mysleep",
                               "config",       "1",
                               "howfig",       "",
                               "priority",     "0",
                               "max_attempts", "3",
                               "archive",      "0",
                               "attempt",      "1",
                               "state",        state,
                               "progress",     state == "ready" ? "Ready." : "Running.",
                               "create_time",  t,
                               "update_time",  t,
                               "queued_time",  t};
    c.insert(c.end(), more.begin(), more.end());
    x(c);
    x({"ZADD", "descprod:user:ann:jobs", std::to_string(id), std::to_string(id)});
    x({"XADD", "descprod:events", "*", "id", std::to_string(id), "owner", "ann", "type", "transition",
       "state", "ready", "progress", "Ready.", "attempt", "1", "time", t});
  };
  x({"SET", "descprod:next_job_id", "5"});
  job(1, "ready", {});
  x({"ZADD", "descprod:queue", "1000000000000001", "1"});
  const std::string sha2(64, '2');
  job(2, "dispatched", {"worker", "claim:hostx", "dispatch_time", t, "token_sha", sha2});
  x({"ZADD", "descprod:leases", "1700000030.250", "2"});
  x({"HSET", "descprod:token:" + sha2, "owner", "ann", "scope", "job:2", "created", "1700000000", "expires",
     "1700086400"});
  x({"EXPIRE", "descprod:token:" + sha2, "86400"});
  job(3, "running", {"worker", "w1", "host", "h", "rundir", "/r", "pid", "7", "start_time", t});
  x({"ZADD", "descprod:leases", "1700000030.250", "3"});
  job(4, "ready", {"parent", "3"});
  x({"ZADD", "descprod:queue", "1000000000000004", "4"});
  x({"SADD", "descprod:job:3:children", "4"});
  job(5, "done", {"return_status", "0", "stop_time", t});
  for (int id : {2, 3, 5})
    x({"XADD", "descprod:job:" + std::to_string(id) + ":events", "1700000000250-0", "type", "transition",
       "state", "ready", "progress", "Ready.", "attempt", "1", "time", t});
  x({"HSET",       "descprod:stats:jobs_by_state",
     "ready",      "2",
     "dispatched", "1",
     "running",    "1",
     "done",       "1",
     "failed",     "0",
     "timeout",    "0",
     "killed",     "0",
     "cancelled",  "0",
     "lost",       "0"});
  x({"SADD", "descprod:users", "ann"});
  x({"HSET", "descprod:user:ann", "role", "user", "status", "active", "created", "1700000000"});
  x({"HSET", "descprod:token:" + std::string(64, 'u'), "owner", "ann", "scope", "user", "created",
     "1700000000", "expires", "0", "label", ""});
  x({"SADD", "descprod:user:ann:tokens", std::string(64, 'u')});
  x({"HSET", "descprod:token:" + std::string(64, 'w'), "owner", "ann", "scope", "worker", "created",
     "1700000000", "expires", "0", "label", "gpu box"});
  x({"HSET", "descprod:token:" + std::string(64, 'w'), "pools", "ann,*"});
  x({"SADD", "descprod:user:ann:worker_tokens", std::string(64, 'w')});
}

std::vector<std::string> fields_in_order(redis_sync& r, const std::string& key) {
  std::vector<std::string> out;
  auto h = r.exec({"HGETALL", key});
  for (std::size_t i = 0; i < h.elements.size(); i += 2) out.push_back(h.elements[i].str);
  return out;
}

TEST_F(StoreTest, RunsOnADataSetWrittenByTheStoreBeforeTheTypedApi) {
  write_legacy_data_set(inspect);
  // The counts of before carry no '_derived' mark: a recount derives them again, and with them the
  // owner's Active index that store lacks.
  EXPECT_EQ(run(st.async_recount_start(false)), "started");
  run(st.async_recount_states());
  EXPECT_EQ(zrange("descprod:user:ann:active"), (std::vector<std::string>{"1", "2", "3", "4", "5"}));
  EXPECT_EQ(owner_indexes_disagree(), "");
  EXPECT_EQ(run(st.async_recount_start(false)), "exists");
  // The claimed job: its token is the one the old claim wrote; a cancel marks it read-only, the
  // runner's finish through the gateway makes it cancelled and the token goes.
  EXPECT_EQ(run(st.async_cancel(2, "ann")).state, "cancel_requested");
  EXPECT_EQ(cmd({"HGET", "descprod:token:" + std::string(64, '2'), "read_only"}).str, "1");
  EXPECT_EQ(run(st.async_finish(2, 1, "claim:hostx", job_state::failed, 1, "Failed", "")).state, "cancelled");
  EXPECT_EQ(cmd({"EXISTS", "descprod:token:" + std::string(64, '2')}).integer, 0);
  // The running job's report and the ready job's lease, in the new batch forms.
  std::vector<store::report> q;
  q.push_back(progress_r(3, 1, "w1", "half", 1, 2));
  q.push_back(finish_r(3, 1, "w1", job_state::done, 0, "Done", "ok"));
  for (const auto& r : run(st.async_reports(std::move(q)))) EXPECT_TRUE(r.ok) << r.reason << " " << r.state;
  std::vector<store::claim_request> claims;
  claims.push_back({1, "w9", std::string(64, 'n')});
  auto leased = run(st.async_claim_many(std::move(claims), 30, 600));
  ASSERT_TRUE(leased.at(0).ok) << leased[0].reason;
  EXPECT_EQ(leased[0].record.at("create_time"), "1700000000.250000");
  // The job stream the lease opened starts with the submission event the old store would write.
  auto ev = stream("descprod:job:1:events");
  ASSERT_GE(ev.size(), 2u);
  EXPECT_EQ(
      cmd({"XRANGE", "descprod:job:1:events", "-", "+", "COUNT", "1"}).elements.at(0).elements.at(0).str,
      "1700000000250-0");
  // The job token the new claim wrote has the old claim's fields, in the old order.
  EXPECT_EQ(fields_in_order(inspect, "descprod:token:" + std::string(64, 'n')),
            (std::vector<std::string>{"owner", "scope", "created", "expires"}));
  EXPECT_EQ(cmd({"HGET", "descprod:token:" + std::string(64, 'n'), "scope"}).str, "job:1");
  // A child of a job of before: created with the parent's keys, deleted with its link.
  std::vector<new_job> kid;
  kid.push_back(make_job("mysleep", "k"));
  kid.back().parent = 3;
  auto c = run(st.async_create("ann", std::move(kid)));
  ASSERT_TRUE(c.ok) << c.reason;
  EXPECT_EQ(c.ids, std::vector<job_id>{6}) << "the ID counter of before goes on";
  EXPECT_EQ(cmd({"SCARD", "descprod:job:3:children"}).integer, 2);
  ASSERT_TRUE(run(st.async_delete(5)).ok);
  EXPECT_EQ(zrange("descprod:user:ann:jobs"), (std::vector<std::string>{"1", "2", "3", "4", "6"}));
  EXPECT_EQ(zrange("descprod:user:ann:active"), (std::vector<std::string>{"1", "2", "3", "4", "6"}));
  // The counts moved with every transition from the counts of before, and a recount agrees.
  auto counts = run(st.async_state_counts());
  ASSERT_TRUE(counts);
  EXPECT_EQ((*counts)["ready"], 2);  // 4 and 6
  EXPECT_EQ((*counts)["dispatched"], 1);
  EXPECT_EQ((*counts)["done"], 1);
  EXPECT_EQ((*counts)["cancelled"], 1);
  EXPECT_EQ((*counts)["running"], 0);
  run(st.async_recount_states(true));
  EXPECT_EQ(run(st.async_state_counts()), counts);
}

TEST_F(StoreTest, TokensWrittenByTheOneWriterMatchTheTokensOfBefore) {
  write_legacy_data_set(inspect);
  const keys k("descprod:");
  // descprod-admin's user and worker tokens, as the old code wrote them (write_legacy_data_set).
  token_spec user;
  user.owner = "bob";
  user.scope = "user";
  user.created = "1700000000";
  auto uc = token_write_commands(k, std::string(64, 'v'), user);
  token_spec worker;
  worker.owner = "bob";
  worker.scope = "worker";
  worker.created = "1700000000";
  worker.label = "gpu box";
  worker.pools = "ann,*";
  auto wc = token_write_commands(k, std::string(64, 'x'), worker);
  for (const auto& c : uc) ASSERT_FALSE(inspect.exec(c).is_error());
  for (const auto& c : wc) ASSERT_FALSE(inspect.exec(c).is_error());
  EXPECT_EQ(fields_in_order(inspect, k.token(std::string(64, 'v'))),
            fields_in_order(inspect, k.token(std::string(64, 'u'))));
  EXPECT_EQ(fields_in_order(inspect, k.token(std::string(64, 'x'))),
            fields_in_order(inspect, k.token(std::string(64, 'w'))));
  EXPECT_EQ(cmd({"HGET", k.token(std::string(64, 'x')), "pools"}).str, "ann,*");
  EXPECT_EQ(cmd({"SISMEMBER", k.user_tokens("bob"), std::string(64, 'v')}).integer, 1);
  EXPECT_EQ(cmd({"SISMEMBER", k.user_worker_tokens("bob"), std::string(64, 'x')}).integer, 1);
  EXPECT_EQ(cmd({"EXISTS", k.user_tokens("bob") + "x"}).integer, 0);
  EXPECT_EQ(cmd({"TTL", k.token(std::string(64, 'v'))}).integer, -1) << "no TTL without ttl_s";
  // A TTL when asked; the token then is in no index when it is neither a user nor a worker token.
  token_spec temp;
  temp.owner = "bob";
  temp.scope = "job:7";
  temp.created = "1700000000";
  temp.expires = 1700000600;
  temp.ttl_s = 600;
  auto tc = token_write_commands(k, std::string(64, 'y'), temp);
  ASSERT_EQ(tc.size(), 2u);
  EXPECT_EQ(tc[1], (std::vector<std::string>{"EXPIRE", k.token(std::string(64, 'y')), "600"}));
}

}  // namespace
}  // namespace descprod
