// The job store's Lua scripts (the sources; store.cpp calls them). The transition table, the state
// names, the key functions and the token fields in the scripts are rendered from C++ at start-up
// (job.cpp's next_state, keys.hpp, accounts.hpp's token_field), so C++ and Redis share one state
// machine and one layout. This store targets a single Redis, not a cluster.
//
// The convention every script follows (docs/architecture.md, Store):
//
//   KEYS  The keys the caller knows, built by core/keys.hpp. First the five every script gets, in
//         this order: queue, leases, events, stats:jobs_by_state, next_job_id (the prelude names
//         them Q, L, EV, SK, NID; store_scripts.hpp's head_keys). Then the script's own, per job a
//         group, starting at KEYS[6]:
//           lease                   {job:<id>, job:<id>:events}, then token:<sha> with a token
//           lease_many              {job:<id>, job:<id>:events} per job, then token:<sha> of each
//                                   job that gets a token, in order
//           start, progress, finish, requeue, cancel, archive, reports
//                                   {job:<id>, job:<id>:events}
//           delete                  {job:<id>, job:<id>:events, job:<id>:log, job:<id>:children}
//           create                  user:<owner>:jobs, then {job:<parent>, job:<parent>:children}
//                                   of each job that has a parent, in order
//           recount_init, recount_step   none
//           restore_leases          {job:<id>, job:<id>:events} per job
//         An absent key is left out, never passed as '': a Redis ACL user limited to the prefix
//         (~descprod:*) is refused any declared key outside it.
//   Fence Every call also carries the fence (store.hpp, set_fence): the last ARGV the caller's
//         leader epoch ('' for none) and, with an epoch, the epoch key as the last KEY; the first
//         lines of every script check it and take both out, so the layout below is what the body
//         sees.
//   ARGV  ARGV[1] is the key prefix, used only by the prelude's K functions (keys::lua_prelude)
//         for the keys a script derives from data it reads: the new jobs' keys (their IDs come
//         from next_job_id), the owner's job index and the parent's children set a job names, the
//         token a job's token_sha names, the job IDs a recount walks. The values follow, laid out
//         as written above each script; no value is ever pasted into the code.
//   Answer {'ok', state, attempt, worker[, job as field/value list]} or {'err', <refusal>, state},
//         <refusal> one of store.hpp's `refusal` names (store.cpp parses it in one place; a word it
//         does not know is an error). create answers {'ok', first ID, last ID, time} or
//         {'err', 'bad_parent', parent}; recount_init {'ok', 'started'|'rebuilding'|'exists'},
//         recount_step {'ok', 'more'|'complete', last ID counted}. A
//         batch script answers a list of per-job answers, or a Redis error reply ({err = ...})
//         when Redis cannot write at all.
//   Prelude  Every script is: the key functions (P, K), the head keys, the state tables (NEXT,
//         FINISH_FROM, FINISH_TO, TERMINAL, STATES, and S: S.ready is 'ready', an unknown name an
//         error), the token fields (TF, job_scope), the shared functions and the batchable
//         operations; then the body as main(), then flush_counts() (the state counts).
//         State names in the Lua are S.<name> or come from NEXT; none is written by hand.
#include "core/store_scripts.hpp"

#include "core/accounts.hpp"
#include "core/job.hpp"
#include "core/store.hpp"

