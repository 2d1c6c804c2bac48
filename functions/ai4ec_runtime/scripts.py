"""The Lua script that performs every state change in one Redis round trip.

One script with a ``mode`` argument, rather than one script per operation, so the
helpers that keep the upstream sorted sets, the KEDA pending set, the deadlines and the
expiries consistent exist exactly once. Redis runs a script atomically, so two
concurrent updates of one task can never interleave: the loser sees the winner's state
and is checked against it (a late ``running`` finds ``completed`` and gets a conflict).

Call convention: ``EVALSHA sha 1 <slot key> mode now prefix op_id ttl_op ...``:

* ``<slot key>`` is ``<prefix>ai4ec:slot`` (never written): declared so a Redis Cluster
  client routes the call to the node owning the task's slot; every key the script
  touches starts with ``prefix``, so on a cluster they all hash to that one slot.
* ``now`` is ``''`` in production: timestamps come from Redis ``TIME`` inside the
  script, so they are monotonic per task whatever the clocks of the callers say (tests
  may pin a time).
* ``prefix`` is ``''`` on a single Redis (upstream's key names, byte for byte) and a
  hash tag ``{ai4ec:<shard>}`` on a cluster (see :mod:`ai4ec_runtime.keys`).
* ``op_id`` makes the call replay-safe: the reply of the first run is stored under
  ``<prefix>ai4ec:op:<op_id>`` for ``ttl_op`` seconds and a second run with the same id
  returns it and changes nothing. A caller whose reply was lost (a dropped connection)
  can therefore send the call again without running the transition twice.

Per-task metadata lives in the hash ``ai4ec:task:<TaskId>``:

=======  ===============================================================
field    meaning
=======  ===============================================================
st       BackendStatus
ep       Endpoint (backend URL of the current step)
path     EndpointPath
text     Status (free text shown to the caller)
ts       Timestamp of the last change (ISO-8601 UTC, from Redis TIME)
ptg      PublishToGrid of the last upsert ('1'/'0')
api      API id of ``path`` in routing.json ('' when unknown)
ttl      seconds a finished task is kept (API's, or the pipeline's)
tmo      run timeout of the current step (0 = none)
qto      queue timeout of the current step (0 = none)
maxatt   dispatch attempts allowed per step (retry policy)
boff     first retry backoff in seconds (doubles per retry)
att      dispatch attempt of the current step
pl       pipeline id ('' when not a declarative pipeline task)
step     0-based index of the current pipeline step
steps    JSON ``[[endpoint, path, api, tmo, qto, maxatt, boff], ...]``
dlv      unix time until which a delivery of this dispatch is leased
cl       '1' once the current dispatch was claimed for delivery to its backend
hop      '1' when the current step was reached by a pipeline hop
datt     tries of the current dispatch that failed: the backend was busy or down, or
         the transport refused to publish it
=======  ===============================================================

The ``<TaskId>`` JSON string is rebuilt from these fields on every change, so
``CacheConnectorGet`` is a single ``GET`` that returns stored bytes.
"""

from __future__ import annotations

from string import Template

from . import keys

