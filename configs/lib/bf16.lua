-- The bf16 form of an experiment, for configs/cifar10_cpu_bf16.lua and bench/maxpool_layers_bf16.lua;
-- not a config itself. Returns a function that gives every 3x3 convolution of experiment.model
-- conv2d's precision = "bf16" (its Winograd products' operands rounded to bf16, summed in
-- float32) and returns the experiment; other layers, the 2x2 whitening one included, stay float32.
return function(experiment)
  for _, layer in ipairs(experiment.model) do
    if layer[1] == "conv2d" and layer.kernel == 3 then layer.precision = "bf16" end
  end
  return experiment
end