namespace descprod {

namespace {

using namespace store_lua;

std::string quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string lua_state_tables() {
  std::string out = "local NEXT = {\n";
  for (auto s : all_job_states()) {
    out += "  [" + quoted(to_string(s)) + "] = {";
    for (auto e : {job_event::lease, job_event::claim, job_event::start, job_event::requeue,
                   job_event::cancel, job_event::lose, job_event::release, job_event::unblock}) {
      if (auto n = next_state(s, e)) out += "[" + quoted(to_string(e)) + "]=" + quoted(to_string(*n)) + ",";
    }
    out += "},\n";
  }
  out += "}\nlocal FINISH_FROM = {";
  for (auto s : all_job_states())
    if (next_state(s, job_event::finish, job_state::done)) out += "[" + quoted(to_string(s)) + "]=true,";
  out += "}\nlocal FINISH_TO = {";
  for (auto s : all_job_states())
    if (next_state(job_state::running, job_event::finish, s)) out += "[" + quoted(to_string(s)) + "]=true,";
  out += "}\nlocal TERMINAL = {";
  for (auto s : all_job_states())
    if (is_terminal(s)) out += "[" + quoted(to_string(s)) + "]=true,";
  out += "}\nlocal STATES = {";
  for (auto s : all_job_states()) out += quoted(to_string(s)) + ",";
  out += "}\n-- S.<state>: the name of a state; a name the C++ table does not have is an error.\nlocal S = {";
  for (auto s : all_job_states()) out += std::string(to_string(s)) + "=" + quoted(to_string(s)) + ",";
  out += "}\nsetmetatable(S, {__index = function(_, k) error('unknown job state ' .. tostring(k)) end})\n";
  return out;
}

std::string lua_find_fields() {
  std::string out = "local FIND_FIELDS = {";
  for (auto f : find_fields) out += quoted(f) + ",";
  return out + "}\n";
}

std::string lua_token_fields() {
  using namespace token_field;
  std::string out = "local TF = {";
  for (auto f : {owner, scope, created, expires, label, pools, read_only})
    out += std::string(f) + "=" + quoted(f) + ",";
  out += "}\nlocal function job_scope(id) return " + quoted(job_token_scope("")) + " .. id end\n";
  return out;
}

std::string lua_head_keys() {
  return "local Q, L, EV, SK, NID = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]\n"
         "-- The ended jobs whose dependents wait for their release (store.hpp, deps_release).\n"
         "local DE = K.deps_ended\n"
         "-- A job in a script: its ID and the KEYS group at i (its hash, its stream).\n"
         "local function job_at(id, i) return {id = id, key = KEYS[i], events = KEYS[i + 1]} end\n";
}

// First in every script: the fence (store.hpp, set_fence). The last ARGV is the leader epoch the
// caller holds, '' for callers that are not the daemon; with an epoch the last KEY is the epoch
// key. Both are taken off the ends (no shift of a batch's arguments) before anything else reads
// KEYS or ARGV, so the scripts below see the layout written above. A stale epoch changes nothing.
const char* fence = R"LUA(local FENCE = table.remove(ARGV) or ''
if FENCE ~= '' then
  local epoch_key = table.remove(KEYS)
  local now_epoch = redis.call('GET', epoch_key)
  if now_epoch ~= FENCE then
    return redis.error_reply('FENCED this daemon no longer leads: its epoch is ' .. FENCE ..
      ', the lead is at epoch ' .. tostring(now_epoch or 'none'))
  end
end
)LUA";

// Shared by every script, after the rendered tables.
const char* shared = R"LUA(
-- What a completed recount has derived from the jobs (recount_init, recount_step): '2' = the
-- state counts, the owners' pending sets and their Active and find indexes. Raised when a recount comes to
-- derive more, so that a store written before gets it.
local DERIVED = '2'
local function now_s()
  local t = redis.call('TIME')
  return string.format('%d.%06d', tonumber(t[1]), tonumber(t[2]))
end
-- The job's own stream is written with pcall: a broken key there (not a stream) must not stop the
-- transition, nor, in a batch, the transitions of other jobs.
local function emit(J, owner, kind, state, progress, attempt, t)
  redis.pcall('XADD', J.events, 'MAXLEN', '~', 1000, '*',
    'type', kind, 'state', state, 'progress', progress, 'attempt', attempt, 'time', t)
  redis.call('XADD', EV, 'MAXLEN', '~', 100000, '*', 'id', J.id, 'owner', owner,
    'type', kind, 'state', state, 'progress', progress, 'attempt', attempt, 'time', t)
end
-- A job's own stream is created at its first event after submission, not at submit: a queued job
-- then has one key fewer (about a third of its memory), and its lease touches no cold stream. The
-- first write puts the submission's event in first, with the ID its create_time gives, so the
-- stream reads as if written at submit; readers of a job with no stream show that one event from
-- the hash (store.hpp, submit_event_entry). ct: the job's create_time when the caller has it.
local function open_stream(J, ct)
  if redis.call('EXISTS', J.events) == 1 then return end
  ct = ct or redis.call('HGET', J.key, 'create_time')
  local s, us = string.match(ct or '', '^(%d+)%.(%d+)$')
  if not s then return end
  local ms = string.format('%d-0', tonumber(s) * 1000 + math.floor(tonumber(us) / 1000))
  redis.pcall('XADD', J.events, 'MAXLEN', '~', 1000, ms, 'type', 'transition', 'state', S.ready,
    'progress', 'Ready.', 'attempt', '1', 'time', ct)
end
-- Loads state, attempt, worker and owner, and checks a worker event against them.
local function load(J)
  local v = redis.call('HMGET', J.key, 'state', 'attempt', 'worker', 'descname', 'message', 'max_attempts', 'cancel_requested')
  if not v[1] then return nil end
  return {state = v[1], attempt = v[2] or '0', worker = v[3] or '', owner = v[4] or '',
          message = v[5] or '', max_attempts = v[6] or '1', cancel = v[7] or '0'}
end
-- Jobs by state (SK): every script that changes a job's state moves one count from the old state
-- to the new one (n jobs for create). Counting is on once the hash holds its S.ready field
-- (recount_init writes every state); while a recount runs, its '_rebuild_upto' field is the last
-- job ID counted, and only jobs up to it are counted here (the recount counts the rest as it
-- reaches them).
-- Read once per script (only recount_init and recount_step, scripts of their own, change them),
-- and the deltas summed per state and written by flush_counts() when the script ends: a batch of
-- N transitions makes one HINCRBY per state it touched, not 2N.
local SKV = nil
local DELTA = {}
local function count(id, from, to, n)
  if SKV == nil then
    local v = redis.call('HMGET', SK, S.ready, '_rebuild_upto')
    SKV = {on = v[1] and true or false, upto = v[2] and tonumber(v[2]) or nil}
  end
  if not SKV.on then return end
  if SKV.upto and tonumber(id) > SKV.upto then return end
  n = n or 1
  if from then DELTA[from] = (DELTA[from] or 0) - n end
  if to then DELTA[to] = (DELTA[to] or 0) + n end
end
-- An owner's held and waiting jobs (K.user_pending), which max_queued counts with its ready ones:
-- every script that moves a job into or out of held or waiting calls this beside count().
local function pending(id, owner, from, to)
  if owner == nil or owner == '' then return end
  local was = from == S.held or from == S.waiting
  local is = to == S.held or to == S.waiting
  if was and not is then
    redis.call('ZREM', K.user_pending(owner), id)
  elseif is and not was then
    redis.call('ZADD', K.user_pending(owner), id, id)
  end
end
-- The owner's find index (K.user_find: job ID → the job's fields a search reads, FIND_FIELDS in
-- order, joined by US, \031; store.hpp, find_fields): GET /api/jobs scans an owner's jobs with one
-- HMGET of it per chunk of IDs instead of one per job. Every script that changes one of those
-- fields of a job changes its entry in the same call (find_set, with the values it wrote). Only
-- the last field (progress) may hold US; the others have it replaced by a space.
local US = '\031'
local NF = #FIND_FIELDS
local FI = {}
for i, f in ipairs(FIND_FIELDS) do FI[f] = i end
local function find_clean(i, x)
  if i < NF and string.find(x, US, 1, true) then return (string.gsub(x, US, ' ')) end
  return x
end
-- An entry from field values (name → value; the others empty).
local function find_entry(v)
  local parts = {}
  for i, f in ipairs(FIND_FIELDS) do parts[i] = find_clean(i, v[f] or '') end
  return table.concat(parts, US)
end
-- Sets some fields (name → value) of a job's entry. A job without one (of a store written before
-- the index, which the recount has not reached yet) is left to the recount.
local function find_set(owner, id, ch)
  if owner == nil or owner == '' then return end
  local key = K.user_find(owner)
  local e = redis.call('HGET', key, id)
  if not e then return end
  local parts, at = {}, 1
  for i = 1, NF - 1 do
    local s = string.find(e, US, at, true)
    if s then
      parts[i] = string.sub(e, at, s - 1)
      at = s + 1
    else
      parts[i] = string.sub(e, at)
      at = #e + 1
    end
  end
  parts[NF] = string.sub(e, at)
  for f, x in pairs(ch) do
    local i = FI[f]
    parts[i] = find_clean(i, x)
  end
  redis.call('HSET', key, id, table.concat(parts, US))
end
-- The whole entry, from the job's hash.
local function find_write(id)
  local v = redis.call('HMGET', K.job(id), 'descname', unpack(FIND_FIELDS))
  local owner = v[1]
  if not owner or owner == '' then return end
  local h = {}
  for i, f in ipairs(FIND_FIELDS) do h[f] = v[i + 1] or '' end
  redis.call('HSET', K.user_find(owner), id, find_entry(h))
end
-- A job's entries in its owner's Active index and find index, from its hash: for the jobs of a
-- store written before them (recount_step) and imported jobs.
local function derive(id, owner)
  if owner == nil or owner == '' then return end
  if redis.call('HGET', K.job(id), 'archive') == '1' then
    redis.call('ZREM', K.user_active(owner), id)
  else
    redis.call('ZADD', K.user_active(owner), id, id)
  end
  find_write(id)
end
local function flush_counts()
  for s, d in pairs(DELTA) do
    if d ~= 0 then redis.call('HINCRBY', SK, s, d) end
  end
end
-- A job's DESCPROD_TOKEN (its sha in the job's token_sha field) lives as long as the attempt it
-- was made for: every transition that ends the attempt (finish, requeue, lost, cancel, delete)
-- deletes it, so it can no longer read the job nor create children.
local function revoke_job_token(J)
  local sha = redis.call('HGET', J.key, 'token_sha')
  if sha and sha ~= '' then
    redis.call('DEL', K.token(sha))
    redis.call('HDEL', J.key, 'token_sha')
  end
end
local function stale(j, attempt, worker)
  if attempt ~= '' and j.attempt ~= attempt then return true end
  if worker ~= '' and j.worker ~= worker then return true end
  return false
