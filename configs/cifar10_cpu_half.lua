-- configs/cifar10_cpu_sgd.lua at half airbench94's width (32, 128, 128 channels) for 14 epochs: the
-- CPU config before it was widened, kept for the README's results (each row's command runs it)
-- and for slower machines: about 0.44 of cifar10_cpu_sgd.lua's arithmetic per image.
--
--   build/runexp configs/cifar10_cpu_half.lua              89.00% (14 epochs)
--   build/runexp configs/cifar10_cpu_half.lua epochs=20    89.52%
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local experiment = dofile(here .. "cifar10_cpu_sgd.lua")
local airbench = dofile(here .. "lib/airbench.lua")
experiment.model = airbench({ 32, 128, 128 }, experiment.optim.weight_decay, 2, true)
experiment.epochs = 14
return experiment
