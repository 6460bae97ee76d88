// How the client prints jobs: DESCprod's field listing (f"{key:>16}: {val}" in JobData.data_names
// order, times as "YYYY-MM-DD HH:MM:SS UTC" as descprod.sdate printed them), the `-o` file of
// descprod-add-job, the job table of descprod-list-jobs, durations as DESCprod's sduration, and the
// lines of descprod-watch. Pure functions; unit-tested.
//
// Thread-safety: pure functions.
#pragma once

#include <boost/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace descprod::client {

// How job times print: DESCprod's UTC date (default) or the integer epoch seconds (--epoch).
enum class time_style { utc, epoch };

// "2024-03-01 12:00:05 UTC" for epoch seconds (the fraction is dropped, as utcfromtimestamp +
// strftime did).
std::string utc_time_text(double epoch_seconds);

// One field's value as DESCprod printed it: integers as integers, times per `style`, strings
// as they are.
std::string field_value_text(std::string_view key, const boost::json::value& v, time_style style);

// The listing of a job: a line f"{prefix}{key:>16}: {val}" for every present field of DESCprod's 18
// in its order, so `progress` comes last (scripts read it with `tail -1`); with `all`, then the
// fields this project added and a `children` summary when the job has children. A configured job
// (it has a jobtype) always lists howfig, empty if absent, as DESCprod's job map held "" there.
// Lines have no trailing newline.
std::vector<std::string> job_field_lines(const boost::json::object& job, time_style style,
                                         std::string_view prefix = "", bool all = false);

// "3 (done 2, running 1)" from the gateway's {"total":3,"done":2,"running":1}.
std::string children_summary(const boost::json::object& children);

// descprod-add-job's -o file: DESCprod's 18 fields that are present, one per line, the quoted key
// right-aligned (`{key:>16}` as its listings, with the quotes), every value a quoted string, times
// as `YYYY-MM-DD HH:MM:SS UTC`; a JSON object still (json.load reads it).
std::string outjson_text(const boost::json::object& job);

// DESCprod's sduration: "M:SS" or "H:MM:SS"; "0:00" for zero or less.
std::string duration_text(double seconds);

// The job's duration for tables: (stop_time, else `now`) − start_time; "" when it never started.
std::string job_duration(const boost::json::object& job, double now);

// A table with a header row: columns left-aligned and padded to their widest cell, two spaces
// apart, trailing spaces removed. `max_width` > 0 cuts each line to that many bytes.
std::string render_table(const std::vector<std::string>& header,
                         const std::vector<std::vector<std::string>>& rows, std::size_t max_width = 0);

// The message of a progress string: DESCprod's state prefix ("Running.", "Done.", "Process
// received signal 9.", ...) removed.
std::string progress_message(std::string_view progress);

// "[done/total]" counts at the start of a message, as the worker parses them.
struct done_total {
  long long done = 0;
  long long total = 0;
};
std::optional<done_total> message_counts(std::string_view message);

// One line of descprod-watch for a job: its ID, state, a bar "[#####-----] done/total" when the
// counts are known, and the message. `width` > 0 cuts the line to that many bytes.
std::string watch_line(long long id, std::string_view state, std::optional<done_total> counts,
                       std::string_view message, std::size_t width = 0);

// Cuts `s` to at most `width` bytes without splitting a UTF-8 sequence.
std::string cut_utf8(std::string_view s, std::size_t width);

}  // namespace descprod::client
