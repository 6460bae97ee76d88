// The job store's Lua scripts and their C++ callers. The transition table in the scripts is
// rendered from job.cpp's next_state at start-up, so C++ and Redis share one state machine.
// Scripts build keys from the prefix argument; this store targets a single Redis, not a cluster.
#include "core/store.hpp"

#include <openssl/sha.h>

#include <chrono>
#include <cstdio>
#include <stdexcept>

namespace descprod {

namespace {

std::string lua_transition_table() {
  std::string out = "local NEXT = {\n";
  for (auto s : all_job_states()) {
    out += "  ['" + std::string(to_string(s)) + "'] = {";
    for (auto e : {job_event::lease, job_event::start, job_event::requeue, job_event::cancel,
                   job_event::lose}) {
      if (auto n = next_state(s, e)) {
        out += "['" + std::string(to_string(e)) + "']='" + std::string(to_string(*n)) + "',";
      }
    }
    out += "},\n";
  }
  out += "}\nlocal FINISH_FROM = {";
  for (auto s : all_job_states())
    if (next_state(s, job_event::finish, job_state::done)) out += "['" + std::string(to_string(s)) + "']=true,";
  out += "}\nlocal FINISH_TO = {";
  for (auto s : all_job_states())
    if (next_state(job_state::running, job_event::finish, s)) out += "['" + std::string(to_string(s)) + "']=true,";
  out += "}\n";
  return out;
}

// Shared by every script. ARGV[1] is always the key prefix.
const char* prelude = R"LUA(
local P = ARGV[1]
local function now_s()
  local t = redis.call('TIME')
  return string.format('%d.%06d', tonumber(t[1]), tonumber(t[2]))
end
local function jkey(id) return P .. 'job:' .. id end
-- The job's own stream is written with pcall: a broken key there (not a stream) must not stop the
-- transition, nor, in a batch, the transitions of other jobs.
local function emit(id, owner, kind, state, progress, attempt, t)
  redis.pcall('XADD', jkey(id) .. ':events', 'MAXLEN', '~', 1000, '*',
    'type', kind, 'state', state, 'progress', progress, 'attempt', attempt, 'time', t)
  redis.call('XADD', P .. 'events', 'MAXLEN', '~', 100000, '*', 'id', id, 'owner', owner,
    'type', kind, 'state', state, 'progress', progress, 'attempt', attempt, 'time', t)
end
-- A job's own stream is created at its first event after submission, not at submit: a queued job
-- then has one key fewer (about a third of its memory), and its lease touches no cold stream. The
-- first write puts the submission's event in first, with the ID its create_time gives, so the
-- stream reads as if written at submit; readers of a job with no stream show that one event from
-- the hash (gateway/handler.cpp). ct: the job's create_time when the caller has it.
local function open_stream(id, ct)
  local sk = jkey(id) .. ':events'
  if redis.call('EXISTS', sk) == 1 then return end
  ct = ct or redis.call('HGET', jkey(id), 'create_time')
  local s, us = string.match(ct or '', '^(%d+)%.(%d+)$')
  if not s then return end
  local ms = string.format('%d-0', tonumber(s) * 1000 + math.floor(tonumber(us) / 1000))
  redis.pcall('XADD', sk, 'MAXLEN', '~', 1000, ms, 'type', 'transition', 'state', 'ready',
    'progress', 'Ready.', 'attempt', '1', 'time', ct)
end
-- Loads state, attempt, worker and owner, and checks a worker event against them.
local function load(id)
  local v = redis.call('HMGET', jkey(id), 'state', 'attempt', 'worker', 'descname', 'message', 'max_attempts', 'cancel_requested')
  if not v[1] then return nil end
  return {state = v[1], attempt = v[2] or '0', worker = v[3] or '', owner = v[4] or '',
          message = v[5] or '', max_attempts = v[6] or '1', cancel = v[7] or '0'}
end
-- Jobs by state (P stats:jobs_by_state): every script that changes a job's state moves one
-- count from the old state to the new one (n jobs for create). Counting is on once the hash
-- holds its 'ready' field (recount_init writes every state); while a recount runs, its
-- '_rebuild_upto' field is the last job ID counted, and only jobs up to it are counted here (the
-- recount counts the rest as it reaches them).
local SK = P .. 'stats:jobs_by_state'
-- Read once per script (only recount_init and recount_step, scripts of their own, change them),
-- and the deltas summed per state and written by flush_counts() when the script ends: a batch of
-- N transitions makes one HINCRBY per state it touched, not 2N.
local SKV = nil
local DELTA = {}
local function count(id, from, to, n)
  if SKV == nil then
    local v = redis.call('HMGET', SK, 'ready', '_rebuild_upto')
    SKV = {on = v[1] and true or false, upto = v[2] and tonumber(v[2]) or nil}
  end
  if not SKV.on then return end
  if SKV.upto and tonumber(id) > SKV.upto then return end
  n = n or 1
  if from then DELTA[from] = (DELTA[from] or 0) - n end
  if to then DELTA[to] = (DELTA[to] or 0) + n end
end
local function flush_counts()
  for s, d in pairs(DELTA) do
    if d ~= 0 then redis.call('HINCRBY', SK, s, d) end
  end
end
-- A job's DESCPROD_TOKEN (P token:<sha>, its sha in the job's token_sha field) lives as long as
-- the attempt it was made for: every transition that ends the attempt (finish, requeue, lost,
-- cancel, delete) deletes it, so it can no longer read the job nor create children.
local function revoke_job_token(id)
  local sha = redis.call('HGET', jkey(id), 'token_sha')
  if sha and sha ~= '' then
    redis.call('DEL', P .. 'token:' .. sha)
    redis.call('HDEL', jkey(id), 'token_sha')
  end
end
local function stale(j, attempt, worker)
  if attempt ~= '' and j.attempt ~= attempt then return true end
  if worker ~= '' and j.worker ~= worker then return true end
  return false
end
)LUA";


