-- configs/cifar10_cpu.lua with a maxpool layer after each block's first convolution instead of
-- conv2d's pool = 2 (the same bits, see README, Layers): the "before" side of the A/B in
-- docs/benchmarks.md, "conv2d's pool = 2" (measured there on the SGD recipe of the time, now
-- configs/cifar10_cpu_sgd.lua, at f2c7b93). Every other key of the layers stays as it is.
--   CONFIG_B=configs/cifar10_cpu.lua bench/ab-cpu build build 4 bench/maxpool_layers.lua \
--     data.train_limit=5120 data.tta=none
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local experiment = dofile(here .. "../configs/cifar10_cpu.lua")
local model = {}
for _, layer in ipairs(experiment.model) do
  local pool = layer.pool
  layer.pool = nil
  model[#model + 1] = layer
  if pool then model[#model + 1] = { "maxpool", size = pool } end
end
experiment.model = model
return experiment
