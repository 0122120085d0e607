-- Argo CD health check for cachetier.io/CacheTier (the same verdict as kstatus):
--   argocd-cm: resource.customizations.health.cachetier.io_CacheTier: |  (this file)
-- Progressing until the operator has observed the current generation or while it
-- reconciles (condition Reconciling); Degraded when it cannot proceed (condition
-- Stalled: an invalid spec, a missing Secret, ...); Healthy otherwise, with what the
-- Ready and Degraded conditions say (a PlacementDegraded warning keeps it Healthy).
local hs = { status = "Progressing", message = "Waiting for the operator" }
if obj.status == nil then
  return hs
end
local generation = obj.metadata.generation or 0
local observed = obj.status.observedGeneration or 0
if observed < generation then
  hs.message = "Generation " .. generation .. " not observed yet (observed " .. observed .. ")"
  return hs
end
local conditions = {}
for _, c in ipairs(obj.status.conditions or {}) do
  conditions[c.type] = c
end
local function said(c)
  if c == nil then return "" end
  if c.message ~= nil and c.message ~= "" then return c.message end
  return c.reason or ""
end
local stalled = conditions["Stalled"]
if stalled ~= nil and stalled.status == "True" then
  return { status = "Degraded", message = said(stalled) }
end
local reconciling = conditions["Reconciling"]
if reconciling ~= nil and reconciling.status == "True" then
  return { status = "Progressing", message = said(reconciling) }
end
local message = "phase " .. (obj.status.phase or "unknown")
local ready = conditions["Ready"]
if ready ~= nil and said(ready) ~= "" then
  message = message .. ": " .. said(ready)
end
local degraded = conditions["Degraded"]
if degraded ~= nil and degraded.status == "True" then
  message = message .. " (warning: " .. said(degraded) .. ")"
end
return { status = "Healthy", message = message }