end
-- Every transition into a terminal state calls ended(): a job that others wait for (its
-- :dependents hash exists) goes into DE with the state it ended in, and the daemon's release
-- script (deps_release) hands its dependents on in batches, so a job with 100,000 dependents
-- makes no long script here.
local function ended(J, state)
  if redis.call('EXISTS', K.job_dependents(J.id)) == 1 then redis.call('HSET', DE, J.id, state) end
end
-- A job that is not on the queue at its creation (waiting, held, cancelled) gets its own stream
-- at once, holding its real first event (a ready job's stream waits for its first transition:
-- open_stream).
local function create_event(J, owner, state, progress, t)
  redis.pcall('XADD', J.events, 'MAXLEN', '~', 1000, '*', 'type', 'transition', 'state', state,
    'progress', progress, 'attempt', '1', 'time', t)
  redis.call('XADD', EV, 'MAXLEN', '~', 100000, '*', 'id', J.id, 'owner', owner, 'type', 'transition',
    'state', state, 'progress', progress, 'attempt', '1', 'time', t)
end
)LUA";

// The transitions a daemon applies many of at a time, as functions of their arguments and the
// script's time t: the one-job scripts call one, the batch scripts (lease_many, reports) loop.
const char* ops = R"LUA(
-- lease (the daemon: ready -> dispatched) or claim (descprod-start-job: ready or held ->
-- dispatched), per `event`, for `worker`, off the queue, into the leases set; with a token
-- (the daemon's dispatch, the gateway's claim) also the job-scoped token the job's process gets
-- as DESCPROD_TOKEN, at key tk (token_write_commands in accounts.cpp writes the other tokens, with
-- the same fields TF). Returns the job as leased (one HGETALL, no second read).
local function op_lease(J, tk, worker, lease_s, token_sha, token_ttl, t, event)
  local flat = redis.call('HGETALL', J.key)
  if #flat == 0 then return {'err', 'missing', ''} end
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  local ns = NEXT[h.state] and NEXT[h.state][event]
  if not ns then return {'err', 'illegal', h.state or ''} end
  local attempt, owner = h.attempt or '0', h.descname or ''
  redis.call('HSET', J.key, 'state', ns, 'worker', worker, 'dispatch_time', t, 'update_time', t)
  find_set(owner, J.id, {state = ns})
  redis.call('ZREM', Q, J.id)
  redis.call('ZADD', L, string.format('%.3f', tonumber(t) + tonumber(lease_s)), J.id)
  count(J.id, h.state, ns)
  pending(J.id, owner, h.state, ns)
  open_stream(J, h.create_time)
  emit(J, owner, 'transition', ns, 'Ready.', attempt, t)
  if h.token_sha and h.token_sha ~= '' then
    -- A token of an earlier attempt that is somehow still alive: it dies now.
    redis.call('DEL', K.token(h.token_sha))
    redis.call('HDEL', J.key, 'token_sha')
    h.token_sha = nil
  end
  if token_sha and token_sha ~= '' then
    local ttl = tonumber(token_ttl)
    local now = math.floor(tonumber(t))
    redis.call('HSET', tk, TF.owner, owner, TF.scope, job_scope(J.id), TF.created,
      string.format('%d', now), TF.expires, string.format('%d', now + ttl))
    redis.call('EXPIRE', tk, ttl)
    -- The job remembers its token's hash (never shown by the API), so the transition that ends
    -- the attempt can revoke it.
    redis.call('HSET', J.key, 'token_sha', token_sha)
    h.token_sha = token_sha
  end
  h.state, h.worker, h.dispatch_time, h.update_time = ns, worker, t, t
  local out = {}
  for k, v in pairs(h) do out[#out + 1] = k; out[#out + 1] = v end
  return {'ok', ns, attempt, worker, out}
end
-- In a batch, one job's error (a broken key: its hash not a hash, say) is that job's result,
-- {'err', 'error', message}, not the end of the call. Each op reads and checks before it writes,
-- so a job refused this way is left as it was.
-- Except when Redis itself cannot serve (MISCONF: it refuses writes; the codes are redis.hpp's
-- "Redis unavailable"): then no job of the batch can be written, and the batch scripts answer
-- with that error as a whole ({err = ...}, code kept), so the caller holds the batch and retries
-- instead of taking every job's refusal as final.
local UNAVAILABLE_CODES = {LOADING = true, BUSY = true, MISCONF = true, MASTERDOWN = true,
  READONLY = true, TRYAGAIN = true, CLUSTERDOWN = true, NOREPLICAS = true}
local UNAVAILABLE = nil
local function guarded(op, ...)
  local ok, res = pcall(op, ...)
  if ok then return res end
  local msg = res
  if type(res) == 'table' then msg = res.err or 'error' end
  msg = tostring(msg)
  local code = string.match(msg, '^(%u+) ') or string.match(msg, '^[^ ]*: (%u+) ')
  if code and UNAVAILABLE_CODES[code] then UNAVAILABLE = msg end
  return {'err', 'error', msg}
end
local function op_start(J, attempt, worker, host, rundir, pid, t)
  local j = load(J)
  if not j then return {'err', 'missing', ''} end
  if stale(j, attempt, worker) then return {'err', 'stale', j.state} end
  local ns = NEXT[j.state] and NEXT[j.state]['start']
  if not ns then return {'err', 'illegal', j.state} end
  local progress = 'Running.'
  if j.message ~= '' then progress = 'Running. ' .. j.message end
  redis.call('HSET', J.key, 'state', ns, 'host', host, 'rundir', rundir, 'pid', pid,
    'start_time', t, 'update_time', t, 'progress', progress)
  find_set(j.owner, J.id, {state = ns, start_time = t, progress = progress})
  count(J.id, j.state, ns)
  emit(J, j.owner, 'transition', ns, progress, j.attempt, t)
  return {'ok', ns, j.attempt, j.worker}
end
local function op_progress(J, attempt, worker, message, done, total, t)
  local j = load(J)
  if not j then return {'err', 'missing', ''} end
  if stale(j, attempt, worker) then return {'err', 'stale', j.state} end
  if j.state ~= S.running then return {'err', 'illegal', j.state} end
  local progress = 'Running.'
  if message ~= '' then progress = 'Running. ' .. message end
  if done ~= '' then
    redis.call('HSET', J.key, 'message', message, 'progress', progress, 'update_time', t,
      'done_count', done, 'total_count', total)
  else
    redis.call('HSET', J.key, 'message', message, 'progress', progress, 'update_time', t)
  end
  find_set(j.owner, J.id, {progress = progress})
  emit(J, j.owner, 'progress', j.state, progress, j.attempt, t)
  return {'ok', j.state, j.attempt, j.worker}
end
-- log: a piece of the job's log, in the order the worker wrote it (docs/protocol.md, `log`); J.events
-- is the job's :log stream here. One stream entry per piece, field `text`: lines each ending in a
-- newline. The hash keeps where the stored log stands: log_attempt and log_next (the worker's file
-- offset the next piece of that attempt starts at), log_bytes (stored, against the cap, for the
-- whole job, each entry counting 64 bytes more) and log_capped. A piece already stored is dropped (a resend); one that starts past
-- log_next gets a note of the gap first; a later attempt's first piece a note of the attempt.
local function op_log(J, attempt, worker, offset, nxt, cap, text, worker_capped, ends)
  local v = redis.call('HMGET', J.key, 'attempt', 'worker', 'log_attempt', 'log_next', 'log_bytes', 'log_capped')
  if not v[1] then return {'err', 'missing', ''} end
  if (attempt ~= '' and v[1] ~= attempt) or (worker ~= '' and (v[2] or '') ~= worker) then
    return {'err', 'stale', ''}
  end
  if v[6] == '1' then return {'ok', 'capped'} end
  local stored_next, bytes, cap_n = 0, tonumber(v[5]) or 0, tonumber(cap) or 0
  local head = ''
  if v[3] == attempt then
    stored_next = tonumber(v[4]) or 0
  elseif v[3] then
    head = 'descprod: attempt ' .. attempt .. ' starts here\n'
  end
  local off, nx = tonumber(offset), tonumber(nxt) or 0
  if off then
    if v[3] == attempt and nx <= stored_next and not worker_capped then return {'ok', 'duplicate'} end
    if off < stored_next and ends ~= '' then
      -- A piece sent again after a rewind that overlaps what is stored: only its lines that end
      -- past stored_next.
      local keep, p = 1, 1
      for e in string.gmatch(ends, '[^,]+') do
        if tonumber(e) > stored_next then break end
        local q = string.find(text, '\n', p, true)
        if not q then break end
        keep, p = q + 1, q + 1
      end
      text = string.sub(text, keep)
      off = stored_next
    end
    if off > stored_next then
      head = head .. 'descprod: ' .. (off - stored_next) ..
        ' bytes of this log were lost on the way (the run directory has the whole file)\n'
    end
  else
    nx = stored_next
  end
  local piece = head .. text
  local capped = worker_capped
  -- Each entry counts ENTRY bytes more (its ID and fields), so many tiny pieces cannot hold more
  -- memory than the cap.
  local ENTRY = 64
  if bytes + #piece + ENTRY > cap_n then
    -- Only whole lines, up to the cap.
    local room, cut, p = cap_n - bytes - ENTRY, 0, 1
    while true do
      local q = string.find(piece, '\n', p, true)
      if not q or q > room then break end
      cut, p = q, q + 1
    end
    piece = string.sub(piece, 1, cut)
    capped = true
  end
  if piece ~= '' then bytes = bytes + #piece + ENTRY end
  if capped then
    piece = piece .. 'descprod: the log reached its cap of ' .. cap_n ..
      ' bytes here; the rest is only in the run directory\n'
  end
  if piece ~= '' then redis.call('XADD', J.events, '*', 'text', piece) end
  if capped then
    redis.call('HSET', J.key, 'log_attempt', attempt, 'log_next', nx, 'log_bytes', bytes, 'log_capped', '1')
  else
    redis.call('HSET', J.key, 'log_attempt', attempt, 'log_next', nx, 'log_bytes', bytes)
  end
  return {'ok', 'stored'}
end
local function op_finish(J, attempt, worker, target, rc, prefix, message, t)
  local j = load(J)
  if not j then return {'err', 'missing', ''} end
  if stale(j, attempt, worker) then return {'err', 'stale', j.state} end
  if not FINISH_FROM[j.state] then return {'err', 'illegal', j.state} end
  if not FINISH_TO[target] then return {'err', 'illegal', j.state} end
  if j.cancel == '1' and target ~= S.done then target = S.cancelled; prefix = 'Cancelled' end
  local progress = prefix .. '.'
  if message ~= '' then progress = progress .. ' ' .. message end
  redis.call('HSET', J.key, 'state', target, 'return_status', rc, 'message', message,
    'progress', progress, 'stop_time', t, 'update_time', t)
  find_set(j.owner, J.id, {state = target, progress = progress, stop_time = t})
  redis.call('ZREM', L, J.id)
  revoke_job_token(J)
  count(J.id, j.state, target)
  emit(J, j.owner, 'transition', target, progress, j.attempt, t)
  ended(J, target)
  return {'ok', target, j.attempt, j.worker}
end
)LUA";

