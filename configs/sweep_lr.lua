-- Sweeps the tutorial's learning rate: a few epochs at each rate, every run in its own folder
-- under the sweep's folder, all run by runexp.map (one after another, or side by side with
-- jobs=N, over the ranks of mpirun/srun, or one shard of a Slurm job array with shard=I/N).
-- runexp.map writes sweep.csv (every run in the order given) and sweep.html (every run's
-- validation curves on one chart, and the table) there; this prints the table sorted by best
-- validation loss. A run that fails is reported and the sweep goes on.
--
--   runexp configs/sweep_lr.lua                                   the tutorial on CIFAR-10
--   runexp configs/sweep_lr.lua lrs={0.1,0.01} epochs=1 data=synthetic dir=runs/quick
--   runexp configs/sweep_lr.lua jobs=4 threads=1                  four runs at once
--
-- `lrs`, `epochs` and `dir` are the sweep's own options; jobs= and shard= are runexp.map's;
-- any other key=value goes to every run.
local opt = runexp.options {
  lrs = { 0.1, 0.03, 0.01, 0.003 },
  epochs = 3,
  dir = "runs/sweep_lr-" .. os.date("%Y%m%d-%H%M%S"),
}
local base = runexp.with(dofile(runexp.dir .. "/cifar10.lua"), { epochs = opt.epochs })

local experiments, labels = {}, {}
for i, lr in ipairs(opt.lrs) do
  experiments[i] = runexp.with(base, { optim = { lr = lr }, out = ("%s/lr-%g"):format(opt.dir, lr) })
  labels[i] = ("lr %g"):format(lr)
end
local results = runexp.map(experiments, { dir = opt.dir, labels = labels })

local rows = {}
for i, r in ipairs(results) do
  rows[i] = { lr = opt.lrs[i], r = r }
  if not r.ok then print(("lr %g failed: %s"):format(opt.lrs[i], r.error)) end
end
-- Failed runs sort last.
table.sort(rows, function(a, b) return (a.r.best_valid_loss or math.huge) < (b.r.best_valid_loss or math.huge) end)
print(("\n%-10s %15s %10s %14s  %s"):format("lr", "best valid loss", "best epoch", "test accuracy", "run"))
for _, row in ipairs(rows) do
  local r = row.r
  if r.ok then
    print(("%-10g %15.4f %10d %13.2f%%  %s"):format(row.lr, r.best_valid_loss, r.best_epoch, 100 * r.test_accuracy,
                                                    r.run_dir))
  else
    print(("%-10g %15s %10s %14s  %s"):format(row.lr, "failed", "-", "-", r.error))
  end
end
print(("\nevery run in order: %s/sweep.csv; their curves: %s/sweep.html"):format(opt.dir, opt.dir))