// The transitions a daemon applies many of at a time, as functions of their arguments and the
// script's time t: the one-job scripts call one, the batch scripts (lease_many, reports) loop.
const char* ops = R"LUA(
-- lease: ready -> dispatched for `worker`, off the queue, into the leases set; with a token
-- (the daemon's dispatch, the gateway's claim) also the job-scoped token the job's process gets
-- as DESCPROD_TOKEN. Returns the job as leased (one HGETALL, no second read).
local function op_lease(id, worker, lease_s, token_sha, token_ttl, t)
  local flat = redis.call('HGETALL', jkey(id))
  if #flat == 0 then return {'err', 'missing', ''} end
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  local ns = NEXT[h.state] and NEXT[h.state]['lease']
  if not ns then return {'err', 'illegal', h.state or ''} end
  local attempt, owner = h.attempt or '0', h.descname or ''
  redis.call('HSET', jkey(id), 'state', ns, 'worker', worker, 'dispatch_time', t, 'update_time', t)
  redis.call('ZREM', P .. 'queue', id)
  redis.call('ZADD', P .. 'leases', string.format('%.3f', tonumber(t) + tonumber(lease_s)), id)
  count(id, h.state, ns)
  open_stream(id, h.create_time)
  emit(id, owner, 'transition', ns, 'Ready.', attempt, t)
  if h.token_sha and h.token_sha ~= '' then
    -- A token of an earlier attempt that is somehow still alive: it dies now.
    redis.call('DEL', P .. 'token:' .. h.token_sha)
    redis.call('HDEL', jkey(id), 'token_sha')
    h.token_sha = nil
  end
  if token_sha and token_sha ~= '' then
    local tk = P .. 'token:' .. token_sha
    local ttl = tonumber(token_ttl)
    local now = math.floor(tonumber(t))
    redis.call('HSET', tk, 'owner', owner, 'scope', 'job:' .. id, 'created', string.format('%d', now),
      'expires', string.format('%d', now + ttl))
    redis.call('EXPIRE', tk, ttl)
    -- The job remembers its token's hash (never shown by the API), so the transition that ends
    -- the attempt can revoke it.
    redis.call('HSET', jkey(id), 'token_sha', token_sha)
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
local function op_start(id, attempt, worker, host, rundir, pid, t)
  local j = load(id)
  if not j then return {'err', 'missing', ''} end
  if stale(j, attempt, worker) then return {'err', 'stale', j.state} end
  local ns = NEXT[j.state] and NEXT[j.state]['start']
  if not ns then return {'err', 'illegal', j.state} end
  local progress = 'Running.'
  if j.message ~= '' then progress = 'Running. ' .. j.message end
  redis.call('HSET', jkey(id), 'state', ns, 'host', host, 'rundir', rundir, 'pid', pid,
    'start_time', t, 'update_time', t, 'progress', progress)
  count(id, j.state, ns)
  emit(id, j.owner, 'transition', ns, progress, j.attempt, t)
  return {'ok', ns, j.attempt, j.worker}
end
local function op_progress(id, attempt, worker, message, done, total, t)
  local j = load(id)
  if not j then return {'err', 'missing', ''} end
  if stale(j, attempt, worker) then return {'err', 'stale', j.state} end
  if j.state ~= 'running' then return {'err', 'illegal', j.state} end
  local progress = 'Running.'
  if message ~= '' then progress = 'Running. ' .. message end
  if done ~= '' then
    redis.call('HSET', jkey(id), 'message', message, 'progress', progress, 'update_time', t,
      'done_count', done, 'total_count', total)
  else
    redis.call('HSET', jkey(id), 'message', message, 'progress', progress, 'update_time', t)
  end
  emit(id, j.owner, 'progress', j.state, progress, j.attempt, t)
  return {'ok', j.state, j.attempt, j.worker}