// The bodies; above each, its ARGV after the prefix (KEYS: the table at the top of this file).
const char* bodies[s_count] = {
    // create: owner n {jobtype config howfig priority parent max_attempts session hold deps array
    //         array_index sites}*n
    // array: '' (none), '#' (the array whose ID is this call's first job) or the array's ID; the
    // job goes into job:<array>:array and gets fields array and array_index.
    // hold '1': the job is held (no worker takes it until released or claimed). deps: its
    // dependencies, comma-separated, each a job ID or '#k' (the k-th job of this call, k below the
    // job's own place) followed by 'a' (after: once it is done) or 'y' (after_any: once it has
    // ended); e.g. '12a,#1y'. Every named job must exist and be the owner's, checked before any
    // ID is taken, so a call names no job it creates except by '#k' and a cycle cannot form.
    // A new job is waiting while a dependency has not ended, cancelled when an 'after' dependency
    // ended other than done, else held or ready (only ready jobs go on the queue).
    // Answer: {'ok', first, last, time, {state per job}} or {'err', 'bad_parent'|'bad_dep', what}.
    R"LUA(
local owner = ARGV[2]
local n = tonumber(ARGV[3])
local F = 12
local pk = 7  -- the next parent's KEYS group
local deps = {}
for i = 0, n - 1 do
  local b = 4 + i * F
  local parent = ARGV[b + 4]
  if parent ~= '' then
    if redis.call('HGET', KEYS[pk], 'descname') ~= owner then return {'err', 'bad_parent', parent} end
    pk = pk + 2
  end
  local list = {}
  for tok in string.gmatch(ARGV[b + 8], '[^,]+') do
    local ref, kind = string.match(tok, '^(#?%d+)([ay])$')
    if not ref then return {'err', 'bad_dep', tok} end
    local d = {kind = kind}
    if string.sub(ref, 1, 1) == '#' then
      d.k = tonumber(string.sub(ref, 2))
      if d.k < 1 or d.k > i then return {'err', 'bad_dep', ref} end
    else
      d.id = ref
      if redis.call('HGET', K.job(ref), 'descname') ~= owner then return {'err', 'bad_dep', ref} end
    end
    list[#list + 1] = d
  end
  deps[i + 1] = list
end
pk = 7
local last = redis.call('INCRBY', NID, n)
local first = last - n + 1
local t = now_s()
local states = {}
for i = 0, n - 1 do
  local b = 4 + i * F
  local id = string.format('%d', first + i)
  local prio = tonumber(ARGV[b + 3])
  -- Where each dependency stands: ended (met, or the reason to cancel) or not yet (an edge).
  local after, after_any, edges, blocked, seen = {}, {}, {}, nil, {}
  for _, d in ipairs(deps[i + 1]) do
    local did, st
    if d.k then
      did = string.format('%d', first + d.k - 1)
      st = states[d.k]
    else
      did = d.id
      st = redis.call('HGET', K.job(did), 'state')
    end
    -- A job named twice counts once (the first naming's kind): one edge, one count. (Redis's
    -- Lua is 5.1: no goto.)
    if not seen[did] then
      seen[did] = true
      if d.kind == 'a' then after[#after + 1] = did else after_any[#after_any + 1] = did end
      if TERMINAL[st] then
        if d.kind == 'a' and st ~= S.done and not blocked then blocked = {did, st} end
      else
        edges[#edges + 1] = {did, d.kind == 'a' and 'after' or 'after_any'}
      end
    end
  end
  local state, progress = S.ready, 'Ready.'
  if blocked then
    state, progress = S.cancelled, 'Cancelled. Dependency ' .. blocked[1] .. ' ended ' .. blocked[2] .. '.'
  elseif #edges > 0 then
    state, progress = S.waiting, 'Waiting for ' .. #edges .. (#edges == 1 and ' job.' or ' jobs.')
  elseif ARGV[b + 7] == '1' then
    state, progress = S.held, 'Held.'
  end
  states[i + 1] = state
  local f = {'id', id, 'descname', owner, 'jobtype', ARGV[b], 'config', ARGV[b + 1],
             'howfig', ARGV[b + 2], 'priority', ARGV[b + 3], 'max_attempts', ARGV[b + 5],
             'archive', '0', 'attempt', '1', 'state', state, 'progress', progress,
             'create_time', t, 'update_time', t}
  if state == S.ready or state == S.held then f[#f + 1] = 'queued_time'; f[#f + 1] = t end
  if state == S.cancelled then f[#f + 1] = 'stop_time'; f[#f + 1] = t end
  if ARGV[b + 4] ~= '' then
    f[#f + 1] = 'parent'; f[#f + 1] = ARGV[b + 4]
    redis.call('SADD', KEYS[pk + 1], id)
    pk = pk + 2
  end
  if ARGV[b + 6] ~= '' then f[#f + 1] = 'session'; f[#f + 1] = ARGV[b + 6] end
  if ARGV[b + 7] == '1' then f[#f + 1] = 'hold'; f[#f + 1] = '1' end
  if #after > 0 then f[#f + 1] = 'after'; f[#f + 1] = table.concat(after, ',') end
  if #after_any > 0 then f[#f + 1] = 'after_any'; f[#f + 1] = table.concat(after_any, ',') end
  if ARGV[b + 11] ~= '' then f[#f + 1] = 'sites'; f[#f + 1] = ARGV[b + 11] end
  if ARGV[b + 9] ~= '' then
    local aid = ARGV[b + 9]
    if aid == '#' then aid = string.format('%d', first) end
    f[#f + 1] = 'array'; f[#f + 1] = aid
    f[#f + 1] = 'array_index'; f[#f + 1] = ARGV[b + 10]
    redis.call('SADD', K.job_array(aid), id)
  end
  if state == S.waiting then
    f[#f + 1] = 'waiting_for'; f[#f + 1] = string.format('%d', #edges)
    for _, e in ipairs(edges) do redis.call('HSET', K.job_dependents(e[1]), id, e[2]) end
  end
  redis.call('HSET', K.job(id), unpack(f))
  local stop = ''
  if state == S.cancelled then stop = t end
  redis.call('HSET', K.user_find(owner), id, find_entry({state = state, jobtype = ARGV[b], archive = '0',
    create_time = t, stop_time = stop, config = ARGV[b + 1], howfig = ARGV[b + 2], progress = progress}))
  redis.call('ZADD', KEYS[6], id, id)
  redis.call('ZADD', K.user_active(owner), id, id)
  if state == S.ready then
    redis.call('ZADD', Q, string.format('%.0f', (1000 - prio) * 1e12 + first + i), id)
    redis.call('XADD', EV, 'MAXLEN', '~', 100000, '*', 'id', id, 'owner', owner,
      'type', 'transition', 'state', S.ready, 'progress', 'Ready.', 'attempt', '1', 'time', t)
  else
    create_event({id = id, key = K.job(id), events = K.job_events(id)}, owner, state, progress, t)
  end
  count(id, nil, state)
  pending(id, owner, nil, state)
end
return {'ok', string.format('%d', first), string.format('%d', last), t, states}
)LUA",
    // lease: id worker lease_s event(lease|claim) [token_sha256 token_ttl_s]
    // With a token (the daemon's dispatch, the gateway's claim): also writes the job-scoped token
    // the job's process gets as DESCPROD_TOKEN, in the same call.
    R"LUA(
return op_lease(job_at(ARGV[2], 6), KEYS[8], ARGV[3], ARGV[4], ARGV[6], ARGV[7], now_s(), ARGV[5])
)LUA",
    // start: id attempt worker host rundir pid
    R"LUA(
return op_start(job_at(ARGV[2], 6), ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], now_s())
)LUA",
    // progress: id attempt worker message done total
    R"LUA(
return op_progress(job_at(ARGV[2], 6), ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], now_s())
)LUA",
    // finish: id attempt worker target rc prefix message
    R"LUA(
return op_finish(job_at(ARGV[2], 6), ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], now_s())
)LUA",
    // requeue: id attempt worker mode reason
    // A job whose owner asked it to stop (cancel_requested) is cancelled instead, in every mode.
    // mode '0': back to ready as is (never ran); '1': a lost worker, a running job uses up its
    // attempt, a dispatched one gets a new attempt number without using one up; '2': handed back
    // by a draining worker, a running job gets a new attempt number (so its events stay
    // distinguishable) without using one up.
    R"LUA(
local J = job_at(ARGV[2], 6)
local j = load(J)
if not j then return {'err', 'missing', ''} end
if stale(j, ARGV[3], ARGV[4]) then return {'err', 'stale', j.state} end
local ns = NEXT[j.state] and NEXT[j.state]['requeue']
if not ns then return {'err', 'illegal', j.state} end
local t = now_s()
redis.call('ZREM', L, J.id)
revoke_job_token(J)  -- the attempt ends: lost, or a new one gets a new token at its lease
if j.cancel == '1' then
  -- Its owner asked it to stop: it ends here instead of running again.
  local progress = 'Cancelled. It was asked to stop; it was not run again (' .. ARGV[6] .. ')'
  redis.call('HSET', J.key, 'state', S.cancelled, 'progress', progress, 'stop_time', t, 'update_time', t)
  find_set(j.owner, J.id, {state = S.cancelled, progress = progress, stop_time = t})
  count(J.id, j.state, S.cancelled)
  emit(J, j.owner, 'transition', S.cancelled, progress, j.attempt, t)
  ended(J, S.cancelled)
  return {'ok', S.cancelled, j.attempt, j.worker}
end
local attempt = tonumber(j.attempt)
if (ARGV[5] == '2' and j.state == S.running) or (ARGV[5] == '1' and j.state == S.dispatched) then
  -- Handed back while running; or leased to a worker that is gone, which may have started it
  -- (its `started` report lost with a daemon that stopped): either way the next run gets its own
  -- attempt number, so no two runs share one, and it costs the job no attempt.
  redis.call('HSET', J.key, 'max_attempts', string.format('%d', tonumber(j.max_attempts) + 1))
  attempt = attempt + 1
elseif ARGV[5] == '1' and j.state == S.running then
  if attempt >= tonumber(j.max_attempts) then
    local lost = NEXT[j.state]['lose']
    local progress = 'Lost. ' .. ARGV[6]
    redis.call('HSET', J.key, 'state', lost, 'progress', progress, 'stop_time', t, 'update_time', t)
    find_set(j.owner, J.id, {state = lost, progress = progress, stop_time = t})
    count(J.id, j.state, lost)
    emit(J, j.owner, 'transition', lost, progress, j.attempt, t)
    ended(J, lost)
    return {'ok', lost, j.attempt, j.worker}
  end
  attempt = attempt + 1
end
local a = string.format('%d', attempt)
redis.call('HDEL', J.key, 'worker', 'host', 'pid', 'rundir', 'start_time', 'dispatch_time', 'message', 'done_count', 'total_count')
redis.call('HSET', J.key, 'state', ns, 'attempt', a, 'progress', 'Ready.', 'queued_time', t, 'update_time', t)
find_set(j.owner, J.id, {state = ns, progress = 'Ready.', start_time = ''})
local prio = tonumber(redis.call('HGET', J.key, 'priority') or '0')
redis.call('ZADD', Q, string.format('%.0f', (1000 - prio) * 1e12 + tonumber(J.id)), J.id)
count(J.id, j.state, ns)
emit(J, j.owner, 'requeue', ns, 'Ready. ' .. ARGV[6], a, t)
return {'ok', ns, a, ''}
)LUA",
    // cancel: id by
    R"LUA(
local J = job_at(ARGV[2], 6)
local j = load(J)
if not j then return {'err', 'missing', ''} end
local ns = NEXT[j.state] and NEXT[j.state]['cancel']
if not ns then return {'err', 'terminal', j.state} end
local t = now_s()
if j.state == S.ready or j.state == S.held or j.state == S.waiting then
  -- Not given to any worker: cancelled at once. A waiting job's entries in its dependencies'
  -- :dependents stay; the release script passes over a job that is no longer waiting.
  revoke_job_token(J)
  local progress = 'Cancelled. Cancelled by ' .. ARGV[3] .. ' before it started.'
  redis.call('HSET', J.key, 'state', ns, 'progress', progress, 'cancel_requested', '1', 'stop_time', t, 'update_time', t)
  find_set(j.owner, J.id, {state = ns, progress = progress, stop_time = t})
  redis.call('ZREM', Q, J.id)
  count(J.id, j.state, ns)
  pending(J.id, j.owner, j.state, ns)
  open_stream(J)
  emit(J, j.owner, 'transition', ns, progress, j.attempt, t)
  ended(J, ns)
  return {'ok', ns, j.attempt, ''}
end
redis.call('HSET', J.key, 'cancel_requested', '1', 'update_time', t)
-- The running attempt is being stopped: its token is reduced to reading the job and reporting
-- how the run ended (a claimed job's runner reports its end through the gateway); it creates no
-- more children. It is deleted when the job reaches its terminal state.
local sha = redis.call('HGET', J.key, 'token_sha')
if sha and sha ~= '' and redis.call('EXISTS', K.token(sha)) == 1 then
  redis.call('HSET', K.token(sha), TF.read_only, '1')
end
emit(J, j.owner, 'cancel_requested', j.state, 'Cancel requested by ' .. ARGV[3] .. '.', j.attempt, t)
return {'ok', 'cancel_requested', j.attempt, j.worker}
)LUA",
    // archive: id flag(0|1)
    R"LUA(
local J = job_at(ARGV[2], 6)
local j = load(J)
if not j then return {'err', 'missing', ''} end
local old = redis.call('HGET', J.key, 'archive') or '0'
-- The owner's Active view (K.user_active), written also when the flag stands (it heals an index
-- a crash left behind).
if ARGV[3] == '1' then
  redis.call('ZREM', K.user_active(j.owner), J.id)
else
  redis.call('ZADD', K.user_active(j.owner), J.id, J.id)
end
find_set(j.owner, J.id, {archive = ARGV[3]})
if old ~= ARGV[3] then
  redis.call('HSET', J.key, 'archive', ARGV[3])
  local kind = 'archive'
  if ARGV[3] == '0' then kind = 'unarchive' end
  open_stream(J)
  emit(J, j.owner, kind, j.state, redis.call('HGET', J.key, 'progress') or '', j.attempt, now_s())
end
return {'ok', j.state, j.attempt, j.worker}
)LUA",
    // delete: id
    R"LUA(
local J = job_at(ARGV[2], 6)
local j = load(J)
if not j then return {'err', 'missing', ''} end
if not TERMINAL[j.state] then return {'err', 'active', j.state} end
local parent = redis.call('HGET', J.key, 'parent')
local array = redis.call('HGET', J.key, 'array')
if array and array ~= '' then redis.call('SREM', K.job_array(array), J.id) end
revoke_job_token(J)
redis.call('DEL', J.key, J.events, KEYS[8], KEYS[9])
-- Its edges to its dependents go with it, unless they are still to be handed on (DE): the release
-- script deletes them then.
if redis.call('HEXISTS', DE, J.id) == 0 then redis.call('DEL', K.job_dependents(J.id)) end
redis.call('ZREM', K.user_jobs(j.owner), J.id)
redis.call('ZREM', K.user_active(j.owner), J.id)
redis.call('HDEL', K.user_find(j.owner), J.id)
redis.call('ZREM', Q, J.id)
redis.call('ZREM', L, J.id)
if parent and parent ~= '' then redis.call('SREM', K.job_children(parent), J.id) end
count(J.id, j.state, nil)
pending(J.id, j.owner, j.state, nil)
redis.call('XADD', EV, 'MAXLEN', '~', 100000, '*', 'id', J.id, 'owner', j.owner,
  'type', 'deleted', 'state', j.state, 'progress', '', 'attempt', j.attempt, 'time', now_s())
return {'ok', j.state, j.attempt, j.worker}
)LUA",
    // recount_init: force(0|1) now
    // Starts a recount when the counts do not exist yet, when they were built by a recount that
    // derived less than this one does (their '_derived' mark is not DERIVED: a store from before
    // the owners' Active and find indexes), or always, with force: every state's count 0, and the recount's
    // cursor at job ID 0. An unfinished recount is left to go on.
    R"LUA(
local exists = redis.call('HEXISTS', SK, S.ready) == 1
if exists and ARGV[2] ~= '1' then
  if redis.call('HEXISTS', SK, '_rebuild_upto') == 1 then return {'ok', 'rebuilding'} end
  if redis.call('HGET', SK, '_derived') == DERIVED then return {'ok', 'exists'} end
end
redis.call('DEL', SK)
for _, s in ipairs(STATES) do redis.call('HSET', SK, s, '0') end
redis.call('HSET', SK, '_rebuild_upto', '0', '_rebuild_started', ARGV[3])
return {'ok', 'started'}
)LUA",
    // recount_step: batch
    // Counts the states of the next `batch` job IDs after the cursor, up to the ID counter as it
    // is now; past the counter the recount is over (the cursor field goes, the '_derived' mark is
    // written). Jobs up to the cursor are counted by the transition scripts from then on (count()
    // above), so a job is counted exactly once whatever runs meanwhile. Several gateways may step
    // the same recount. It also writes each job into the sets derived from it that a store from
    // before them lacks: its owner's pending set, Active index and find index (the scripts keep
    // them from then on; adding a member there already, or removing one absent, changes nothing).
    R"LUA(
