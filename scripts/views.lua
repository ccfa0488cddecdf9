-- Test accuracy of one checkpoint with each kind of test-time view (none, mirror, mirror and
-- shifts), for a config whose data plugin offers them (cifar10's `tta`):
--
--   build/runexp scripts/views.lua checkpoint=RUN/best.safetensors config=configs/cifar10_cpu.lua
local opt = runexp.options { checkpoint = "", config = "configs/cifar10_cpu.lua" }
assert(opt.checkpoint ~= "", "give checkpoint=RUN/best.safetensors")
local cfg = dofile(opt.config)
for _, tta in ipairs { "none", "flip", "flip_shift" } do
  local start = os.time()
  local r = runexp.evaluate(opt.checkpoint, runexp.with(cfg, { data = { tta = tta } }), "test")
  print(("tta %-10s test accuracy %.2f%%  (%d s)"):format(tta, 100 * r.accuracy, os.time() - start))
end