_LUA = Template(r"""
local mode, P, opid = ARGV[1], ARGV[3], ARGV[4]
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local a = {unpack(ARGV, 6)}
local META, PENDING, PATHS = P .. '$META', P .. '$PENDING', P .. '$PATHS'
local DEADLINES, RETRY, DQ = P .. '$DEADLINES', P .. '$RETRY', P .. '$DQ'
local F = {'st', 'ep', 'path', 'text', 'ts', 'ptg', 'api', 'ttl', 'tmo', 'qto', 'maxatt',
           'boff', 'att', 'pl', 'step', 'steps', 'dlv', 'cl', 'hop', 'datt'}

local function iso(t)
  -- ISO-8601 UTC with milliseconds; days -> civil date (proleptic Gregorian).
  local s = math.floor(t)
  local ms = math.min(999, math.floor((t - s) * 1000))
  local days = math.floor(s / 86400)
  local rem = s - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
                          - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local mo = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if mo <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, mo, d,
    math.floor(rem / 3600), math.floor((rem % 3600) / 60), rem % 60, ms)
end
local now_iso = iso(now)

local function enc(s)
  -- A JSON string. Most values (ids, URLs, paths, status texts) need no escaping and are
  -- quoted as they are: no cjson call, no gsub. Others go through cjson, whose '\/' for
  -- '/' is undone (a '/' is never otherwise preceded by an unpaired backslash in cjson
  -- output) so stored URLs read naturally. Both give the same bytes for a string.
  if not string.find(s, '[%z\1-\31"\\\127]') then return '"' .. s .. '"' end
  return (string.gsub(cjson.encode(s), '\\/', '/'))
end
local function terminal(st) return st == 'completed' or st == 'failed' end
local function pending(st) return st == 'created' or st == 'running' end
local function dq(api) return DQ .. (api ~= '' and api or '_') end

local function load(id)
  local v = redis.call('HMGET', META .. id, unpack(F))
  if not v[1] then return nil end
  -- One table constructor in F's order (a loop over F cost about 2 us a call).
  return {st = v[1], ep = v[2] or '', path = v[3] or '', text = v[4] or '', ts = v[5] or '',
          ptg = v[6] or '', api = v[7] or '', ttl = v[8] or '', tmo = v[9] or '',
          qto = v[10] or '', maxatt = v[11] or '', boff = v[12] or '', att = v[13] or '',
          pl = v[14] or '', step = v[15] or '', steps = v[16] or '', dlv = v[17] or '',
          cl = v[18] or '', hop = v[19] or '', datt = v[20] or ''}
end

local function commit(id, m, dirty)
  -- dirty: list of changed fields, or nil for "all" (a new task).
  local args = {}
  for _, f in ipairs(dirty or F) do args[#args + 1] = f; args[#args + 1] = m[f] end
  redis.call('HSET', META .. id, unpack(args))
  local rec = '{"TaskId":' .. enc(id) .. ',"Timestamp":"' .. m.ts ..
    '","Status":' .. enc(m.text) .. ',"BackendStatus":"' .. m.st ..
    '","Endpoint":' .. enc(m.ep) .. ',"Body":null,"PublishToGrid":' ..
    (m.ptg == '1' and 'true' or 'false') .. ',"EndpointPath":' .. enc(m.path) .. '}'
  local ttl = terminal(m.st) and tonumber(m.ttl) or 0
  if ttl and ttl > 0 then
    redis.call('SET', P .. id, rec, 'EX', ttl)
    redis.call('EXPIRE', P .. id .. '_ORIG', ttl)
    redis.call('EXPIRE', META .. id, ttl)
  else
    redis.call('SET', P .. id, rec)
  end
  return rec
end

-- Keep every index consistent with a state change from old to m.
local function move(id, old, m)
  local same_path = old.path == m.path
  -- A task is in exactly one status set, <path>_<status> of its state: only this function
  -- adds to them, and it leaves the old one. A new task (fresh random id) is in none.
  if old.st ~= '' and not (same_path and old.st == m.st) then
    redis.call('ZREM', P .. old.path .. '_' .. old.st, id)
  end
  local score = math.floor(now)
  if same_path and old.st == m.st then
    redis.call('ZADD', P .. m.path .. '_' .. m.st, 'NX', score, id)
  else
    redis.call('ZADD', P .. m.path .. '_' .. m.st, score, id)
  end
  -- Only routed paths are indexed: a caller-chosen Endpoint must not grow the set.
  if not same_path and m.api ~= '' then redis.call('SADD', PATHS, m.path) end
  local was = old.api ~= '' and pending(old.st)
  local is = m.api ~= '' and pending(m.st)
  if was and (not is or old.api ~= m.api) then redis.call('ZREM', PENDING .. old.api, id) end
  if is and not (was and old.api == m.api) then
    redis.call('ZADD', PENDING .. m.api, 'NX', score, id)
  end
  if old.st == 'created' and (m.st ~= 'created' or old.api ~= m.api) then
    redis.call('ZREM', dq(old.api), id)
  end
  if terminal(m.st) then
    redis.call('ZREM', DEADLINES, id)
    redis.call('ZREM', RETRY, id)  -- a retry or a re-publish may be waiting
  elseif m.st == 'running' and (old.st ~= 'running' or not same_path) then
    redis.call('ZREM', RETRY, id)
    local tmo = tonumber(m.tmo) or 0
    if tmo > 0 then redis.call('ZADD', DEADLINES, now + tmo, id)
    else redis.call('ZREM', DEADLINES, id) end
  end
end

-- A dispatch was just handed to the transport: start the queue timeout.
local function arm(id, m)
  local q = tonumber(m.qto) or 0
  if q > 0 then redis.call('ZADD', DEADLINES, now + q, id)
  else redis.call('ZREM', DEADLINES, id) end
end

local function snapshot(id) return redis.call('GET', P .. id) or '' end
local function body_of(id) return redis.call('GET', P .. id .. '_ORIG') or '' end

-- Mode functions. Only the one called is defined (an 'if' around each): Redis runs the
-- whole script body on every call, and building every closure cost about 1.5 us a call.
local M = {}

if mode == 'create' then
function M.create()
  -- 1 id 2 text 3 ep 4 path 5 api 6 ttl 7 tmo 8 qto 9 maxatt 10 boff 11 ptg
  -- 12 body 13 pl 14 step 15 steps 16 idem_key 17 fingerprint 18 queue ('1': also put
  -- the dispatch into the API's delivery queue, as M.enqueue would, in this same call)
  local id, idem = a[1], a[16]
  if idem ~= '' then
    local ex = redis.call('GET', P .. idem)
    if ex then
      local sep = string.find(ex, '|', 1, true)
      local eid = string.sub(ex, 1, sep - 1)
      if string.sub(ex, sep + 1) ~= a[17] then return {'idem_mismatch', eid} end
      return {'replay', snapshot(eid), eid}
    end
  end
  if redis.call('EXISTS', META .. id) == 1 then return {'exists', snapshot(id)} end
  local m = {st = 'created', ep = a[3], path = a[4], text = a[2], ts = now_iso,
             ptg = a[11], api = a[5], ttl = a[6], tmo = a[7], qto = a[8],
             maxatt = a[9], boff = a[10], att = '1', pl = a[13], step = a[14],
             steps = a[15], dlv = '0', cl = '0', hop = '0', datt = '0'}
  move(id, {path = '', api = '', st = ''}, m)
  if m.ptg == '1' then
    redis.call('SET', P .. id .. '_ORIG', a[12])
    arm(id, m)
    if a[18] == '1' then redis.call('ZADD', dq(m.api), now, id) end
  end
  local rec = commit(id, m)
  if idem ~= '' then
    local ttl = tonumber(a[6]) or 0
    if ttl > 0 then redis.call('SET', P .. idem, id .. '|' .. a[17], 'EX', ttl)
    else redis.call('SET', P .. idem, id .. '|' .. a[17]) end
  end
  return {'ok', rec}
end
end

if mode == 'update' then
function M.update()
  -- 1 id 2 has_text 3 text 4 bs 5 ep 6 path 7 api 8 ttl 9 tmo 10 qto 11 maxatt
  -- 12 boff 13 ptg 14 body 15 text_is_json
  local id, has_text, text, ep = a[1], a[2] == '1', a[3], a[5]
  local m = load(id)
  if not m then return {'notfound'} end
  local want = a[4] ~= '' and a[4] or m.st
  if terminal(m.st) then
    if want == m.st and (not has_text or text == m.text) and (ep == '' or ep == m.ep) then
      return {'noop', snapshot(id)}
    end
    -- FailTask after CompleteTask (a service whose handler raised after completing):
    -- the task stays completed, and the late writer is told so without an error.
    if m.st == 'completed' and want == 'failed' then return {'fenced', snapshot(id)} end
    -- A finished declarative pipeline: any late terminal write is from an earlier step.
    if m.pl ~= '' and terminal(want) then return {'fenced', snapshot(id)} end
    return {'conflict', m.st, want, snapshot(id)}
  end
  local publish = a[13] == '1'
  if want == 'created' and m.st == 'running' and not publish then
    return {'conflict', m.st, want, snapshot(id)}
  end
  -- Fence: a declarative pipeline step reached by a hop and not yet claimed for delivery
  -- cannot have been run by anyone, so a write for it is a late duplicate of the previous
  -- step (the upstream client echoes the *current* Endpoint, so it names this step).
  if m.pl ~= '' and m.hop == '1' and m.st == 'created' and m.cl ~= '1' and want ~= 'created'
     and (ep == '' or ep == m.ep) then
    return {'fenced', snapshot(id)}
  end
  if m.pl ~= '' and ep ~= '' and ep ~= m.ep and want ~= 'created' then
    return {'fenced', snapshot(id)}  -- names an earlier step: that step is over
  end
  local old = {st = m.st, path = m.path, api = m.api}
  if ep ~= '' and ep ~= m.ep then
    m.ep, m.path, m.api = ep, a[6], a[7]
    if m.pl == '' then m.ttl = a[8] end
    m.tmo, m.qto, m.maxatt, m.boff = a[9], a[10], a[11], a[12]
    if m.pl ~= '' then
      for i, s in ipairs(cjson.decode(m.steps)) do
        if s[2] == m.path then m.step = tostring(i - 1); break end
      end
    end
  end
  if has_text then m.text = text elseif want ~= m.st then m.text = want end
  if a[13] ~= '' then m.ptg = a[13] end
  m.ts, m.st = now_iso, want
  local dispatch = false
  if want == 'completed' and m.pl ~= '' then
    local steps = cjson.decode(m.steps)
    local k = tonumber(m.step)
    if k + 1 < #steps then
      local nx = steps[k + 2]
      m.st, m.ep, m.path, m.api = 'created', nx[1], nx[2], nx[3]
      m.tmo, m.qto = tostring(nx[4]), tostring(nx[5])
      m.maxatt, m.boff = tostring(nx[6]), tostring(nx[7])
      m.step, m.text, m.ptg, m.hop = tostring(k + 1), 'created', '1', '1'
      local b = a[14]
      if b == '' and a[15] == '1' then b = text end
      if b ~= '' then redis.call('SET', P .. id .. '_ORIG', b) end
      dispatch = true
    end
  elseif want == 'created' and publish then
    if a[14] ~= '' then redis.call('SET', P .. id .. '_ORIG', a[14]) end
    dispatch = true
  end
  if want == 'running' then m.cl = '1' end
  if dispatch then m.att, m.dlv, m.cl, m.datt = '1', '0', '0', '0' end
  move(id, old, m)
  if dispatch then
    arm(id, m)
    redis.call('ZREM', RETRY, id)  -- a retry or a re-publish of the old dispatch
  end
  local rec
  if not dispatch and old.path == m.path then
    rec = commit(id, m, {'st', 'text', 'ts', 'ptg', 'cl'})
  else
    rec = commit(id, m)
  end
  if dispatch then return {'ok', rec, '1', m.ep, body_of(id)} end
  return {'ok', rec, '0'}
end
end

if mode == 'busy' then
function M.busy()
  -- 1 id 2 ep 3 kind ('busy'|'error') 4 detail 5 requeue delay ('' = the transport retries)
  local id = a[1]
  local m = load(id)
  if not m or m.st ~= 'created' or m.ep ~= a[2] then return {'stale'} end
  local since = redis.call('ZSCORE', P .. m.path .. '_created', id)
  local n = 0
  if since then n = math.max(0, math.floor(now - tonumber(since))) end
  if a[3] == 'busy' then
    m.text = 'Awaiting service availability. Queued for ' .. n .. ' seconds.'
  else
    m.text = 'Awaiting backend (' .. a[4] .. '); retrying. Queued for ' .. n .. ' seconds.'
  end
  m.ts, m.dlv, m.cl = now_iso, '0', '0'
  m.datt = tostring((tonumber(m.datt) or 0) + 1)
  local delay = tonumber(a[5])
  if delay then redis.call('ZADD', dq(m.api), now + delay, id) end
  return {'ok', commit(id, m, {'text', 'ts', 'dlv', 'cl', 'datt'}), m.datt}
end
end

if mode == 'repub' then
function M.repub()
  -- 1 id 2 ep 3 text on giving up. The transport refused a dispatch (Event Grid down,
  -- or refusing the app's identity while a new role assignment propagates): it is
  -- published again from the retry queue, 5 s later, doubling up to 60 s, while the
  -- task has waited less than its queue timeout (8 tries without one); then it fails.
  local id = a[1]
  local m = load(id)
  if not m or m.st ~= 'created' or m.ep ~= a[2] then return {'stale'} end
  local since = tonumber(redis.call('ZSCORE', P .. m.path .. '_created', id)) or now
  local waited = math.max(0, math.floor(now - since))
  local n = (tonumber(m.datt) or 0) + 1
  local delay = math.min(60, 5 * 2 ^ (n - 1))
  local q = tonumber(m.qto) or 0
  m.ts, m.dlv, m.cl, m.datt = now_iso, '0', '0', tostring(n)
  if (q > 0 and waited + delay > q) or (q <= 0 and n > 8) then
    local old = {st = m.st, path = m.path, api = m.api}
    m.st, m.text = 'failed', a[3]
    move(id, old, m)
    return {'failed', commit(id, m, {'st', 'text', 'ts', 'dlv', 'cl', 'datt'})}
  end
  m.text = 'Awaiting dispatch; retrying. Queued for ' .. waited .. ' seconds.'
  redis.call('ZADD', RETRY, now + delay, id)
  return {'retry', commit(id, m, {'text', 'ts', 'dlv', 'cl', 'datt'})}
end
end

if mode == 'claim' then
function M.claim()
  -- 1 id 2 ep ('' = any) 3 lease 4 want_body
  local id = a[1]
  local m = load(id)
  if not m then return {'gone'} end
  if m.st ~= 'created' or (a[2] ~= '' and m.ep ~= a[2]) then return {'stale', m.st} end
  local lease = tonumber(m.dlv) or 0
  if lease > now then return {'leased', tostring(lease - now)} end
  redis.call('HSET', META .. id, 'dlv', tostring(now + tonumber(a[3])), 'cl', '1')
  local body = ''
  if a[4] == '1' then body = body_of(id) end
  return {'ok', m.ep, body}
end
end

if mode == 'fail' then
function M.fail()
  -- 1 id 2 ep ('' = any) 3 text 4 only_if_created
  local id = a[1]
  local m = load(id)
  if not m then return {'gone'} end
  if terminal(m.st) or (a[2] ~= '' and m.ep ~= a[2]) or
     (a[4] == '1' and m.st ~= 'created') then
    return {'stale', snapshot(id)}
  end
  local old = {st = m.st, path = m.path, api = m.api}
  m.st, m.text, m.ts, m.dlv = 'failed', a[3], now_iso, '0'
  move(id, old, m)
  return {'ok', commit(id, m, {'st', 'text', 'ts', 'dlv'})}
end
end

if mode == 'sweep' then
function M.sweep()
  -- 1 limit. Tasks past their deadline are retried (per policy) or failed.
  local ids = redis.call('ZRANGEBYSCORE', DEADLINES, '-inf', now, 'LIMIT', 0, tonumber(a[1]))
  local out = {}
  for _, id in ipairs(ids) do
    redis.call('ZREM', DEADLINES, id)
    local m = load(id)
    if m and pending(m.st) then
      local att, maxatt = tonumber(m.att) or 1, tonumber(m.maxatt) or 1
      local reason
      if m.st == 'running' then reason = 'running longer than ' .. m.tmo .. ' seconds'
      else reason = 'not picked up by the backend within ' .. m.qto .. ' seconds' end
      local old = {st = m.st, path = m.path, api = m.api}
      m.ts, m.dlv, m.cl, m.datt = now_iso, '0', '0', '0'
      if att < maxatt then
        m.att, m.st = tostring(att + 1), 'created'
        m.text = 'Retrying: ' .. reason .. ' (attempt ' .. (att + 1) .. ' of ' .. maxatt .. ').'
        move(id, old, m)
        redis.call('ZREM', dq(m.api), id)  -- the retry is dispatched afresh by 'due'
        redis.call('ZADD', RETRY, now + (tonumber(m.boff) or 0) * (2 ^ (att - 1)), id)
        commit(id, m, {'st', 'text', 'ts', 'dlv', 'att', 'cl', 'datt'})
        out[#out + 1] = id; out[#out + 1] = 'retry'
      else
        m.st = 'failed'
        m.text = 'Failed - ' .. reason .. ' (attempt ' .. att .. ' of ' .. maxatt .. ').'
        move(id, old, m)
        commit(id, m, {'st', 'text', 'ts', 'dlv', 'cl', 'datt'})
        out[#out + 1] = id; out[#out + 1] = 'failed'
      end
    end
  end
  return out
end
end

if mode == 'due' then
function M.due()
  -- 1 limit. Claim retries whose backoff has passed; returns id, endpoint, body triples.
  local ids = redis.call('ZRANGEBYSCORE', RETRY, '-inf', now, 'LIMIT', 0, tonumber(a[1]))
  local out = {}
  for _, id in ipairs(ids) do
    redis.call('ZREM', RETRY, id)
    local m = load(id)
    if m and m.st == 'created' then
      redis.call('HSET', META .. id, 'dlv', '0')
      arm(id, m)
      out[#out + 1] = id; out[#out + 1] = m.ep; out[#out + 1] = body_of(id)
    end
  end
  return out
end
end

if mode == 'enqueue' then
function M.enqueue()
  -- 1 id 2 delay: put a dispatch into its API's durable delivery queue.
  local m = load(a[1])
  if not m or m.st ~= 'created' then return {'stale'} end
  redis.call('ZADD', dq(m.api), now + (tonumber(a[2]) or 0), a[1])
  return {'ok', m.api}
end
end

if mode == 'take' then
function M.take()
  -- 1 api 2 limit 3 lease: lease due entries of one API's delivery queue. A taken entry
  -- stays queued, due again when the lease ends, so a host killed mid-delivery loses
  -- nothing. Returns id, endpoint, body, busy-count quadruples.
  local key = dq(a[1])
  local ids = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, tonumber(a[2]))
  local out = {}
  for _, id in ipairs(ids) do
    local m = load(id)
    if not m or m.st ~= 'created' then
      redis.call('ZREM', key, id)
    else
      redis.call('ZADD', key, now + tonumber(a[3]), id)
      out[#out + 1] = id; out[#out + 1] = m.ep; out[#out + 1] = body_of(id)
      out[#out + 1] = m.datt
    end
  end
  return out
end
end

if mode == 'dqdone' then
function M.dqdone()
  -- 1 id 2 api: the delivery is settled (delivered, rejected, failed or moved on).
  return redis.call('ZREM', dq(a[2]), a[1])
end
end

if mode == 'dqnext' then
function M.dqnext()
  -- 1 api: seconds until the next entry of a delivery queue is due (-1 = empty).
  local first = redis.call('ZRANGE', dq(a[1]), 0, 0, 'WITHSCORES')
  if not first[2] then return '-1' end
  return tostring(math.max(0, tonumber(first[2]) - now))
end
end

if mode == 'current' then
function M.current()
  -- 1 key 2 delta 3 expire: the request reporter counter, never below zero.
  local key = P .. a[1]
  local v = redis.call('INCRBY', key, a[2])
  if v < 0 then redis.call('SET', key, 0); v = 0 end
  redis.call('EXPIRE', key, a[3])
  return v
end
end

local fn = M[mode]
if not fn then return redis.error_reply('ai4ec: unknown script mode ' .. tostring(mode)) end
local opkey = nil
if opid ~= '' and mode == 'current' then
  -- The counter key is in no shard: keep the record in the counter's own slot.
  if not string.find(KEYS[1], '[{}]') then opkey = '$OP' .. opid .. '{' .. KEYS[1] .. '}' end
elseif opid ~= '' then
  opkey = P .. '$OP' .. opid
end
if opkey then
  local prev = redis.call('GET', opkey)
  if prev then return cjson.decode(prev) end
end
local out = fn()
if opkey then redis.call('SET', opkey, cjson.encode(out), 'EX', tonumber(ARGV[5])) end
return out
""")

#: The script text, with the key prefixes of :mod:`ai4ec_runtime.keys` filled in.
TASK_SCRIPT = _LUA.substitute(
    META=keys.META_PREFIX,
    PENDING=keys.PENDING_PREFIX,
    PATHS=keys.PATHS,
    DEADLINES=keys.DEADLINES,
    RETRY=keys.RETRY,
    DQ=keys.DELIVERY_QUEUE_PREFIX,
    OP=keys.OP_PREFIX,
)
