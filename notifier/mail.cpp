// The notifier's mails as text (see mail.hpp).
#include "notifier/mail.hpp"

#include <cstdio>

namespace descprod::notify {

std::string one_line(std::string_view s, std::size_t max_bytes) {
  std::string out;
  out.reserve(std::min(s.size(), max_bytes));
  for (unsigned char c : s) out += (c < 0x20 || c == 0x7f) ? ' ' : static_cast<char>(c);
  std::size_t b = out.find_first_not_of(' ');
  if (b == std::string::npos) return std::string();
  out.erase(0, b);
  while (!out.empty() && out.back() == ' ') out.pop_back();
  if (out.size() > max_bytes) {
    std::size_t n = max_bytes;
    // Back off to the start of a UTF-8 sequence (a continuation byte is 10xxxxxx).
    while (n > 0 && (static_cast<unsigned char>(out[n]) & 0xC0) == 0x80) --n;
    out.resize(n);
    while (!out.empty() && out.back() == ' ') out.pop_back();
  }
  return out;
}

std::string dot_stuff(std::string_view message) {
  std::string out;
  out.reserve(message.size() + message.size() / 32 + 2);
  bool line_start = true;
  for (std::size_t i = 0; i < message.size(); ++i) {
    char c = message[i];
    if (c == '\r' || c == '\n') {
      if (c == '\r' && i + 1 < message.size() && message[i + 1] == '\n') ++i;
      out += "\r\n";
      line_start = true;
      continue;
    }
    if (line_start && c == '.') out += '.';
    out += c;
    line_start = false;
  }
  if (!line_start || out.empty()) out += "\r\n";
  return out;
}

bool is_failure_state(std::string_view state) {
  return state == "failed" || state == "timeout" || state == "killed" || state == "lost";
}

mail failure_mail(std::string_view from, std::string_view to, std::string_view user,
                  const std::vector<failed_job>& listed, long long total, std::string_view base_url,
                  std::size_t max_listed) {
  mail m;
  m.from = one_line(from);
  m.to = one_line(to);
  std::size_t shown = std::min(listed.size(), max_listed);
  if (total < static_cast<long long>(shown)) total = static_cast<long long>(shown);
  if (total == 1 && shown == 1) {
    const auto& j = listed.front();
    m.subject = "DESCprod: job " + one_line(j.id, 20) + " (" + one_line(j.jobtype, 64) + ") " +
                one_line(j.state.empty() ? std::string_view("failed") : std::string_view(j.state), 16);
  } else {
    m.subject = "DESCprod: " + std::to_string(total) + " of your jobs failed";
  }
  std::string b = "Hello " + one_line(user, 64) + ",\n\n";
  b += total == 1 ? std::string("A job of yours has ended without success:\n\n")
                  : std::to_string(total) + " jobs of yours have ended without success:\n\n";
  for (std::size_t i = 0; i < shown; ++i) {
    const auto& j = listed[i];
    std::string id = one_line(j.id, 20);
    b += "Job " + id + " " + one_line(j.jobtype, 64);
    std::string config = one_line(j.config, 120);
    if (!config.empty()) b += " " + config;
    b += ": " + (j.state.empty() ? std::string("failed") : one_line(j.state, 16));
    std::string progress = one_line(j.progress, 200);
    if (!progress.empty()) b += " - " + progress;
    b += "\n  " + std::string(base_url) + "/jobs/" + id + "\n";
  }
  long long more = total - static_cast<long long>(shown);
  if (more > 0)
    b += "\nand " + std::to_string(more) + " more (" + std::string(base_url) + "/?state=failed).\n";
  b += "\nYou get this mail because you asked for e-mail when a job of yours fails; turn it off on " +
       std::string(base_url) + "/tokens.\n";
  m.body = std::move(b);
  return m;
}

std::string render_message(const mail& m, std::time_t now, std::string_view message_id) {
  char date[64];
  std::tm tm{};
  gmtime_r(&now, &tm);
  std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
  std::string out;
  out += "From: " + one_line(m.from) + "\r\n";
  out += "To: " + one_line(m.to) + "\r\n";
  out += "Subject: " + one_line(m.subject, 300) + "\r\n";
  out += std::string("Date: ") + date + "\r\n";
  out += "Message-ID: <" + one_line(message_id, 120) + ">\r\n";
  out += "MIME-Version: 1.0\r\n";
  out += "Content-Type: text/plain; charset=utf-8\r\n";
  out += "Content-Transfer-Encoding: 8bit\r\n";
  out += "Auto-Submitted: auto-generated\r\n";
  out += "\r\n";
  for (std::size_t i = 0; i < m.body.size(); ++i) {
    char c = m.body[i];
    if (c == '\n') out += "\r\n";
    else if (c != '\r') out += c;
  }
  if (out.size() < 2 || out.compare(out.size() - 2, 2, "\r\n") != 0) out += "\r\n";
  return out;
}

std::map<std::string, std::vector<std::string>> failures_by_owner(const redis_reply& entries,
                                                                  std::string& last_id) {
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& e : entries.elements) {
    if (e.elements.size() != 2) continue;
    last_id = e.elements[0].as_string();
    const auto& f = e.elements[1].elements;
    std::string id, owner, type, state;
    for (std::size_t i = 0; i + 1 < f.size(); i += 2) {
      const std::string& k = f[i].str;
      if (k == "id") id = f[i + 1].as_string();
      else if (k == "owner") owner = f[i + 1].as_string();
      else if (k == "type") type = f[i + 1].as_string();
      else if (k == "state") state = f[i + 1].as_string();
    }
    if (type != "transition" || !is_failure_state(state) || id.empty() || owner.empty()) continue;
    if (id.find_first_not_of("0123456789") != std::string::npos) continue;
    out[owner].push_back(id);
  }
  return out;
}

}  // namespace descprod::notify
