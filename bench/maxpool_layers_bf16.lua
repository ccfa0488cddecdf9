-- configs/cifar10_cpu_bf16.lua with a maxpool layer after each block's first convolution instead
-- of conv2d's pool = 2: the bf16 twin of bench/maxpool_layers.lua.
--   CONFIG_B=configs/cifar10_cpu_bf16.lua bench/ab-cpu build build 4 bench/maxpool_layers_bf16.lua \
--     data.train_limit=7680 data.tta=none
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local experiment = dofile(here .. "maxpool_layers.lua")
for _, layer in ipairs(experiment.model) do
  if layer[1] == "conv2d" and layer.kernel == 3 then layer.precision = "bf16" end
end
return experiment
