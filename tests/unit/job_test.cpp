// The job model: the state machine against an explicit table, DESCprod's exit mapping, progress
// strings, names, config-string rules and the JSON forms of a job.
#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <set>
#include <utility>

#include "core/job.hpp"

namespace descprod {
namespace {

using S = job_state;
using E = job_event;

const std::vector<job_event> non_finish_events = {E::lease,  E::claim, E::start,   E::requeue,
                                                  E::cancel, E::lose,  E::release, E::unblock};

// The legal transitions of docs/architecture.md#job-model for every event but finish; anything
// absent is illegal.
const std::map<std::pair<S, E>, S>& expected_transitions() {
  static const std::map<std::pair<S, E>, S> table = {
      {{S::ready, E::lease}, S::dispatched},
      {{S::ready, E::cancel}, S::cancelled},
      {{S::dispatched, E::start}, S::running},
      {{S::dispatched, E::requeue}, S::ready},
      {{S::dispatched, E::cancel}, S::cancelled},
      {{S::dispatched, E::lose}, S::lost},
      {{S::running, E::requeue}, S::ready},
      {{S::running, E::cancel}, S::cancelled},
      {{S::running, E::lose}, S::lost},
      // descprod-start-job claims a ready or a held job; the daemon leases only ready ones.
      {{S::ready, E::claim}, S::dispatched},
      {{S::held, E::claim}, S::dispatched},
      {{S::held, E::release}, S::ready},
      {{S::held, E::cancel}, S::cancelled},
      {{S::waiting, E::unblock}, S::ready},
      {{S::waiting, E::cancel}, S::cancelled},
  };
  return table;
}

// finish is legal from dispatched and running, to these targets only.
const std::set<S> finish_from = {S::dispatched, S::running};
const std::set<S> finish_targets = {S::done, S::failed, S::timeout, S::killed, S::cancelled};

TEST(JobStateMachine, EveryStateAndEventMatchesTheExpectedTable) {
  int legal = 0;
  for (auto from : all_job_states()) {
    for (auto e : non_finish_events) {
      auto it = expected_transitions().find({from, e});
      std::optional<S> want;
      if (it != expected_transitions().end()) want = it->second;
      auto got = next_state(from, e);
      EXPECT_EQ(got, want) << to_string(from) << " --" << to_string(e) << "--> "
                           << (got ? to_string(*got) : "(illegal)");
      if (got) ++legal;
    }
  }
  EXPECT_EQ(legal, static_cast<int>(expected_transitions().size()));
}

TEST(JobStateMachine, FinishIsLegalFromDispatchedAndRunningToTerminalOutcomesOnly) {
  for (auto from : all_job_states()) {
    for (auto target : all_job_states()) {
      std::optional<S> want;
      if (finish_from.count(from) && finish_targets.count(target)) want = target;
      EXPECT_EQ(next_state(from, E::finish, target), want)
          << "finish " << to_string(from) << " -> " << to_string(target);
    }
    EXPECT_EQ(next_state(from, E::finish), std::nullopt)
        << "finish without a target from " << to_string(from);
  }
}

TEST(JobStateMachine, FinishFromDispatchedIsAllowed) {
  EXPECT_EQ(next_state(S::dispatched, E::finish, S::done), S::done);
  EXPECT_EQ(next_state(S::dispatched, E::finish, S::failed), S::failed);
}

TEST(JobStateMachine, CancelIsLegalFromEveryNonTerminalState) {
  for (auto s : {S::waiting, S::held, S::ready, S::dispatched, S::running})
    EXPECT_EQ(next_state(s, E::cancel), S::cancelled) << to_string(s);
}

TEST(JobStateMachine, TerminalStatesNeverChange) {
  const std::set<S> terminal = {S::done, S::failed, S::timeout, S::killed, S::cancelled, S::lost};
  for (auto s : all_job_states()) {
    EXPECT_EQ(is_terminal(s), terminal.count(s) > 0) << to_string(s);
    if (!terminal.count(s)) continue;
    for (auto e : non_finish_events) EXPECT_EQ(next_state(s, e), std::nullopt) << to_string(s);
    for (auto t : all_job_states()) EXPECT_EQ(next_state(s, E::finish, t), std::nullopt) << to_string(s);
  }
}

TEST(JobStateMachine, StateNamesRoundTripAndUnknownNamesAreRejected) {
  EXPECT_EQ(all_job_states().size(), 11u);
  for (auto s : all_job_states()) EXPECT_EQ(parse_job_state(to_string(s)), s);
  EXPECT_EQ(to_string(S::cancelled), "cancelled");
  EXPECT_EQ(to_string(E::requeue), "requeue");
  EXPECT_EQ(parse_job_state("Ready"), std::nullopt);
  EXPECT_EQ(parse_job_state(""), std::nullopt);
  EXPECT_EQ(parse_job_state("finished"), std::nullopt);
}

TEST(ClassifyExit, ZeroIsDone) {
  auto o = classify_exit(0, 0, false);
  EXPECT_EQ(o.state, S::done);
  EXPECT_EQ(o.return_status, 0);
  EXPECT_EQ(o.prefix, "Done");
}

TEST(ClassifyExit, PositiveCodeIsFailedWithThatStatus) {
  auto o = classify_exit(1, 0, false);
  EXPECT_EQ(o.state, S::failed);
  EXPECT_EQ(o.return_status, 1);
  EXPECT_EQ(o.prefix, "Failed");
  EXPECT_EQ(classify_exit(2, 0, false).return_status, 2);
}

TEST(ClassifyExit, Code124IsTimeoutAsInDescprod) {
  auto o = classify_exit(124, 0, false);
  EXPECT_EQ(o.state, S::timeout);
  EXPECT_EQ(o.return_status, 124);
  EXPECT_EQ(o.prefix, "Timeout");
}

TEST(ClassifyExit, SignalIsKilledWithNegativeStatus) {
  auto o = classify_exit(0, 9, false);
  EXPECT_EQ(o.state, S::killed);
  EXPECT_EQ(o.return_status, -9);
  EXPECT_EQ(o.prefix, "Process received signal 9");
}

TEST(ClassifyExit, TimedOutFlagWinsOverTheSignalThatEndedIt) {
  auto o = classify_exit(0, 15, true);
  EXPECT_EQ(o.state, S::timeout);
  EXPECT_EQ(o.return_status, 124);
  EXPECT_EQ(o.prefix, "Timeout");
  EXPECT_EQ(classify_exit(3, 0, true).state, S::timeout);
}

TEST(ProgressString, JoinsPrefixAndMessage) {
  EXPECT_EQ(progress_string("Done", "I'm awake now."), "Done. I'm awake now.");
  EXPECT_EQ(progress_string("Process received signal 9", "x"), "Process received signal 9. x");
}

TEST(ProgressString, EmptyMessageLeavesPrefixWithPeriod) { EXPECT_EQ(progress_string("Done", ""), "Done."); }

TEST(JobName, ZeroPadsToSixDigits) {
  EXPECT_EQ(job_name(81), "job000081");
  EXPECT_EQ(job_name(0), "job000000");
  EXPECT_EQ(job_name(999999), "job999999");
  EXPECT_EQ(job_name(1234567), "job1234567");
}

TEST(CheckConfig, AcceptsDescprodStyleConfigs) {
  EXPECT_EQ(check_config("sleep-ttsk2-ntsk20-nwrk4"), 0);
  EXPECT_EQ(check_config("a---b"), 0);
  EXPECT_EQ(check_config("10"), 0);
  EXPECT_EQ(check_config("ttsk:2-ntsk:20"), 0);
  EXPECT_EQ(check_config_reason(0), "ok");
}

TEST(CheckConfig, BadCharacterIsCode1) {
  EXPECT_EQ(check_config("a b"), 1);
  EXPECT_EQ(check_config("$(id)"), 1);
  EXPECT_EQ(check_config("a;rm"), 1);
  EXPECT_EQ(check_config("a_b"), 1);
  EXPECT_EQ(check_config("caf\xc3\xa9"), 1);
}

TEST(CheckConfig, FourDashesIsCode2) { EXPECT_EQ(check_config("a----b"), 2); }

TEST(CheckConfig, DoubleDashInAConstituentIsCode3) {
  EXPECT_EQ(check_config("a--b"), 3);
  EXPECT_EQ(check_config("a---b--c"), 3);
}

TEST(CheckConfig, LeadingOrTrailingDashIsCode4) {
  EXPECT_EQ(check_config("-a"), 4);
  EXPECT_EQ(check_config("a-"), 4);
  EXPECT_EQ(check_config("a---"), 4);
}

TEST(CheckConfig, LeadingOrTrailingColonIsCode5) {
  EXPECT_EQ(check_config("a:"), 5);
  EXPECT_EQ(check_config(":a"), 5);
}

TEST(CheckConfig, EmptyIsCode9) { EXPECT_EQ(check_config(""), 9); }

TEST(CheckConfig, EveryCodeHasItsOwnReason) {
  std::set<std::string_view> reasons;
  for (int code : {0, 1, 2, 3, 4, 5, 9}) reasons.insert(check_config_reason(code));
  EXPECT_EQ(reasons.size(), 7u);
  EXPECT_EQ(check_config_reason(9), "is empty");
}

TEST(SplitConfig, SplitsOnDashesColonsAndTripleDashes) {
  using V = std::vector<std::string>;
  EXPECT_EQ(split_config("sleep-ttsk2-ntsk20-nwrk4"), (V{"sleep", "ttsk2", "ntsk20", "nwrk4"}));
  EXPECT_EQ(split_config("one"), (V{"one"}));
  EXPECT_EQ(split_config_field("ttsk:2"), (V{"ttsk", "2"}));
  EXPECT_EQ(split_config_field("a:b:c"), (V{"a", "b", "c"}));
  EXPECT_EQ(split_compound_config("sleep-ttsk2---mysleep-5"), (V{"sleep-ttsk2", "mysleep-5"}));
  EXPECT_EQ(split_compound_config("single-part"), (V{"single-part"}));
}

TEST(JobToJson, WritesNumbersForIntegerAndTimeFieldsAndOmitsEmptyOnes) {
  job_record r = {
      {"id", "42"},           {"descname", "alice"}, {"jobtype", "mysleep"},           {"config", "10"},
      {"howfig", ""},         {"pid", ""},           {"create_time", "1700000000.25"}, {"attempt", "2"},
      {"progress", "Ready."}, {"state", "ready"},    {"return_status", "-9"},          {"not_a_field", "x"}};
  auto o = job_to_json(r);
  ASSERT_TRUE(o.contains("id"));
  EXPECT_TRUE(o.at("id").is_int64());
  EXPECT_EQ(o.at("id").as_int64(), 42);
  EXPECT_EQ(o.at("attempt").as_int64(), 2);
  EXPECT_EQ(o.at("return_status").as_int64(), -9);
  ASSERT_TRUE(o.at("create_time").is_double());
  EXPECT_DOUBLE_EQ(o.at("create_time").as_double(), 1700000000.25);
  EXPECT_EQ(o.at("config").as_string(), "10");  // a string field stays a string
  EXPECT_EQ(o.at("descname").as_string(), "alice");
  EXPECT_EQ(o.at("state").as_string(), "ready");
  EXPECT_FALSE(o.contains("howfig"));
  EXPECT_FALSE(o.contains("pid"));
  EXPECT_FALSE(o.contains("stop_time"));
  EXPECT_FALSE(o.contains("not_a_field"));
  EXPECT_EQ(o.size(), 9u);
}

TEST(JobToJson, KeepsAnUnparsableNumberAsAString) {
  auto o = job_to_json({{"id", "7"}, {"port", "abc"}, {"start_time", "soon"}});
  EXPECT_EQ(o.at("port").as_string(), "abc");
  EXPECT_EQ(o.at("start_time").as_string(), "soon");
}

TEST(DescprodConfigJson, MatchesPythonJsonDumpsIndent2Exactly) {
  job_record r = {{"id", "42"},
                  {"descname", "alice"},
                  {"jobtype", "mysleep"},
                  {"config", "10"},
                  {"howfig", ""},
                  {"archive", "0"},
                  {"create_time", "1700000000.75"},
                  {"progress", "Running. I'm awake"},
                  {"pid", ""},
                  {"state", "running"},
                  {"attempt", "1"}};
  EXPECT_EQ(descprod_config_json(r),
            "{\n"
            "  \"id\": 42,\n"
            "  \"descname\": \"alice\",\n"
            "  \"jobtype\": \"mysleep\",\n"
            "  \"config\": \"10\",\n"
            "  \"howfig\": \"\",\n"
            "  \"archive\": 0,\n"
            "  \"create_time\": 1700000000,\n"
            "  \"progress\": \"Running. I'm awake\"\n"
            "}");
}

TEST(DescprodConfigJson, EscapesLikePythonEnsureAscii) {
  // json.dumps({"id": 1, "progress": ...}, indent=2) in Python 3.
  job_record r = {{"id", "1"},
                  {"progress", "I'm \xc3\xbc \xe2\x82\xac \xf0\x9f\x98\x80 \x7f \t\x01 \"q\" \\ /"}};
  EXPECT_EQ(descprod_config_json(r),
            "{\n"
            "  \"id\": 1,\n"
            "  \"progress\": \"I'm \\u00fc \\u20ac \\ud83d\\ude00 \\u007f \\t\\u0001 \\\"q\\\" \\\\ /\"\n"
            "}");
}

TEST(DescprodConfigJson, EmptyRecordIsAnEmptyObject) { EXPECT_EQ(descprod_config_json({}), "{}"); }

// DESCprod's pmb/pmbs howfigs, read as its pmb-submit read them (issue #16 item 8).
TEST(BatchHowfig, FieldsDefaultsAndTheRestAsDescprodReadThem) {
  std::string why;
  auto b = parse_batch_howfig("pmb-30-auto-cpu,ptenv:00:hom", why);
  ASSERT_TRUE(b) << why;
  EXPECT_FALSE(b->subjob);
  EXPECT_EQ(b->minutes, 30);
  EXPECT_EQ(b->qos, "debug");  // auto: debug up to 30 minutes
  EXPECT_EQ(b->constraint, "cpu");
  EXPECT_EQ(b->account, "");
  EXPECT_EQ(b->head, "pmb-30-auto-cpu");
  EXPECT_EQ(b->rest, "ptenv:00:hom");
  EXPECT_TRUE(b->own_allocation());

  b = parse_batch_howfig("pmbs-31", why);
  ASSERT_TRUE(b) << why;
  EXPECT_TRUE(b->subjob);
  EXPECT_EQ(b->qos, "regular");  // auto: regular above 30 minutes
  EXPECT_EQ(b->constraint, "cpu");
  EXPECT_EQ(b->rest, "");

  b = parse_batch_howfig("pmb-600--gpu-m1727,tmax:12.5,x", why);  // a blank QOS is the default
  ASSERT_TRUE(b) << why;
  EXPECT_EQ(b->qos, "regular");
  EXPECT_EQ(b->constraint, "gpu");
  EXPECT_EQ(b->account, "m1727");
  EXPECT_EQ(b->rest, "tmax:12.5,x");

  b = parse_batch_howfig("pmb-5-local", why);
  ASSERT_TRUE(b) << why;
  EXPECT_FALSE(b->own_allocation());
}

TEST(BatchHowfig, OtherHowfigsAreNotBatchAndMalformedOnesSayWhy) {
  std::string why;
  for (const char* h : {"", "ptenv:00:hom", "pmbx-30", "pm-30", "x,pmb-30", "pmb:30"}) {
    EXPECT_FALSE(parse_batch_howfig(h, why)) << h;
    EXPECT_EQ(why, "") << h;
  }
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"pmb", "TMIN must be minutes"},        {"pmb-0", "TMIN must be minutes"},
      {"pmb-x", "TMIN must be minutes"},      {"pmb-10081", "TMIN must be minutes"},
      {"pmb--debug", "TMIN must be minutes"}, {"pmb-30-premium", "QOS must be local, regular, debug or auto"},
      {"pmb-30-debug-a;b", "the constraint"}, {"pmb-30-debug-cpu-m1727$", "the account"},
      {"pmb-30-debug-cpu-m1-x", "at most 5"}, {"pmbs-99999999999999999999", "TMIN must be minutes"}};
  for (const auto& [h, expect] : bad) {
    EXPECT_FALSE(parse_batch_howfig(h, why)) << h;
    EXPECT_NE(why.find(expect), std::string::npos) << h << ": " << why;
  }
}

}  // namespace
}  // namespace descprod
