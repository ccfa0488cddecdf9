-- The tutorial's own network (configs/cifar10.lua: three convolutions, three linear layers,
-- dropout), unchanged, with a modern recipe instead of the tutorial's: every training image
-- (no validation split), random crops of the 4-pixel reflect-padded image and random flips,
-- label smoothing, Nesterov SGD with weight decay and a one-cycle learning rate, and the mean of
-- each test image and its mirror. The tutorial's 30 epochs of plain SGD stop near 64%.
--
--   build/runexp configs/cifar10_tutorial_best.lua
local tutorial = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "cifar10.lua")
return {
  data = { "cifar10", path = "data/cifar-10-batches-bin", valid_fraction = 0, batch_size = 128,
           mean = { 0.4914, 0.4822, 0.4465 }, std = { 0.2470, 0.2435, 0.2616 },
           crop_padding = 4, padding_mode = "reflect", flip = "random", tta = "flip", download = true },
  model = tutorial.model,
  loss = { "cross_entropy", label_smoothing = 0.1 },
  optim = { "sgd", lr = 0.05, momentum = 0.9, nesterov = true, weight_decay = 5e-4,
            schedule = { "onecycle", warmup = 0.2, start = 0.1, final = 0 } },
  epochs = 40,
  seed = 1,
  device = "auto",
}