local c = redis.call('HGET', SK, '_rebuild_upto')
if not c then return {'ok', 'complete', '0'} end
local last = tonumber(redis.call('GET', NID) or '0')
local from = tonumber(c) + 1
local to = math.min(last, tonumber(c) + tonumber(ARGV[2]))
for id = from, to do
  local sid = string.format('%d', id)
  local v = redis.call('HMGET', K.job(sid), 'state', 'descname')
  local s = v[1]
  if s then
    redis.call('HINCRBY', SK, s, 1)
    pending(sid, v[2], nil, s)
    derive(sid, v[2])
  end
end
if to >= last then
  redis.call('HDEL', SK, '_rebuild_upto', '_rebuild_started')
  redis.call('HSET', SK, '_derived', DERIVED)
  return {'ok', 'complete', string.format('%d', last)}
end
redis.call('HSET', SK, '_rebuild_upto', string.format('%d', to))
return {'ok', 'more', string.format('%d', to)}
)LUA",
    // lease_many: lease_s token_ttl_s n {id worker token_sha256}*n
    // The daemon's dispatch of n jobs in one call: each as op_lease, one time for all; a result
    // per job, in order. KEYS: {job, events} per job, then the tokens' keys.
    R"LUA(
local n = tonumber(ARGV[4])
local t = now_s()
local out = {}
local tk = 6 + n * 2  -- the next token's key
for i = 0, n - 1 do
  local b = 5 + i * 3
  local J = job_at(ARGV[b], 6 + i * 2)
  local key = nil
  if ARGV[b + 2] ~= '' then key = KEYS[tk]; tk = tk + 1 end
  out[i + 1] = guarded(op_lease, J, key, ARGV[b + 1], ARGV[2], ARGV[b + 2], ARGV[3], t, 'lease')
  if UNAVAILABLE then return {err = UNAVAILABLE} end