end
local function op_finish(id, attempt, worker, target, rc, prefix, message, t)
  local j = load(id)
  if not j then return {'err', 'missing', ''} end
  if stale(j, attempt, worker) then return {'err', 'stale', j.state} end
  if not FINISH_FROM[j.state] then return {'err', 'illegal', j.state} end
  if not FINISH_TO[target] then return {'err', 'illegal', j.state} end
  if j.cancel == '1' and target ~= 'done' then target = 'cancelled'; prefix = 'Cancelled' end
  local progress = prefix .. '.'
  if message ~= '' then progress = progress .. ' ' .. message end
  redis.call('HSET', jkey(id), 'state', target, 'return_status', rc, 'message', message,
    'progress', progress, 'stop_time', t, 'update_time', t)
  redis.call('ZREM', P .. 'leases', id)
  revoke_job_token(id)
  count(id, j.state, target)
  emit(id, j.owner, 'transition', target, progress, j.attempt, t)
  return {'ok', target, j.attempt, j.worker}
end
)LUA";

enum script_id {
  s_create, s_lease, s_start, s_progress, s_finish, s_requeue, s_cancel,
  // Added for the gateway's job management.
  s_archive, s_delete,
  // The jobs-by-state counts: start a recount, and count the next batch of job IDs.
  s_recount_init, s_recount_step,
  // Many transitions in one call: the daemon's dispatch, and its outbox's worker reports.
  s_lease_many, s_reports,
  s_count
};

std::string lua_terminal_table() {
  std::string out = "local TERMINAL = {";
  for (auto s : all_job_states())
    if (is_terminal(s)) out += "['" + std::string(to_string(s)) + "']=true,";
  out += "}\nlocal STATES = {";
  for (auto s : all_job_states()) out += "'" + std::string(to_string(s)) + "',";
  out += "}\n";
  return out;
}

const char* bodies[s_count] = {
    // create: P owner n {jobtype config howfig priority parent max_attempts session}*n
    R"LUA(
local owner = ARGV[2]
local n = tonumber(ARGV[3])
local F = 7
for i = 0, n - 1 do
  local parent = ARGV[4 + i * F + 4]
  if parent ~= '' and redis.call('HGET', jkey(parent), 'descname') ~= owner then
    return {'err', 'bad_parent', parent}
  end
end
local last = redis.call('INCRBY', P .. 'next_job_id', n)
local first = last - n + 1
local t = now_s()
for i = 0, n - 1 do
  local b = 4 + i * F
  local id = string.format('%d', first + i)
  local prio = tonumber(ARGV[b + 3])
  local f = {'id', id, 'descname', owner, 'jobtype', ARGV[b], 'config', ARGV[b + 1],
             'howfig', ARGV[b + 2], 'priority', ARGV[b + 3], 'max_attempts', ARGV[b + 5],
             'archive', '0', 'attempt', '1', 'state', 'ready', 'progress', 'Ready.',
             'create_time', t, 'update_time', t, 'queued_time', t}
  if ARGV[b + 4] ~= '' then
    f[#f + 1] = 'parent'; f[#f + 1] = ARGV[b + 4]
    redis.call('SADD', jkey(ARGV[b + 4]) .. ':children', id)
  end
  if ARGV[b + 6] ~= '' then f[#f + 1] = 'session'; f[#f + 1] = ARGV[b + 6] end
  redis.call('HSET', jkey(id), unpack(f))
  redis.call('ZADD', P .. 'queue', string.format('%.0f', (1000 - prio) * 1e12 + first + i), id)
  redis.call('ZADD', P .. 'user:' .. owner .. ':jobs', id, id)
  redis.call('XADD', P .. 'events', 'MAXLEN', '~', 100000, '*', 'id', id, 'owner', owner,
    'type', 'transition', 'state', 'ready', 'progress', 'Ready.', 'attempt', '1', 'time', t)
end
count(first, nil, 'ready', n)
return {'ok', string.format('%d', first), string.format('%d', last), t}
)LUA",
    // lease: P id worker lease_s [token_sha256 token_ttl_s]
    // With a token (the daemon's dispatch, the gateway's claim): also writes the job-scoped token
    // the job's process gets as DESCPROD_TOKEN, in the same call.
    R"LUA(
return op_lease(ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], now_s())
)LUA",
    // start: P id attempt worker host rundir pid
    R"LUA(
