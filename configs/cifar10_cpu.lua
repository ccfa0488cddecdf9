-- CIFAR-10 on two CPU cores in under 8 minutes: airbench94's network at three quarters of its
-- width (configs/cifar10_cpu_sgd.lua) trained as airbench94_muon.py (Keller Jordan, 2024) trains
-- airbench94: the muon optimizer (README, Optimizers) for the 3x3 convolutions' filters, Nesterov
-- SGD for the biases and the head, a learning rate falling linearly to 0, 8 epochs, no weight
-- average. On the 2-core development machine, 2026-12-05 (README, Results):
-- 90.43% and 90.06% (seeds 1 and 2, mean 90.25%) in 446.8 and 440.1 s (7.4 minutes on the mean).
--
--   build/runexp configs/cifar10_cpu.lua
--
-- cifar10_cpu_sgd.lua, the recipe before, needs 12 epochs (13.7 and 15.2 minutes in float32 on
-- 2026-12-04) for the same accuracy. Batches of 1000 where airbench94_muon takes 2000: on two cores they run as
-- fast, and twice the steps gave 90.43% against 90.04% (seed 1, float32), with muon's rate
-- scaled by about sqrt(1000 / 2000) (0.24 -> 0.17). airbench94_muon writes its SGD rates for a
-- summed loss over the batch; runexp averages the loss, so they are its rates times the batch
-- (muon's update does not depend on the loss's scale), and weight decay is its shrink per step
-- (2e-6 x the batch) over the rate. Its head starts with weights of standard deviation 1 and
-- divides the logits by the width; here the linear layer keeps its own start (standard
-- deviation s0 = 1 / sqrt(3 x width)), so the scale after it is 1 / (width x s0) and its rate
-- s0^2 times airbench's: the same steps. The whitening layer's bias trains for the first 2
-- epochs at the others' rate (airbench94_muon: 3, its rate falling to 0 by then). muon runs on
-- the CPU only.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local experiment = dofile(here .. "cifar10_cpu_sgd.lua")
local width                            -- the last block's channels: the head's inputs
for _, layer in ipairs(experiment.model) do
  if layer[1] == "conv2d" then width = layer.out end
end
local batch = 1000
local muon_lr = 0.17                   -- airbench94_muon: 0.24 for batches of 2000
local bias_lr = 0.053 * batch          -- the whitening and batchnorm biases
local s0 = 1 / math.sqrt(3 * width)
local head_lr = 0.67 * batch * s0 * s0
local decay = 2e-6 * batch             -- weight decay's shrink per step, as a share of the weight

experiment.data.batch_size = batch
experiment.optim = { "muon", lr = muon_lr, momentum = 0.6, nesterov = true, ns_steps = 3, normalize = true,
                     sgd_momentum = 0.85, weight_decay = 0,
                     schedule = { "onecycle", warmup = 0, final = 0 } }
experiment.ema = 0
experiment.epochs = 8
for _, layer in ipairs(experiment.model) do
  if layer[1] == "batchnorm" or (layer[1] == "conv2d" and layer.kernel == 2) then
    layer.lr_scale = { bias = bias_lr / muon_lr }
    layer.weight_decay = { bias = decay / bias_lr }
  elseif layer[1] == "linear" then
    layer.lr_scale = { weight = head_lr / muon_lr }
    layer.weight_decay = { weight = decay / head_lr }
  elseif layer[1] == "scale" then
    layer.by = 1 / (width * s0)
  end
end
return experiment
