-- ResNet-9 (David Page, "How to train your ResNet", 2018): 94% on CIFAR-10 in 24 epochs, the
-- DAWNBench-winning recipe, as runexp writes it.
--
--   build/runexp configs/resnet9.lua                     (meant for a GPU: 6.5 GFLOP per image)
--
-- prep (64) -> layer1 (128, pool, plus a residual of two convolutions) -> layer2 (256, pool)
-- -> layer3 (512, pool, plus a residual) -> global max-pool -> linear -> x 0.125.
-- Recipe: batch 512, Nesterov SGD (momentum 0.9, weight decay 5e-4), learning rate rising
-- linearly to 0.4 over 5 epochs and falling to 0 at 24, random 32x32 crops of the 4-pixel
-- reflect-padded image, random flips, 8x8 cutout. Page sums the loss and divides the learning rate
-- by the batch size; runexp averages the loss, which is the same step.
local function conv_bn(out)
  return { "conv2d", out = out, kernel = 3, padding = 1, bias = false },
         { "batchnorm" },
         { "relu" }
end
local function residual(c)
  local a, b, r = conv_bn(c)
  local d, e, f = conv_bn(c)
  return { "residual", { a, b, r, d, e, f } }
end
local function unpack_into(t, ...)
  for _, v in ipairs { ... } do t[#t + 1] = v end
end

local model = {}
unpack_into(model, conv_bn(64))
unpack_into(model, conv_bn(128))
unpack_into(model, { "maxpool", size = 2 }, residual(128))
unpack_into(model, conv_bn(256))
unpack_into(model, { "maxpool", size = 2 })
unpack_into(model, conv_bn(512))
unpack_into(model, { "maxpool", size = 2 }, residual(512))
unpack_into(model, { "global_pool", mode = "max" }, { "flatten" }, { "linear", out = 10, bias = false },
            { "scale", by = 0.125 })

return {
  data = { "cifar10", path = "data/cifar-10-batches-bin", valid_fraction = 0, batch_size = 512,
           mean = { 0.4914, 0.4822, 0.4465 }, std = { 0.2470, 0.2435, 0.2616 },
           crop_padding = 4, padding_mode = "reflect", flip = "random", cutout = 8 },
  model = model,
  loss = "cross_entropy",
  optim = { "sgd", lr = 0.4, momentum = 0.9, nesterov = true, weight_decay = 5e-4,
            schedule = { "onecycle", warmup = 5 / 24, start = 0, final = 0 } },
  epochs = 24,
  seed = 1,
  device = "auto",
}
