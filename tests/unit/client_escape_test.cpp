// Unit tests of the CLI's terminal defence (client/terminal_text.hpp, issue #13 item 8): every
// byte a terminal would act on becomes a visible escape, printable UTF-8 is untouched, and the
// formats that print the server's text (job field lines, tables, watch lines, JSON lines) use it.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>

#include "client/format.hpp"
#include "client/terminal_text.hpp"

namespace descprod::client {
namespace {

// True when `s` holds no C0 control but newline, no DEL, no C1 control (raw or UTF-8 encoded).
bool printable(const std::string& s, bool allow_newline = false) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c == '\n' && allow_newline) continue;
    if (c < 0x20 || c == 0x7F) return false;
    if (c == 0xC2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) < 0xA0) return false;
    if (c >= 0x80 && c < 0xA0 && (i == 0 || static_cast<unsigned char>(s[i - 1]) < 0x80)) return false;
  }
  return true;
}

TEST(ClientEscape, ControlsBecomeVisibleEscapes) {
  EXPECT_EQ(terminal_safe("\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
  EXPECT_EQ(terminal_safe("50%\rDone"), "50%\\x0dDone");
  EXPECT_EQ(terminal_safe("bell\a"), "bell\\x07");
  EXPECT_EQ(terminal_safe("a\bb"), "a\\x08b");
  EXPECT_EQ(terminal_safe("del\x7f"), "del\\x7f");
  EXPECT_EQ(terminal_safe(std::string("nul\0x", 5)), "nul\\x00x");
  EXPECT_EQ(terminal_safe("two\nlines"), "two\\x0alines");
  EXPECT_EQ(terminal_safe("tab\there"), "tab\\x09here");
  // OSC window title, the kind of sequence that also writes to the clipboard.
  EXPECT_EQ(terminal_safe("\x1b]0;owned\x07"), "\\x1b]0;owned\\x07");
}

TEST(ClientEscape, TabAndNewlineAreKeptOnlyWhenAsked) {
  EXPECT_EQ(terminal_safe("a\tb", {.keep_tab = true}), "a\tb");
  EXPECT_EQ(terminal_safe("a\nb", {.keep_tab = true}), "a\\x0ab");
  EXPECT_EQ(terminal_safe("a\nb\x1b", {.keep_newline = true}), "a\nb\\x1b");
}

TEST(ClientEscape, C1ControlsBidiOverridesAndInvalidUtf8AreEscaped) {
  EXPECT_EQ(terminal_safe("\xc2\x9b"
                          "31m"),
            "\\u009b31m");                          // U+009B: CSI
  EXPECT_EQ(terminal_safe("\xc2\x85"), "\\u0085");  // U+0085: NEL
  EXPECT_EQ(terminal_safe("abc\xe2\x80\xae"
                          "txt.exe"),
            "abc\\u202etxt.exe");                         // right-to-left override
  EXPECT_EQ(terminal_safe("\xe2\x81\xa6x"), "\\u2066x");  // left-to-right isolate
  EXPECT_EQ(terminal_safe("raw \x9b"
                          "31m"),
            "raw \\x9b31m");                                             // 8-bit CSI
  EXPECT_EQ(terminal_safe("\xc0\xbb"), "\\xc0\\xbb");                    // overlong
  EXPECT_EQ(terminal_safe("\xed\xa0\x80"), "\\xed\\xa0\\x80");           // surrogate
  EXPECT_EQ(terminal_safe("cut \xe2\x82"), "cut \\xe2\\x82");            // truncated
  EXPECT_EQ(terminal_safe("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // above U+10FFFF
}

TEST(ClientEscape, PrintableTextIsUntouched) {
  for (std::string s : {"", "Running. [3/10] step three", "héllo wörld — ✓ 日本語 🚀", "back\\slash",
                        "\xc2\xa0nbsp", "U+2028 is shown: \xe2\x80\xa8"}) {
    EXPECT_EQ(terminal_safe(s), s);
    EXPECT_EQ(json_terminal_safe(boost::json::serialize(boost::json::string(s))),
              boost::json::serialize(boost::json::string(s)));
  }
}

TEST(ClientEscape, EveryByteValueOnItsOwnComesOutPrintable) {
  for (int c = 0; c < 256; ++c) {
    std::string s(1, static_cast<char>(c));
    EXPECT_TRUE(printable(terminal_safe(s))) << c;
    for (int d = 0x80; d < 0xC0; ++d) {  // and as the lead byte of a two-byte sequence
      std::string t = {static_cast<char>(c), static_cast<char>(d)};
      ASSERT_TRUE(printable(terminal_safe(t))) << c << " " << d;
    }
  }
}

TEST(ClientEscape, JsonLinesStayValidJsonAndPrintable) {
  boost::json::object o;
  o["progress"] = "Running. \x1b[31m\r\a\x7f \xc2\x9b \xe2\x80\xae";
  std::string line = json_terminal_safe(boost::json::serialize(o));
  EXPECT_TRUE(printable(line)) << line;
  auto back = boost::json::parse(line).as_object();
  EXPECT_EQ(back["progress"].as_string(), o["progress"].as_string());
  // Invalid UTF-8 that got into a JSON text becomes U+FFFD, still valid JSON.
  std::string bad = json_terminal_safe("{\"a\":\"x\x9by\"}");
  EXPECT_EQ(bad, "{\"a\":\"x\\ufffdy\"}");
  EXPECT_NO_THROW(boost::json::parse(bad));
}

TEST(ClientEscape, TheFormatsThatPrintServerTextUseIt) {
  boost::json::object job;
  job["id"] = 7;
  job["jobtype"] = "mysleep";
  job["config"] = "1\x1b[2J";
  job["progress"] = "Running. \x1b[31mred\r\a";
  job["host"] = "node\x1b]0;t\x07";
  for (const auto& l : job_field_lines(job, time_style::epoch)) EXPECT_TRUE(printable(l)) << l;
  auto lines = job_field_lines(job, time_style::epoch);
  bool found = false;
  for (const auto& l : lines)
    if (l == "        progress: Running. \\x1b[31mred\\x0d\\x07") found = true;
  EXPECT_TRUE(found);

  auto table = render_table({"ID", "Progress"}, {{"7", "x\x1b[31my"}, {"8", "\r\r\r"}});
  EXPECT_TRUE(printable(table, true)) << table;
  EXPECT_NE(table.find("x\\x1b[31my"), std::string::npos) << table;
  // Columns are measured after escaping: the header's second column starts where the cells do.
  EXPECT_EQ(table.substr(0, table.find('\n')), "ID  Progress");
  EXPECT_EQ(table.substr(table.find('\n') + 1, 4), "7   ");

  auto w = watch_line(7, "run\x1bning", done_total{1, 2}, "[1/2] \x1b[1Aup\a", 0);
  EXPECT_TRUE(printable(w)) << w;
  EXPECT_NE(w.find("\\x1b[1Aup\\x07"), std::string::npos) << w;
  // Cutting to the terminal's width never leaves half an escape's bytes raw.
  for (std::size_t width = 1; width < 80; ++width)
    EXPECT_TRUE(printable(watch_line(7, "running", std::nullopt, "\xe2\x80\xae\x1b\x1b\x1b", width)));
}

}  // namespace
}  // namespace descprod::client