end
return out
)LUA",
    // reports: n {op id attempt worker a b c d e}*n, op 's' start (a host, b rundir, c pid),
    // 'p' progress (a message, b done, c total), 'f' finish (a target, b rc, c prefix, d message),
    // 'l' or 'L' a piece of the log (a offset, b next, c cap, d text, e its lines' end offsets or
    // ''; 'L' the worker stopped at the cap; the job's second key is its :log stream).
    // The workers' reports of one outbox batch, in the order they came; a result per report.
    R"LUA(
local n = tonumber(ARGV[2])
local t = now_s()
local out = {}
for i = 0, n - 1 do
  local b = 3 + i * 9
  local op, attempt, worker = ARGV[b], ARGV[b + 2], ARGV[b + 3]
  local J = job_at(ARGV[b + 1], 6 + i * 2)
  if op == 's' then
    out[i + 1] = guarded(op_start, J, attempt, worker, ARGV[b + 4], ARGV[b + 5], ARGV[b + 6], t)
  elseif op == 'p' then
    out[i + 1] = guarded(op_progress, J, attempt, worker, ARGV[b + 4], ARGV[b + 5], ARGV[b + 6], t)
  elseif op == 'f' then
    out[i + 1] = guarded(op_finish, J, attempt, worker, ARGV[b + 4], ARGV[b + 5], ARGV[b + 6], ARGV[b + 7], t)
  elseif op == 'l' or op == 'L' then
    out[i + 1] = guarded(op_log, J, attempt, worker, ARGV[b + 4], ARGV[b + 5], ARGV[b + 6], ARGV[b + 7], op == 'L',
      ARGV[b + 8])
  else
    out[i + 1] = {'err', 'bad_op', op}
  end
  if UNAVAILABLE then return {err = UNAVAILABLE} end