return op_start(ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], now_s())
)LUA",
    // progress: P id attempt worker message done total
    R"LUA(
return op_progress(ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], now_s())
)LUA",
    // finish: P id attempt worker target rc prefix message
    R"LUA(
return op_finish(ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], now_s())
)LUA",
    // requeue: P id attempt worker mode reason
    // mode '0': back to ready as is (never ran); '1': a lost worker, a running job uses up its
    // attempt, a dispatched one gets a new attempt number without using one up; '2': handed back
    // by a draining worker, a running job gets a new attempt number (so its events stay
    // distinguishable) without using one up.
    R"LUA(
local id = ARGV[2]
local j = load(id)
if not j then return {'err', 'missing', ''} end
if stale(j, ARGV[3], ARGV[4]) then return {'err', 'stale', j.state} end
if not (NEXT[j.state] and NEXT[j.state]['requeue']) then return {'err', 'illegal', j.state} end
local t = now_s()
redis.call('ZREM', P .. 'leases', id)
revoke_job_token(id)  -- the attempt ends: lost, or a new one gets a new token at its lease
local attempt = tonumber(j.attempt)
if (ARGV[5] == '2' and j.state == 'running') or (ARGV[5] == '1' and j.state == 'dispatched') then
  -- Handed back while running; or leased to a worker that is gone, which may have started it
  -- (its `started` report lost with a daemon that stopped): either way the next run gets its own
  -- attempt number, so no two runs share one, and it costs the job no attempt.
  redis.call('HSET', jkey(id), 'max_attempts', string.format('%d', tonumber(j.max_attempts) + 1))
  attempt = attempt + 1
elseif ARGV[5] == '1' and j.state == 'running' then
  if attempt >= tonumber(j.max_attempts) then
    local progress = 'Lost. ' .. ARGV[6]
    redis.call('HSET', jkey(id), 'state', 'lost', 'progress', progress, 'stop_time', t, 'update_time', t)
    count(id, j.state, 'lost')
    emit(id, j.owner, 'transition', 'lost', progress, j.attempt, t)
    return {'ok', 'lost', j.attempt, j.worker}
  end
  attempt = attempt + 1
end
local a = string.format('%d', attempt)
redis.call('HDEL', jkey(id), 'worker', 'host', 'pid', 'rundir', 'start_time', 'dispatch_time', 'message', 'done_count', 'total_count')
redis.call('HSET', jkey(id), 'state', 'ready', 'attempt', a, 'progress', 'Ready.', 'queued_time', t, 'update_time', t)
local prio = tonumber(redis.call('HGET', jkey(id), 'priority') or '0')
redis.call('ZADD', P .. 'queue', string.format('%.0f', (1000 - prio) * 1e12 + tonumber(id)), id)
count(id, j.state, 'ready')
emit(id, j.owner, 'requeue', 'ready', 'Ready. ' .. ARGV[6], a, t)
return {'ok', 'ready', a, ''}
)LUA",
    // cancel: P id by
    R"LUA(
local id = ARGV[2]
local j = load(id)
if not j then return {'err', 'missing', ''} end
if not (NEXT[j.state] and NEXT[j.state]['cancel']) then return {'err', 'terminal', j.state} end
local t = now_s()
if j.state == 'ready' then
  revoke_job_token(id)
  local progress = 'Cancelled. Cancelled by ' .. ARGV[3] .. ' before it started.'
  redis.call('HSET', jkey(id), 'state', 'cancelled', 'progress', progress, 'cancel_requested', '1', 'stop_time', t, 'update_time', t)
  redis.call('ZREM', P .. 'queue', id)
  count(id, 'ready', 'cancelled')
  open_stream(id)
  emit(id, j.owner, 'transition', 'cancelled', progress, j.attempt, t)
  return {'ok', 'cancelled', j.attempt, ''}
end
redis.call('HSET', jkey(id), 'cancel_requested', '1', 'update_time', t)
-- The running attempt is being stopped: its token is reduced to reading the job and reporting
-- how the run ended (a claimed job's runner reports its end through the gateway); it creates no
-- more children. It is deleted when the job reaches its terminal state.
local sha = redis.call('HGET', jkey(id), 'token_sha')
if sha and sha ~= '' and redis.call('EXISTS', P .. 'token:' .. sha) == 1 then
  redis.call('HSET', P .. 'token:' .. sha, 'read_only', '1')
end
emit(id, j.owner, 'cancel_requested', j.state, 'Cancel requested by ' .. ARGV[3] .. '.', j.attempt, t)
return {'ok', 'cancel_requested', j.attempt, j.worker}
)LUA",
    // archive: P id flag(0|1)
    R"LUA(
