-- configs/cifar10_cpu.lua with its 3x3 convolutions' products in bfloat16: conv2d's
-- precision = "bf16" (README, Layers) rounds the Winograd products' operands to bf16 and sums in
-- float32, about twice the multiply-adds per instruction on a CPU with AVX-512 BF16; runexp
-- refuses it on a CPU without (and on the GPU), rather than run float32 in its place. The
-- whitening layer (2x2) stays float32. Its effect on accuracy is measured in README, Results.
--
--   build/runexp configs/cifar10_cpu_bf16.lua
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bf16 = dofile(here .. "lib/bf16.lua")
return bf16(dofile(here .. "cifar10_cpu.lua"))