end
return out
)LUA",
    // release: id by
    // A held job goes to the workers: ready, on the queue. A waiting job created held loses its
    // hold (it becomes ready, not held, when its dependencies are met): answered 'waiting'.
    // Answer: {'ok', state, attempt, '', {'priority', p, 'descname', owner}}; refused 'missing',
    // 'illegal'.
    R"LUA(
local J = job_at(ARGV[2], 6)
local j = load(J)
if not j then return {'err', 'missing', ''} end
local v = redis.call('HMGET', J.key, 'hold', 'priority', 'sites')
local prio = v[2] or '0'
local sites = v[3] or ''
if j.state == S.waiting and v[1] == '1' then
  redis.call('HDEL', J.key, 'hold')
  return {'ok', j.state, j.attempt, '', {'priority', prio, 'descname', j.owner, 'sites', sites}}
end
local ns = NEXT[j.state] and NEXT[j.state]['release']
if not ns then return {'err', 'illegal', j.state} end
local t = now_s()
redis.call('HDEL', J.key, 'hold')
redis.call('HSET', J.key, 'state', ns, 'progress', 'Ready.', 'queued_time', t, 'update_time', t)
find_set(j.owner, J.id, {state = ns, progress = 'Ready.'})
redis.call('ZADD', Q, string.format('%.0f', (1000 - tonumber(prio)) * 1e12 + tonumber(J.id)), J.id)
count(J.id, j.state, ns)
pending(J.id, j.owner, j.state, ns)
emit(J, j.owner, 'transition', ns, 'Ready. Released by ' .. ARGV[3] .. '.', j.attempt, t)
-- The sites go with it to the daemon's queue (a lane of their own; @pin: an allocation of its own).
return {'ok', ns, j.attempt, '', {'priority', prio, 'descname', j.owner, 'sites', sites}}
)LUA",
    // deps_release: budget
    // Hands on the dependents of ended jobs (DE: job ID -> the state it ended in, then where the
    // scan of its :dependents stands), about `budget` dependents a call (HSCAN's COUNT), so that
    // 100,000 dependents of one job are many short scripts and dispatch goes on between them.
    // Each edge handled is marked '<kind>/done' and kept, for the job page's graph. Each dependent still waiting: an 'after' dependency that
    // ended other than done cancels it ('Cancelled. Dependency N ended <state>.'; its own
    // dependents follow, as it enters DE); otherwise its count of unmet dependencies
    // (waiting_for) goes down, and at 0 it becomes ready (on the queue) or, created held, held.
    // A dependent no longer waiting (cancelled meanwhile) is passed over.
    // Answer: {'ok', more (0|1), handled, {id, priority, owner, sites}* of the jobs made ready}.
    R"LUA(
