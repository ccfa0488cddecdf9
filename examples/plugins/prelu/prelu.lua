-- The synthetic task with prelu in place of relu; its slopes start at 0.25:
--   make && RUNEXP_PLUGIN_PATH=$PWD/plugins runexp prelu.lua
return {
  data = { "synthetic", classes = 10, size = 8, noise = 1.5, train = 4000, batch_size = 32 },
  model = {
    { "conv2d", out = 16, kernel = 3, padding = 1 }, { "prelu" },
    { "flatten" }, { "linear", out = 10 },
  },
  loss = "cross_entropy",
  optim = { "sgd", lr = 0.01, momentum = 0.9 },
  epochs = 3,
}