local id = ARGV[2]
local j = load(id)
if not j then return {'err', 'missing', ''} end
local old = redis.call('HGET', jkey(id), 'archive') or '0'
if old ~= ARGV[3] then
  redis.call('HSET', jkey(id), 'archive', ARGV[3])
  local kind = 'archive'
  if ARGV[3] == '0' then kind = 'unarchive' end
  open_stream(id)
  emit(id, j.owner, kind, j.state, redis.call('HGET', jkey(id), 'progress') or '', j.attempt, now_s())
end
return {'ok', j.state, j.attempt, j.worker}
)LUA",
    // delete: P id
    R"LUA(
local id = ARGV[2]
local j = load(id)
if not j then return {'err', 'missing', ''} end
if not TERMINAL[j.state] then return {'err', 'active', j.state} end
local parent = redis.call('HGET', jkey(id), 'parent')
revoke_job_token(id)
redis.call('DEL', jkey(id), jkey(id) .. ':events', jkey(id) .. ':log', jkey(id) .. ':children')
redis.call('ZREM', P .. 'user:' .. j.owner .. ':jobs', id)
redis.call('ZREM', P .. 'queue', id)
redis.call('ZREM', P .. 'leases', id)
if parent and parent ~= '' then redis.call('SREM', jkey(parent) .. ':children', id) end
count(id, j.state, nil)
redis.call('XADD', P .. 'events', 'MAXLEN', '~', 100000, '*', 'id', id, 'owner', j.owner,
  'type', 'deleted', 'state', j.state, 'progress', '', 'attempt', j.attempt, 'time', now_s())
return {'ok', j.state, j.attempt, j.worker}
)LUA",
    // recount_init: P force(0|1) now
    // Starts a recount when the counts do not exist yet (or always, with force): every state's
    // count 0, and the recount's cursor at job ID 0. An unfinished recount is left to go on.
    R"LUA(
local exists = redis.call('HEXISTS', SK, 'ready') == 1
if exists and ARGV[2] ~= '1' then
  if redis.call('HEXISTS', SK, '_rebuild_upto') == 1 then return {'ok', 'rebuilding'} end
  return {'ok', 'exists'}
end
redis.call('DEL', SK)
for _, s in ipairs(STATES) do redis.call('HSET', SK, s, '0') end
redis.call('HSET', SK, '_rebuild_upto', '0', '_rebuild_started', ARGV[3])
return {'ok', 'started'}
)LUA",
    // recount_step: P batch
    // Counts the states of the next `batch` job IDs after the cursor, up to the ID counter as it
    // is now; past the counter the recount is over (the cursor field goes). Jobs up to the cursor
    // are counted by the transition scripts from then on (count() above), so a job is counted
    // exactly once whatever runs meanwhile. Several gateways may step the same recount.
    R"LUA(
local c = redis.call('HGET', SK, '_rebuild_upto')
if not c then return {'ok', 'done', '0'} end
local last = tonumber(redis.call('GET', P .. 'next_job_id') or '0')
local from = tonumber(c) + 1
local to = math.min(last, tonumber(c) + tonumber(ARGV[2]))
for id = from, to do
  local s = redis.call('HGET', jkey(string.format('%d', id)), 'state')
  if s then redis.call('HINCRBY', SK, s, 1) end
end
if to >= last then
  redis.call('HDEL', SK, '_rebuild_upto', '_rebuild_started')
  return {'ok', 'done', string.format('%d', last)}
end
redis.call('HSET', SK, '_rebuild_upto', string.format('%d', to))
return {'ok', 'more', string.format('%d', to)}
)LUA",
    // lease_many: P lease_s token_ttl_s n {id worker token_sha256}*n
    // The daemon's dispatch of n jobs in one call: each as op_lease, one time for all; a result
    // per job, in order.
    R"LUA(
local n = tonumber(ARGV[4])
local t = now_s()
local out = {}
for i = 0, n - 1 do
  local b = 5 + i * 3
  out[i + 1] = guarded(op_lease, ARGV[b], ARGV[b + 1], ARGV[2], ARGV[b + 2], ARGV[3], t)
  if UNAVAILABLE then return {err = UNAVAILABLE} end
end
return out
)LUA",
    // reports: P n {op id attempt worker a b c d}*n, op 's' start (a host, b rundir, c pid),
    // 'p' progress (a message, b done, c total), 'f' finish (a target, b rc, c prefix, d message).
    // The workers' reports of one outbox batch, in the order they came; a result per report.
    R"LUA(