local budget = tonumber(ARGV[2])
local t = now_s()
local out, handled = {}, 0
local function release_one(jid, jst, did, kind)
  local D = {id = did, key = K.job(did), events = K.job_events(did)}
  local v = redis.call('HMGET', D.key, 'state', 'hold', 'descname', 'priority', 'attempt', 'sites')
  if v[1] ~= S.waiting then return end
  local owner, attempt = v[3] or '', v[5] or '1'
  if kind == 'after' and jst ~= S.done then
    local ns = NEXT[S.waiting]['cancel']
    local progress = 'Cancelled. Dependency ' .. jid .. ' ended ' .. jst .. '.'
    redis.call('HSET', D.key, 'state', ns, 'progress', progress, 'stop_time', t, 'update_time', t)
    find_set(owner, did, {state = ns, progress = progress, stop_time = t})
    count(did, S.waiting, ns)
    pending(did, owner, S.waiting, ns)
    emit(D, owner, 'transition', ns, progress, attempt, t)
    ended(D, ns)
    return
  end
  local left = redis.call('HINCRBY', D.key, 'waiting_for', -1)
  if left > 0 then
    local waiting = 'Waiting for ' .. left .. (left == 1 and ' job.' or ' jobs.')
    redis.call('HSET', D.key, 'progress', waiting)
    find_set(owner, did, {progress = waiting})
    return
  end
  local ns, progress = NEXT[S.waiting]['unblock'], 'Ready.'
  if v[2] == '1' then ns, progress = S.held, 'Held.' end
  redis.call('HSET', D.key, 'state', ns, 'progress', progress, 'queued_time', t, 'update_time', t)
  find_set(owner, did, {state = ns, progress = progress})
  if ns == S.ready then
    local prio = v[4] or '0'
    redis.call('ZADD', Q, string.format('%.0f', (1000 - tonumber(prio)) * 1e12 + tonumber(did)), did)
    out[#out + 1] = did; out[#out + 1] = prio; out[#out + 1] = owner; out[#out + 1] = v[6] or ''
  end
  count(did, S.waiting, ns)
  pending(did, owner, S.waiting, ns)
  emit(D, owner, 'transition', ns, progress, attempt, t)
end
while handled < budget do
  local e = redis.call('HRANDFIELD', DE, 1, 'WITHVALUES')
  if #e == 0 then break end
  local jid = e[1]
  local jst, cursor = string.match(e[2], '^(%l+) ?(%d*)$')
  local dk = K.job_dependents(jid)
  local okr, r = false, nil
  if jst then okr, r = pcall(redis.call, 'HSCAN', dk, cursor == '' and '0' or cursor, 'COUNT', budget - handled) end
  handled = handled + 1
  if not okr then
    -- A malformed entry, or its :dependents is not a hash (broken by hand): nothing to hand on.
    redis.call('HDEL', DE, jid)
  else
    local ds = r[2]
    for i = 1, #ds, 2 do
      local did, kind = ds[i], ds[i + 1]
      handled = handled + 1
      if kind == 'after' or kind == 'after_any' then
        -- The edge stays (the job page draws it), marked as handed on: a scan that returns it
        -- again does nothing.
        redis.call('HSET', dk, did, kind .. '/done')
        -- One dependent's broken keys (its hash not a hash) drop that edge, not the batch.
        guarded(release_one, jid, jst, did, kind)
        if UNAVAILABLE then return {err = UNAVAILABLE} end
      end
    end
    if r[1] == '0' then
      redis.call('HDEL', DE, jid)
      -- Deleted before its dependents were handed on: its edges go now.
      if redis.call('EXISTS', K.job(jid)) == 0 then redis.call('DEL', dk) end
    else
      redis.call('HSET', DE, jid, jst .. ' ' .. r[1])
    end
  end
end
local more = redis.call('HLEN', DE) > 0 and '1' or '0'
return {'ok', more, handled, out}
)LUA",
    // import: n {id owner parent state m field value ...(m pairs)}*n
    // Jobs of another system (DESCprod's table) under their own IDs: a job whose ID exists is
    // left as it is ('exists'); otherwise its hash, its owner's index, its parent's children and
    // the state counts are written, and next_job_id is raised to the highest ID imported, so new
    // jobs never take an imported ID. Answer: one 'ok' or 'exists' per job.
    R"LUA(
local n = tonumber(ARGV[2])
local a = 3
local out = {}
local top = tonumber(redis.call('GET', NID) or '0')
for r = 1, n do
  local id, owner, parent, state, m = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], tonumber(ARGV[a + 4])
  local f = {}
  for k = 0, m - 1 do
    f[#f + 1] = ARGV[a + 5 + 2 * k]
    f[#f + 1] = ARGV[a + 6 + 2 * k]
  end
  a = a + 5 + 2 * m
  if not NEXT[state] then return {err = 'import: unknown state ' .. state} end
  if redis.call('EXISTS', K.job(id)) == 1 then
    out[r] = 'exists'
  else
    redis.call('HSET', K.job(id), unpack(f))
    redis.call('ZADD', K.user_jobs(owner), id, id)
    derive(id, owner)
    if parent ~= '' then redis.call('SADD', K.job_children(parent), id) end
    count(id, nil, state)
    pending(id, owner, nil, state)
    if tonumber(id) > top then top = tonumber(id) end
    out[r] = 'ok'
  end
end
if top > tonumber(redis.call('GET', NID) or '0') then redis.call('SET', NID, string.format('%d', top)) end
return out
)LUA",
    // restore_leases: lease_s top n {id worker attempt}*n
    // After Redis comes back with an older data set than the daemon has seen (a crash that lost
    // the last writes of its append-only file, a replica promoted before it caught up), the daemon
    // writes again the leases it holds: a job Redis has as ready at the attempt the daemon leased
    // is leased again to its worker (op_lease), so the worker's reports on it are applied and it
    // is not run a second time. next_job_id is raised to `top` (the highest job ID the daemon has
    // queued), so no ID is handed out twice. Answer per job: the lease's answer; 'missing' (Redis
    // lost the job itself), 'illegal' (Redis has the job in another state or at another attempt:
    // nothing to restore).
    R"LUA(
local n = tonumber(ARGV[4])
local t = now_s()
local out = {}
if tonumber(ARGV[3]) > tonumber(redis.call('GET', NID) or '0') then redis.call('SET', NID, ARGV[3]) end
local function op_restore(J, worker, attempt)
  local j = load(J)
  if not j then return {'err', 'missing', ''} end
  if j.state ~= S.ready or j.attempt ~= attempt then return {'err', 'illegal', j.state} end
  return op_lease(J, nil, worker, ARGV[2], '', '', t, 'lease')
end
for i = 0, n - 1 do
  local b = 5 + i * 3
  out[i + 1] = guarded(op_restore, job_at(ARGV[b], 6 + i * 2), ARGV[b + 1], ARGV[b + 2])
  if UNAVAILABLE then return {err = UNAVAILABLE} end
end
return out
)LUA",
};

}  // namespace

const std::vector<std::string>& store_scripts() {
  static const std::vector<std::string> scripts = [] {
    std::vector<std::string> v;
    auto prelude = std::string(fence) + keys::lua_prelude() + lua_head_keys() + lua_state_tables() +
                   lua_token_fields() + lua_find_fields() + shared + ops;
    // Each body runs as main(); its state counts are written once, after it (flush_counts).
    for (int i = 0; i < s_count; ++i)
      v.push_back(prelude + "local function main()\n" + bodies[i] +
                  "\nend\nlocal result = main()\nflush_counts()\nreturn result\n");
    return v;
  }();
  return scripts;
}

}  // namespace descprod
