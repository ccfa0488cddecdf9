-- airbench94's network (Keller Jordan, 2024) as a runexp model list, for configs/airbench94.lua
-- and configs/cifar10_cpu.lua; not a config itself. Returns a function of
--   width        the three blocks' channels ({ 64, 256, 256 } in airbench94)
--   wd           optim.weight_decay (the batchnorm biases, 64 times faster, get wd / 64)
--   bias_epochs  epochs the whitening layer's bias trains (3 of airbench94's 10)
--   fused_pool   true: each block's first convolution max-pools its own output (conv2d's
--                pool = 2, the CPU only) instead of a maxpool layer after it: the same bits,
--                without the full-size output passing through memory (README, Layers)
-- A frozen 2x2 patch-whitening convolution computed from the training images, then three blocks
-- of conv-pool-batchnorm-gelu-conv-batchnorm-gelu, a 3x3 max-pool, a linear layer and a 1/9 scale.
-- Each batchnorm-gelu pair is one layer, batchnorm with activation = "gelu": the same arithmetic
-- in one pass over the batch's tensor each way instead of two (README, Layers).
local bias_scale = 64

return function(width, wd, bias_epochs, fused_pool)
  local function conv(out, pool)
    return { "conv2d", out = out, kernel = 3, padding = 1, bias = false, init = "dirac", pool = pool }
  end
  local function norm_gelu()
    -- PyTorch momentum 0.4 is airbench's 0.6 "keep" rate; the scale stays 1, only the shift learns.
    return { "batchnorm", eps = 1e-12, momentum = 0.4, activation = "gelu", frozen = { weight = true },
             lr_scale = { bias = bias_scale }, weight_decay = { bias = wd / bias_scale } }
  end
  local model = {
    { "conv2d", out = 24, kernel = 2, padding = 0, bias = true, init = "whiten",
      frozen = { weight = true }, train_epochs = { bias = bias_epochs } },
    { "gelu" },
  }
  local function add(layers)
    for _, layer in ipairs(layers) do model[#model + 1] = layer end
  end
  for _, w in ipairs(width) do
    if fused_pool then add { conv(w, 2), norm_gelu(), conv(w), norm_gelu() }
    else add { conv(w), { "maxpool", size = 2 }, norm_gelu(), conv(w), norm_gelu() } end
  end
  add { { "maxpool", size = 3 }, { "flatten" }, { "linear", out = 10, bias = false }, { "scale", by = 1 / 9 } }
  return model
end
