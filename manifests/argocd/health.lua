-- Argo CD health of the Kaktus kinds (VirtualMachine, Volume, Bridge), read from the conditions the
-- operator writes, as kstatus reads them: Stalled True is Degraded, Ready True is Healthy (a VM that
-- is stopped as asked is Suspended), anything else is Progressing, with the operator's own words.
local hs = { status = "Progressing", message = "waiting for the operator" }

local function condition(status, type)
  for _, c in ipairs(status.conditions or {}) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function words(c)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason
end

local status = obj.status
if status == nil then
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= generation then
  hs.message = "waiting for the operator to observe generation " .. generation
  return hs
end

local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = words(stalled)
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  if obj.kind == "VirtualMachine" and status.phase == "Stopped" then
    hs.status = "Suspended"
  else
    hs.status = "Healthy"
  end
  hs.message = words(ready)
  return hs
end

local reconciling = condition(status, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = words(reconciling)
elseif ready ~= nil then
  hs.message = words(ready)
end
return hs
