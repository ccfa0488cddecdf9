-- configs/cifar10_cpu_bf16.lua with a maxpool layer after each block's first convolution instead
-- of conv2d's pool = 2: the bf16 twin of bench/maxpool_layers.lua.
--   CONFIG_B=configs/cifar10_cpu_bf16.lua bench/ab-cpu build build 4 bench/maxpool_layers_bf16.lua \
--     data.train_limit=7680 data.tta=none
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bf16 = dofile(here .. "../configs/lib/bf16.lua")
return bf16(dofile(here .. "maxpool_layers.lua"))
