-- Your own pictures, in torchvision's ImageFolder layout:
--   ROOT/train/CLASS/*.png|jpg|jpeg, ROOT/val/CLASS/..., ROOT/test/CLASS/...   (val/ and test/ optional)
--   or ROOT/CLASS/*.png|jpg|jpeg, split by the seed into valid_fraction, test_fraction and the rest
-- Class names are the folder names, sorted. Every picture is decoded once, fitted to `size`, and
-- kept in ROOT/.imagefolder-64x64-resize.cache (rebuilt when a file changes); mean and std, when
-- not given, come from the training split and are printed.
--   build/runexp configs/imagefolder.lua data.path=/my/pictures
return {
  data = { "imagefolder", path = "data/my-pictures", size = 64, resize = "crop", batch_size = 32,
           crop_padding = 4, flip = "random", tta = "flip" },
  model = {
    { "conv2d", out = 32, kernel = 3, padding = 1 }, { "batchnorm" }, { "relu" }, { "maxpool", size = 2 },
    { "conv2d", out = 64, kernel = 3, padding = 1 }, { "batchnorm" }, { "relu" }, { "maxpool", size = 2 },
    { "conv2d", out = 128, kernel = 3, padding = 1 }, { "batchnorm" }, { "relu" },
    { "global_pool", mode = "max" }, { "flatten" },
    { "linear", out = 10 },   -- the number of class folders
  },
  loss = "cross_entropy",
  optim = { "sgd", lr = 0.05, momentum = 0.9, nesterov = true, weight_decay = 5e-4, schedule = { "onecycle", warmup = 0.2 } },
  epochs = 20,
}