local n = tonumber(ARGV[2])
local t = now_s()
local out = {}
for i = 0, n - 1 do
  local b = 3 + i * 8
  local op, id, attempt, worker = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  if op == 's' then
    out[i + 1] = guarded(op_start, id, attempt, worker, ARGV[b + 4], ARGV[b + 5], ARGV[b + 6], t)
  elseif op == 'p' then
    out[i + 1] = guarded(op_progress, id, attempt, worker, ARGV[b + 4], ARGV[b + 5], ARGV[b + 6], t)
  elseif op == 'f' then
    out[i + 1] = guarded(op_finish, id, attempt, worker, ARGV[b + 4], ARGV[b + 5], ARGV[b + 6], ARGV[b + 7], t)
  else
    out[i + 1] = {'err', 'bad_op', op}
  end
  if UNAVAILABLE then return {err = UNAVAILABLE} end
end
return out
)LUA",
};

std::string sha1_hex(const std::string& s) {
  unsigned char md[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(s.data()), s.size(), md);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : md) {
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  return out;
}

job_record to_record(const redis_reply& flat) {
  job_record r;
  for (std::size_t i = 0; i + 1 < flat.elements.size(); i += 2)
    r[flat.elements[i].as_string()] = flat.elements[i + 1].as_string();
  return r;
}

transition_result to_result(const redis_reply& r) {
  transition_result out;
  if (r.is_error()) throw std::runtime_error("redis script error: " + r.str);
  if (r.elements.empty()) throw std::runtime_error("redis script: empty reply");
  out.ok = r.elements[0].as_string() == "ok";
  if (out.ok) {
    if (r.elements.size() > 1) out.state = r.elements[1].as_string();
    if (r.elements.size() > 2) out.attempt = r.elements[2].as_integer();
    if (r.elements.size() > 3) out.worker = r.elements[3].as_string();
    if (r.elements.size() > 4) out.record = to_record(r.elements[4]);
  } else {
    if (r.elements.size() > 1) out.reason = r.elements[1].as_string();
    if (r.elements.size() > 2) out.state = r.elements[2].as_string();
  }
  return out;
}

}  // namespace

double queue_score(int priority, job_id id) { return (1000.0 - priority) * 1e12 + static_cast<double>(id); }

std::optional<redis_reply> submit_event_entry(std::string_view create_time) {
  auto dot = create_time.find('.');
  if (dot == 0 || dot == std::string_view::npos || dot + 1 == create_time.size()) return std::nullopt;
  auto digits = [](std::string_view s) {
    return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos && s.size() <= 12;
  };
  auto sec = create_time.substr(0, dot), frac = create_time.substr(dot + 1);
  if (!digits(sec) || !digits(frac)) return std::nullopt;
  // As the script: tonumber(us) / 1000, floored; the fraction is six digits there.
  unsigned long long us = std::stoull(std::string(frac));
  unsigned long long ms = std::stoull(std::string(sec)) * 1000 + us / 1000;
  auto str = [](std::string s) {
    redis_reply r;
    r.type = redis_reply::kind::string;
    r.str = std::move(s);
    return r;
  };
  redis_reply fields;
  fields.type = redis_reply::kind::array;
  for (const char* f : {"type", "transition", "state", "ready", "progress", "Ready.", "attempt", "1"})
    fields.elements.push_back(str(f));
  fields.elements.push_back(str("time"));
  fields.elements.push_back(str(std::string(create_time)));
  redis_reply entry;
  entry.type = redis_reply::kind::array;
  entry.elements.push_back(str(std::to_string(ms) + "-0"));
  entry.elements.push_back(std::move(fields));
  return entry;
}

const std::vector<std::string>& store_scripts() {
  static const std::vector<std::string> scripts = [] {
    std::vector<std::string> v;
    auto table = lua_transition_table();
    auto terminal = lua_terminal_table();
    // Each body runs as main(); its state counts are written once, after it (flush_counts).
    for (int i = 0; i < s_count; ++i)
      v.push_back(std::string(prelude) + table + terminal + ops + "local function main()\n" + bodies[i] +
                  "\nend\nlocal result = main()\nflush_counts()\nreturn result\n");
    return v;
  }();
  return scripts;
}

store::store(redis_client& redis, std::string prefix) : redis_(redis), prefix_(std::move(prefix)) {
  for (const auto& s : store_scripts()) shas_.push_back(sha1_hex(s));
}

net::awaitable<redis_reply> store::eval(int script, std::vector<std::string> args) {
  std::vector<std::string> cmd;
  cmd.reserve(args.size() + 4);
  cmd.push_back("EVALSHA");
  cmd.push_back(shas_[script]);
  cmd.push_back("0");
  cmd.push_back(prefix_);
  for (auto& a : args) cmd.push_back(std::move(a));
  auto r = co_await redis_.async_exec(cmd);
  if (r.is_error() && r.str.rfind("NOSCRIPT", 0) == 0) {
    // First use on this server (or it restarted): load the script and run it once by value.
    cmd[0] = "EVAL";
    cmd[1] = store_scripts()[script];
    r = co_await redis_.async_exec(cmd);
  }
  co_return r;
}

