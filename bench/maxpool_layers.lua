-- configs/cifar10_cpu.lua with a maxpool layer after each block's first convolution instead of
-- conv2d's pool = 2 (the same bits, see README, Layers): the "before" side of the A/B in
-- docs/benchmarks.md, "conv2d's pool = 2".
--   CONFIG_B=configs/cifar10_cpu.lua bench/ab-cpu build build 4 bench/maxpool_layers.lua \
--     data.train_limit=5120 data.tta=none
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local experiment = dofile(here .. "../configs/cifar10_cpu.lua")
local airbench = dofile(here .. "../configs/lib/airbench.lua")
experiment.model = airbench({ 48, 192, 192 }, experiment.optim.weight_decay, 2, false)
return experiment
