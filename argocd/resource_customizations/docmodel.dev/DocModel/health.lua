-- Argo CD health of a DocModel (docmodel.dev/v1alpha1). The first rule that matches wins:
--
--   Suspended    spec.suspend is true (no step starts; a serving revision keeps serving)
--   Degraded     phase Failed (a step failed for good, or the spec is invalid); phase Rejected
--                (the gate rejected the candidate and nothing serves); or the last rollout
--                failed (condition RolledOut=False, reason RolloutFailed)
--   Progressing  no status yet; status.observedGeneration behind metadata.generation (the
--                operator has not handled the current spec); or nothing serves yet
--   Healthy      condition Ready=True for the current generation, also while a newer revision
--                is ingested, trained, evaluated or rolled out behind the serving one
--   Progressing  anything else (the serving revision's server is not ready)
--
-- Only the base and table libraries are used: Argo CD opens no others for a script from
-- argocd-cm unless resource.customizations.useOpenLibs is set.

local hs = {}

local function condition(status, wanted)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

local function said(c)
  if c == nil then
    return "no Ready condition yet"
  end
  local text = c.reason or ""
  if c.message ~= nil and c.message ~= "" then
    if text ~= "" then
      text = text .. ": "
    end
    text = text .. c.message
  end
  return text
end

local busy = {
  Ingesting = "ingesting",
  Training = "training",
  Evaluating = "evaluating",
  RollingOut = "rolling out",
}

local spec = obj.spec or {}
local status = obj.status
local generation = obj.metadata.generation
local serving = nil
if status ~= nil and status.serving ~= nil then
  serving = status.serving.revision
end

if spec.suspend == true then
  hs.status = "Suspended"
  if serving ~= nil then
    hs.message = "spec.suspend is true: no step starts; revision " .. serving .. " keeps serving"
  else
    hs.message = "spec.suspend is true: no step starts; nothing serves"
  end
  return hs
end

if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the DocModel"
  return hs
end

local phase = status.phase
local ready = condition(status, "Ready")

if phase == "Failed" then
  hs.status = "Degraded"
  local failure = status.lastFailure
  if failure ~= nil then
    hs.message = "Step " .. tostring(failure.stage) .. " failed: " .. tostring(failure.reason)
    if failure.message ~= nil and failure.message ~= "" then
      hs.message = hs.message .. ": " .. failure.message
    end
  else
    hs.message = said(ready)
  end
  return hs
end

if phase == "Rejected" then
  hs.status = "Degraded"
  local candidate = status.candidate or {}
  hs.message = "The gate rejected revision " .. tostring(candidate.revision)
  if candidate.reason ~= nil then
    hs.message = hs.message .. " (" .. candidate.reason .. ")"
  end
  if candidate.score ~= nil and candidate.baselineScore ~= nil then
    hs.message = hs.message .. ": score " .. candidate.score .. ", baseline " .. candidate.baselineScore
  end
  hs.message = hs.message .. "; nothing serves"
  return hs
end

local rolledOut = condition(status, "RolledOut")
if rolledOut ~= nil and rolledOut.status == "False" and rolledOut.reason == "RolloutFailed" then
  hs.status = "Degraded"
  hs.message = said(rolledOut)
  return hs
end

if status.observedGeneration == nil or (generation ~= nil and status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to handle generation " .. tostring(generation)
  if status.observedGeneration ~= nil then
    hs.message = hs.message .. " (it last handled " .. tostring(status.observedGeneration) .. ")"
  end
  return hs
end

if serving == nil then
  hs.status = "Progressing"
  if busy[phase] ~= nil and status.revision ~= nil then
    hs.message = "Revision " .. status.revision .. " is " .. busy[phase] .. "; nothing serves yet"
  else
    hs.message = tostring(phase or "Pending") .. ": nothing serves yet"
  end
  return hs
end

if ready ~= nil and ready.status == "True" and ready.observedGeneration == generation then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  if busy[phase] ~= nil and status.revision ~= nil and status.revision ~= serving then
    hs.message = hs.message .. "; revision " .. status.revision .. " is " .. busy[phase]
  end
  return hs
end

hs.status = "Progressing"
hs.message = "Waiting for Ready: " .. said(ready)
return hs
