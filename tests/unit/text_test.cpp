// sanitize_app_text (core/text.hpp): application text is made safe to print where it enters.
#include <gtest/gtest.h>

#include <string>

#include "core/text.hpp"

namespace descprod {
namespace {

const std::string fffd = "\xEF\xBF\xBD";

TEST(SanitizeAppText, PlainTextAndTabAndUnicodeStayAsTheyAre) {
  EXPECT_EQ(sanitize_app_text("step 3 of 10: ok"), "step 3 of 10: ok");
  EXPECT_EQ(sanitize_app_text("a\tb"), "a\tb");
  EXPECT_EQ(sanitize_app_text("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"),
            "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");
  EXPECT_EQ(sanitize_app_text(""), "");
}

TEST(SanitizeAppText, EveryC0ControlButTabAndDelBecomeTheReplacementCharacter) {
  for (int c = 0; c < 0x20; ++c) {
    std::string in = "a" + std::string(1, static_cast<char>(c)) + "b";
    std::string want = c == '\t' ? in : "a" + fffd + "b";
    EXPECT_EQ(sanitize_app_text(in), want) << "control " << c;
  }
  EXPECT_EQ(sanitize_app_text("a\x7F"
                              "b"),
            "a" + fffd + "b");
}

TEST(SanitizeAppText, TerminalEscapesAreDefused) {
  EXPECT_EQ(sanitize_app_text("\x1B[31mred\x1B[0m"), fffd + "[31mred" + fffd + "[0m");
  EXPECT_EQ(sanitize_app_text("ding\a"), "ding" + fffd);
  EXPECT_EQ(sanitize_app_text("100%\rDone"), "100%" + fffd + "Done");
  // An OSC title change (ESC ] ... BEL) and C1 CSI as UTF-8 (U+009B).
  EXPECT_EQ(sanitize_app_text("\x1B]0;owned\a"), fffd + "]0;owned" + fffd);
  EXPECT_EQ(sanitize_app_text("x\xC2\x9B"
                              "2J"),
            "x" + fffd + "2J");
  EXPECT_EQ(sanitize_app_text("line1\nline2"), "line1" + fffd + "line2");
}

TEST(SanitizeAppText, InvalidUtf8BecomesOneReplacementPerByte) {
  EXPECT_EQ(sanitize_app_text("a\xFF"
                              "b"),
            "a" + fffd + "b");
  EXPECT_EQ(sanitize_app_text("\xC3"), fffd);                                   // truncated sequence
  EXPECT_EQ(sanitize_app_text("\xC0\xAF"), fffd + fffd);                        // overlong '/'
  EXPECT_EQ(sanitize_app_text("\xED\xA0\x80"), fffd + fffd + fffd);             // a surrogate
  EXPECT_EQ(sanitize_app_text("\xF4\x90\x80\x80"), fffd + fffd + fffd + fffd);  // past U+10FFFF
}

TEST(SanitizeAppText, CutAtACharacterBoundaryWithinMaxBytes) {
  EXPECT_EQ(sanitize_app_text("abcdef", 4), "abcd");
  // "é" is two bytes: a cut through it drops it whole.
  EXPECT_EQ(sanitize_app_text("abc\xC3\xA9", 4), "abc");
  // A replacement is three bytes: it does not fit in two.
  EXPECT_EQ(sanitize_app_text("a\x1B", 3), "a");
  EXPECT_EQ(sanitize_app_text("a\x1B", 4), "a" + fffd);
}

TEST(SanitizeAppText, IdempotentAndAlwaysCleanOnEveryByte) {
  std::string all;
  for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
  auto once = sanitize_app_text(all + all);
  EXPECT_EQ(sanitize_app_text(once), once);
  for (unsigned char c : once) {
    EXPECT_FALSE(c < 0x20 && c != '\t') << int(c);
    EXPECT_NE(c, 0x7F);
  }
  // No C1 control survives as UTF-8 either.
  EXPECT_EQ(once.find("\xC2\x80"), std::string::npos);
  EXPECT_EQ(once.find("\xC2\x9F"), std::string::npos);
}

}  // namespace
}  // namespace descprod

namespace descprod {
namespace {

// The stored lists ("12,13", "nersc,slac") are read back with split: empty parts are kept, so a
// malformed list is seen as such by its reader.
TEST(Split, KeepsEveryPartBetweenSeparatorsEmptyOnesIncluded) {
  EXPECT_EQ(split("12,13", ','), (std::vector<std::string>{"12", "13"}));
  EXPECT_EQ(split("a,,b,", ','), (std::vector<std::string>{"a", "", "b", ""}));
  EXPECT_EQ(split("", ','), (std::vector<std::string>{""}));
  EXPECT_EQ(split("x|y", '|'), (std::vector<std::string>{"x", "y"}));
}

}  // namespace
}  // namespace descprod