net::awaitable<transition_result> store::eval_result(int script, std::vector<std::string> args) {
  co_return to_result(co_await eval(script, std::move(args)));
}

net::awaitable<transition_result> store::async_create(std::string owner, std::vector<new_job> jobs,
                                                      std::vector<job_id>& ids) {
  std::vector<std::string> args;
  args.reserve(2 + jobs.size() * 7);
  args.push_back(owner);
  args.push_back(std::to_string(jobs.size()));
  for (auto& j : jobs) {
    args.push_back(std::move(j.jobtype));
    args.push_back(std::move(j.config));
    args.push_back(std::move(j.howfig));
    args.push_back(std::to_string(j.priority));
    args.push_back(j.parent ? std::to_string(*j.parent) : "");
    args.push_back(std::to_string(j.max_attempts));
    args.push_back(std::move(j.session));
  }
  auto r = co_await eval(s_create, std::move(args));
  if (r.is_error()) throw std::runtime_error("redis create: " + r.str);
  transition_result out;
  out.ok = r.elements.size() >= 3 && r.elements[0].as_string() == "ok";
  if (!out.ok) {
    out.reason = r.elements.size() > 1 ? r.elements[1].as_string() : "error";
    co_return out;
  }
  ids.clear();
  for (long long id = r.elements[1].as_integer(); id <= r.elements[2].as_integer(); ++id) ids.push_back(id);
  out.state = "ready";
  if (r.elements.size() > 3) out.time = r.elements[3].as_string();
  co_return out;
}

net::awaitable<transition_result> store::async_lease(job_id id, std::string worker, double lease_s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", lease_s);
  return eval_result(s_lease, {std::to_string(id), std::move(worker), buf});
}

net::awaitable<transition_result> store::async_start(job_id id, long long attempt, std::string worker,
                                                     std::string host, std::string rundir, long long pid) {
  return eval_result(s_start, {std::to_string(id), std::to_string(attempt), std::move(worker),
                                              std::move(host), std::move(rundir), std::to_string(pid)});
}

net::awaitable<transition_result> store::async_progress(job_id id, long long attempt, std::string worker,
                                                        std::string message, std::optional<long long> done,
                                                        std::optional<long long> total) {
  return eval_result(
      s_progress, {std::to_string(id), std::to_string(attempt), std::move(worker), std::move(message),
                   done ? std::to_string(*done) : "", total ? std::to_string(*total) : ""});
}

net::awaitable<transition_result> store::async_finish(job_id id, long long attempt, std::string worker,
                                                      job_state target, int return_status,
                                                      std::string prefix, std::string message) {
  return eval_result(
      s_finish, {std::to_string(id), std::to_string(attempt), std::move(worker), std::string(to_string(target)),
                 std::to_string(return_status), std::move(prefix), std::move(message)});
}

net::awaitable<transition_result> store::async_requeue(job_id id, long long attempt, std::string worker,
                                                       requeue_mode mode, std::string reason) {
  return eval_result(s_requeue, {std::to_string(id), std::to_string(attempt), std::move(worker),
                                 std::to_string(static_cast<int>(mode)), std::move(reason)});
}

net::awaitable<transition_result> store::async_cancel(job_id id, std::string by) {
  return eval_result(s_cancel, {std::to_string(id), std::move(by)});
}

net::awaitable<transition_result> store::async_set_archive(job_id id, bool archived) {
  return eval_result(s_archive, {std::to_string(id), archived ? "1" : "0"});
}

net::awaitable<transition_result> store::async_delete(job_id id) {
  return eval_result(s_delete, {std::to_string(id)});
}

net::awaitable<transition_result> store::async_claim(job_id id, std::string worker, double lease_s,
                                                     std::string token_sha256, long long token_ttl_s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", lease_s);
  return eval_result(s_lease, {std::to_string(id), std::move(worker), buf, std::move(token_sha256),
                               std::to_string(token_ttl_s)});
}

namespace {
std::vector<transition_result> to_results(const redis_reply& r, std::size_t n, const char* what) {
  if (r.is_error()) throw std::runtime_error(std::string("redis ") + what + ": " + r.str);
  if (r.elements.size() != n)
    throw std::runtime_error(std::string("redis ") + what + ": " + std::to_string(r.elements.size()) +
                             " results for " + std::to_string(n) + " requests");
  std::vector<transition_result> out;
  out.reserve(n);
  for (const auto& e : r.elements) out.push_back(to_result(e));
  return out;
}
}  // namespace

