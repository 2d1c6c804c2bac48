"""The Lua script that performs every state change in one Redis round trip.

One script with a ``mode`` argument, rather than one script per operation, so the
helpers that keep the upstream sorted sets, the KEDA pending set, the deadlines and the
expiries consistent exist exactly once. Redis runs a script atomically, so two
concurrent updates of one task can never interleave: the loser sees the winner's state
and is checked against it (a late ``running`` finds ``completed`` and gets a conflict).

Call convention: ``EVALSHA sha 0 mode now now_iso ...`` (keys are derived inside the
script from the TaskId and the stored EndpointPath, which only the script knows; the
deployment is a single-shard Redis, as upstream's key layout already requires).

Per-task metadata lives in the hash ``ai4ec:task:<TaskId>``:

=======  ===============================================================
field    meaning
=======  ===============================================================
st       BackendStatus
ep       Endpoint (backend URL of the current step)
path     EndpointPath
text     Status (free text shown to the caller)
ts       Timestamp of the last change (ISO-8601 UTC)
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
=======  ===============================================================

The ``<TaskId>`` JSON string is rebuilt from these fields on every change, so
``CacheConnectorGet`` is a single ``GET`` that returns stored bytes.
"""

from __future__ import annotations

from string import Template

from . import keys

_LUA = Template(r"""
local META, PENDING, PATHS = '$META', '$PENDING', '$PATHS'
local DEADLINES, RETRY = '$DEADLINES', '$RETRY'
local mode, now, now_iso = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local STATUSES = {'created', 'running', 'completed', 'failed'}
local F = {'st', 'ep', 'path', 'text', 'ts', 'ptg', 'api', 'ttl', 'tmo', 'qto', 'maxatt',
           'boff', 'att', 'pl', 'step', 'steps', 'dlv'}

local function enc(s)
  -- cjson escapes '/' as '\/'; undo it (a '/' is never otherwise preceded by an
  -- unpaired backslash in cjson output) so stored URLs read naturally.
  return (string.gsub(cjson.encode(s), '\\/', '/'))
end
local function terminal(st) return st == 'completed' or st == 'failed' end
local function pending(st) return st == 'created' or st == 'running' end

local function load(id)
  local v = redis.call('HMGET', META .. id, unpack(F))
  if not v[1] then return nil end
  local m = {}
  for i, f in ipairs(F) do m[f] = v[i] or '' end
  return m
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
    redis.call('SET', id, rec, 'EX', ttl)
    redis.call('EXPIRE', id .. '_ORIG', ttl)
    redis.call('EXPIRE', META .. id, ttl)
  else
    redis.call('SET', id, rec)
  end
  return rec
end

-- Keep every index consistent with a state change from old to m.
local function move(id, old, m)
  local same_path = old.path == m.path
  if old.st ~= '' then  -- a new task (fresh random id) is in no set yet
    local paths = {m.path}
    if not same_path then paths[2] = old.path end
    for _, p in ipairs(paths) do
      for _, s in ipairs(STATUSES) do
        if not (p == m.path and s == m.st) then redis.call('ZREM', p .. '_' .. s, id) end
      end
    end
  end
  local score = math.floor(now)
  if same_path and old.st == m.st then
    redis.call('ZADD', m.path .. '_' .. m.st, 'NX', score, id)
  else
    redis.call('ZADD', m.path .. '_' .. m.st, score, id)
  end
  if not same_path then redis.call('SADD', PATHS, m.path) end
  local was = old.api ~= '' and pending(old.st)
  local is = m.api ~= '' and pending(m.st)
  if was and (not is or old.api ~= m.api) then redis.call('ZREM', PENDING .. old.api, id) end
  if is and not (was and old.api == m.api) then
    redis.call('ZADD', PENDING .. m.api, 'NX', score, id)
  end
  if terminal(m.st) then
    redis.call('ZREM', DEADLINES, id)
    -- Only a timed-out task (attempt > 1) can sit in the retry queue.
    if m.att ~= '1' then redis.call('ZREM', RETRY, id) end
  elseif m.st == 'running' and (old.st ~= 'running' or not same_path) then
    if m.att ~= '1' then redis.call('ZREM', RETRY, id) end
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

local function snapshot(id) return redis.call('GET', id) or '' end

if mode == 'create' then
  -- 4 id 5 text 6 ep 7 path 8 api 9 ttl 10 tmo 11 qto 12 maxatt 13 boff 14 ptg
  -- 15 body 16 pl 17 step 18 steps 19 idem_key 20 fingerprint
  local id, idem = ARGV[4], ARGV[19]
  if idem ~= '' then
    local ex = redis.call('GET', idem)
    if ex then
      local sep = string.find(ex, '|', 1, true)
      local eid = string.sub(ex, 1, sep - 1)
      if string.sub(ex, sep + 1) ~= ARGV[20] then return {'idem_mismatch', eid} end
      return {'replay', snapshot(eid), eid}
    end
  end
  if redis.call('EXISTS', META .. id) == 1 then return {'exists', snapshot(id)} end
  local m = {st = 'created', ep = ARGV[6], path = ARGV[7], text = ARGV[5], ts = now_iso,
             ptg = ARGV[14], api = ARGV[8], ttl = ARGV[9], tmo = ARGV[10], qto = ARGV[11],
             maxatt = ARGV[12], boff = ARGV[13], att = '1', pl = ARGV[16], step = ARGV[17],
             steps = ARGV[18], dlv = '0'}
  move(id, {path = '', api = '', st = ''}, m)
  if m.ptg == '1' then
    redis.call('SET', id .. '_ORIG', ARGV[15])
    arm(id, m)
  end
  local rec = commit(id, m)
  if idem ~= '' then
    local ttl = tonumber(ARGV[9]) or 0
    if ttl > 0 then redis.call('SET', idem, id .. '|' .. ARGV[20], 'EX', ttl)
    else redis.call('SET', idem, id .. '|' .. ARGV[20]) end
  end
  return {'ok', rec}

elseif mode == 'update' then
  -- 4 id 5 has_text 6 text 7 bs 8 ep 9 path 10 api 11 ttl 12 tmo 13 qto 14 maxatt
  -- 15 boff 16 ptg 17 body 18 text_is_json
  local id, has_text, text, ep = ARGV[4], ARGV[5] == '1', ARGV[6], ARGV[8]
  local m = load(id)
  if not m then return {'notfound'} end
  local want = ARGV[7] ~= '' and ARGV[7] or m.st
  if terminal(m.st) then
    if want == m.st and (not has_text or text == m.text) and (ep == '' or ep == m.ep) then
      return {'noop', snapshot(id)}
    end
    return {'conflict', m.st, want, snapshot(id)}
  end
  local publish = ARGV[16] == '1'
  if want == 'created' and m.st == 'running' and not publish then
    return {'conflict', m.st, want, snapshot(id)}
  end
  if m.pl ~= '' and ep ~= '' and ep ~= m.ep and want ~= 'created' then
    return {'stale', m.ep, snapshot(id)}
  end
  local old = {st = m.st, path = m.path, api = m.api}
  if ep ~= '' and ep ~= m.ep then
    m.ep, m.path, m.api = ep, ARGV[9], ARGV[10]
    if m.pl == '' then m.ttl = ARGV[11] end
    m.tmo, m.qto, m.maxatt, m.boff = ARGV[12], ARGV[13], ARGV[14], ARGV[15]
    if m.pl ~= '' then
      for i, s in ipairs(cjson.decode(m.steps)) do
        if s[2] == m.path then m.step = tostring(i - 1); break end
      end
    end
  end
  if has_text then m.text = text elseif want ~= m.st then m.text = want end
  if ARGV[16] ~= '' then m.ptg = ARGV[16] end
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
      m.step, m.text, m.ptg = tostring(k + 1), 'created', '1'
      local b = ARGV[17]
      if b == '' and ARGV[18] == '1' then b = text end
      if b ~= '' then redis.call('SET', id .. '_ORIG', b) end
      dispatch = true
    end
  elseif want == 'created' and publish then
    if ARGV[17] ~= '' then redis.call('SET', id .. '_ORIG', ARGV[17]) end
    dispatch = true
  end
  local retrying = m.att ~= '1'  -- a timed-out attempt may sit in the retry queue
  if dispatch then m.att, m.dlv = '1', '0' end
  move(id, old, m)
  if dispatch then
    arm(id, m)
    if retrying then redis.call('ZREM', RETRY, id) end
  end
  local dirty = nil
  if not dispatch and old.path == m.path then dirty = {'st', 'text', 'ts', 'ptg'} end
  local rec = commit(id, m, dirty)
  if dispatch then
    return {'ok', rec, '1', m.ep, redis.call('GET', id .. '_ORIG') or ''}
  end
  return {'ok', rec, '0'}

elseif mode == 'busy' then
  -- 4 id 5 ep 6 kind ('busy'|'error') 7 detail
  local id = ARGV[4]
  local m = load(id)
  if not m or m.st ~= 'created' or m.ep ~= ARGV[5] then return {'stale'} end
  local since = redis.call('ZSCORE', m.path .. '_created', id)
  local n = 0
  if since then n = math.max(0, math.floor(now - tonumber(since))) end
  if ARGV[6] == 'busy' then
    m.text = 'Awaiting service availability. Queued for ' .. n .. ' seconds.'
  else
    m.text = 'Awaiting backend (' .. ARGV[7] .. '); retrying. Queued for ' .. n .. ' seconds.'
  end
  m.ts, m.dlv = now_iso, '0'
  return {'ok', commit(id, m, {'text', 'ts', 'dlv'})}

elseif mode == 'claim' then
  -- 4 id 5 ep ('' = any) 6 lease 7 want_body
  local id = ARGV[4]
  local m = load(id)
  if not m then return {'gone'} end
  if m.st ~= 'created' or (ARGV[5] ~= '' and m.ep ~= ARGV[5]) then return {'stale', m.st} end
  local lease = tonumber(m.dlv) or 0
  if lease > now then return {'leased'} end
  redis.call('HSET', META .. id, 'dlv', tostring(now + tonumber(ARGV[6])))
  local body = ''
  if ARGV[7] == '1' then body = redis.call('GET', id .. '_ORIG') or '' end
  return {'ok', m.ep, body}

elseif mode == 'fail' then
  -- 4 id 5 ep ('' = any) 6 text 7 only_if_created
  local id = ARGV[4]
  local m = load(id)
  if not m then return {'gone'} end
  if terminal(m.st) or (ARGV[5] ~= '' and m.ep ~= ARGV[5]) or
     (ARGV[7] == '1' and m.st ~= 'created') then
    return {'stale', snapshot(id)}
  end
  local old = {st = m.st, path = m.path, api = m.api}
  m.st, m.text, m.ts, m.dlv = 'failed', ARGV[6], now_iso, '0'
  move(id, old, m)
  return {'ok', commit(id, m, {'st', 'text', 'ts', 'dlv'})}

elseif mode == 'sweep' then
  -- 4 limit. Tasks past their deadline are retried (per policy) or failed.
  local ids = redis.call('ZRANGEBYSCORE', DEADLINES, '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
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
      m.ts, m.dlv = now_iso, '0'
      if att < maxatt then
        m.att, m.st = tostring(att + 1), 'created'
        m.text = 'Retrying: ' .. reason .. ' (attempt ' .. (att + 1) .. ' of ' .. maxatt .. ').'
        move(id, old, m)
        redis.call('ZADD', RETRY, now + (tonumber(m.boff) or 0) * (2 ^ (att - 1)), id)
        commit(id, m, {'st', 'text', 'ts', 'dlv', 'att'})
        out[#out + 1] = id; out[#out + 1] = 'retry'
      else
        m.st = 'failed'
        m.text = 'Failed - ' .. reason .. ' (attempt ' .. att .. ' of ' .. maxatt .. ').'
        move(id, old, m)
        commit(id, m, {'st', 'text', 'ts', 'dlv'})
        out[#out + 1] = id; out[#out + 1] = 'failed'
      end
    end
  end
  return out

elseif mode == 'due' then
  -- 4 limit. Claim retries whose backoff has passed; returns id, endpoint, body triples.
  local ids = redis.call('ZRANGEBYSCORE', RETRY, '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
  local out = {}
  for _, id in ipairs(ids) do
    redis.call('ZREM', RETRY, id)
    local m = load(id)
    if m and m.st == 'created' then
      redis.call('HSET', META .. id, 'dlv', '0')
      arm(id, m)
      out[#out + 1] = id; out[#out + 1] = m.ep
      out[#out + 1] = redis.call('GET', id .. '_ORIG') or ''
    end
  end
  return out

elseif mode == 'current' then
  -- 4 key 5 delta 6 expire: the request reporter counter, never below zero.
  local v = redis.call('INCRBY', ARGV[4], ARGV[5])
  if v < 0 then redis.call('SET', ARGV[4], 0); v = 0 end
  redis.call('EXPIRE', ARGV[4], ARGV[6])
  return v
end
return redis.error_reply('ai4ec: unknown script mode ' .. tostring(mode))
""")

#: The script text, with the key prefixes of :mod:`ai4ec_runtime.keys` filled in.
TASK_SCRIPT = _LUA.substitute(
    META=keys.META_PREFIX,
    PENDING=keys.PENDING_PREFIX,
    PATHS=keys.PATHS,
    DEADLINES=keys.DEADLINES,
    RETRY=keys.RETRY,
)
