-- The PyTorch CIFAR-10 tutorial, exactly: three 3x3 convolutions (3->16->32->64, padding 1),
-- each followed by relu and a 2x2 max-pool; flatten; dropout 0.25; linear 1024->120->60->10
-- with relu and dropout between. Cross-entropy, SGD lr 0.01 momentum 0.9, batch 20, 80/20
-- train/validation split, inputs normalized with mean 0.5 and std 0.5 per channel.
--
--   build/runexp configs/cifar10.lua epochs=3 data.path=data/cifar-10-batches-bin
--
-- Layer positions match the tutorial's nn.Sequential, so checkpoint names do too
-- ("0.weight" is the first convolution, "11.weight" the first linear layer).
return {
  data = { "cifar10", path = "data/cifar-10-batches-bin", valid_fraction = 0.2, batch_size = 20,
           mean = { 0.5, 0.5, 0.5 }, std = { 0.5, 0.5, 0.5 },
           download = true },  -- fetched, checked and extracted on first use (README: getting CIFAR-10)
  model = {
    { "conv2d", out = 16, kernel = 3, padding = 1 }, { "relu" }, { "maxpool", size = 2 },
    { "conv2d", out = 32, kernel = 3, padding = 1 }, { "relu" }, { "maxpool", size = 2 },
    { "conv2d", out = 64, kernel = 3, padding = 1 }, { "relu" }, { "maxpool", size = 2 },
    { "flatten" },
    { "dropout", p = 0.25 },
    { "linear", out = 120 }, { "relu" }, { "dropout", p = 0.25 },
    { "linear", out = 60 }, { "relu" }, { "dropout", p = 0.25 },
    { "linear", out = 10 },
  },
  loss = "cross_entropy",
  optim = { "sgd", lr = 0.01, momentum = 0.9 },
  epochs = 30,
  seed = 1,
  device = "auto",
}
