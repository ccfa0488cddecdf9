-- A small generated task that any machine learns in seconds: try runexp without CIFAR-10.
--   build/runexp configs/synthetic.lua
return {
  data = { "synthetic", classes = 10, size = 8, batch_size = 32 },
  model = {
    { "conv2d", out = 16, kernel = 3, padding = 1 }, { "relu" }, { "maxpool", size = 2 },
    { "flatten" },
    { "linear", out = 10 },
  },
  loss = "cross_entropy",
  optim = { "sgd", lr = 0.05, momentum = 0.9 },
  epochs = 5,
}