net::awaitable<std::vector<transition_result>> store::async_claim_many(std::vector<claim_request> requests,
                                                                       double lease_s, long long token_ttl_s) {
  if (requests.empty()) co_return std::vector<transition_result>{};
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", lease_s);
  std::vector<std::string> args;
  args.reserve(3 + requests.size() * 3);
  args.emplace_back(buf);
  args.push_back(std::to_string(token_ttl_s));
  args.push_back(std::to_string(requests.size()));
  for (auto& q : requests) {
    args.push_back(std::to_string(q.id));
    args.push_back(std::move(q.worker));
    args.push_back(std::move(q.token_sha256));
  }
  auto r = co_await eval(s_lease_many, std::move(args));
  co_return to_results(r, requests.size(), "lease_many");
}

net::awaitable<std::vector<transition_result>> store::async_reports(std::vector<report> reports) {
  if (reports.empty()) co_return std::vector<transition_result>{};
  std::vector<std::string> args;
  args.reserve(1 + reports.size() * 8);
  args.push_back(std::to_string(reports.size()));
  for (auto& q : reports) {
    args.emplace_back(q.what == report::kind::start ? "s" : q.what == report::kind::progress ? "p" : "f");
    args.push_back(std::to_string(q.id));
    args.push_back(std::to_string(q.attempt));
    args.push_back(std::move(q.worker));
    args.push_back(std::move(q.a));
    args.push_back(std::move(q.b));
    args.push_back(std::move(q.c));
    args.push_back(std::move(q.d));
  }
  auto r = co_await eval(s_reports, std::move(args));
  co_return to_results(r, reports.size(), "reports");
}

namespace {
// Script arguments, built outside the coroutines (GCC 12 and braced temporaries, STYLE.md).
std::vector<std::string> recount_init_args(bool force) {
  char now[32];
  std::snprintf(now, sizeof now, "%.3f",
                std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
  std::vector<std::string> v;
  v.emplace_back(force ? "1" : "0");
  v.emplace_back(now);
  return v;
}
std::vector<std::string> recount_step_args(std::size_t batch) {
  std::vector<std::string> v;
  v.push_back(std::to_string(batch));
  return v;
}
}  // namespace

net::awaitable<std::string> store::async_recount_start(bool force) {
  auto r = co_await eval(s_recount_init, recount_init_args(force));
  if (r.is_error() || r.elements.size() < 2) throw std::runtime_error("redis recount: " + r.str);
  co_return r.elements[1].as_string();
}

net::awaitable<bool> store::async_recount_step(std::size_t batch, long long* upto) {
  auto r = co_await eval(s_recount_step, recount_step_args(batch));
  if (r.is_error() || r.elements.size() < 3) throw std::runtime_error("redis recount: " + r.str);
  if (upto) *upto = r.elements[2].as_integer();
  co_return r.elements[1].as_string() == "done";
}

net::awaitable<long long> store::async_recount_states(bool force, std::size_t batch) {
  co_await async_recount_start(force);
  long long upto = 0;
  while (!co_await async_recount_step(batch, &upto)) {
  }
  co_return upto;
}

net::awaitable<std::optional<std::map<std::string, long long>>> store::async_state_counts() {
  auto r = co_await redis_.async_exec(redis_cmd("HGETALL", key(state_counts_suffix)));
  if (r.is_error()) throw std::runtime_error("redis HGETALL: " + r.str);
  std::map<std::string, long long> out;
  bool complete = false;
  for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2) {
    auto f = r.elements[i].as_string();
    if (f == "_rebuild_upto") co_return std::nullopt;
    if (f.rfind('_', 0) == 0) continue;
    if (f == "ready") complete = true;
    out[f] = r.elements[i + 1].as_integer();
  }
  if (!complete) co_return std::nullopt;
  co_return out;
}

net::awaitable<void> store::async_load_scripts() {
  std::vector<std::vector<std::string>> cmds;
  for (const auto& s : store_scripts()) cmds.push_back(redis_cmd("SCRIPT", "LOAD", s));
  auto replies = co_await redis_.async_pipeline(std::move(cmds));
  for (const auto& r : replies)
    if (r.is_error()) throw std::runtime_error("SCRIPT LOAD: " + r.str);
}

net::awaitable<std::optional<job_record>> store::async_get(job_id id) {
  std::vector<std::string> cmd;
  cmd.push_back("HGETALL");
  cmd.push_back(job_key(id));
  auto r = co_await redis_.async_exec(std::move(cmd));
  if (r.elements.empty()) co_return std::nullopt;
  co_return to_record(r);
}

}  // namespace descprod
