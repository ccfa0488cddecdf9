-- Sweeps the tutorial's learning rate: a few epochs at each rate, every run in its own folder
-- under the sweep's folder, then a table sorted by best validation loss, printed and written
-- to sweep.csv there, and sweep.html: every run's validation curves on one chart, and the
-- table. A run that fails is reported and the sweep goes on.
--
--   runexp configs/sweep_lr.lua                                   the tutorial on CIFAR-10
--   runexp configs/sweep_lr.lua lrs={0.1,0.01} epochs=1 data=synthetic dir=runs/quick
--
-- `lrs`, `epochs` and `dir` are the sweep's own options; any other key=value goes to every run.
local opt = runexp.options {
  lrs = { 0.1, 0.03, 0.01, 0.003 },
  epochs = 3,
  dir = "runs/sweep_lr-" .. os.date("%Y%m%d-%H%M%S"),
}
local base = runexp.with(dofile(runexp.dir .. "/cifar10.lua"), { epochs = opt.epochs })

local rows = {}
for _, lr in ipairs(opt.lrs) do
  local out = ("%s/lr-%g"):format(opt.dir, lr)
  print(("== lr %g -> %s"):format(lr, out))
  local ok, r = pcall(runexp.train, runexp.with(base, { optim = { lr = lr }, out = out }))
  if ok then
    rows[#rows + 1] = { lr = lr, best_valid_loss = r.best_valid_loss, best_epoch = r.best_epoch,
                        test_accuracy = r.test_accuracy, seconds = r.total_seconds, dir = out, history = r.history }
  else
    print(("lr %g failed: %s"):format(lr, r))
    rows[#rows + 1] = { lr = lr, error = r, dir = out }
  end
end

-- Failed runs sort last.
table.sort(rows, function(a, b) return (a.best_valid_loss or math.huge) < (b.best_valid_loss or math.huge) end)
local csv = { "lr,best_valid_loss,best_epoch,test_accuracy,seconds,dir,error" }
print(("\n%-10s %15s %10s %14s  %s"):format("lr", "best valid loss", "best epoch", "test accuracy", "run"))
for _, r in ipairs(rows) do
  if r.error then
    print(("%-10g %15s %10s %14s  %s"):format(r.lr, "failed", "-", "-", r.error))
    csv[#csv + 1] = ("%g,,,,,%s,%q"):format(r.lr, r.dir, r.error)
  else
    print(("%-10g %15.4f %10d %13.2f%%  %s"):format(r.lr, r.best_valid_loss, r.best_epoch, 100 * r.test_accuracy, r.dir))
    csv[#csv + 1] = ("%g,%.6f,%d,%.4f,%.1f,%s,"):format(r.lr, r.best_valid_loss, r.best_epoch, r.test_accuracy,
                                                        r.seconds, r.dir)
  end
end
runexp.write_file(opt.dir .. "/sweep.csv", table.concat(csv, "\n") .. "\n")
local report = {}
for _, r in ipairs(rows) do
  report[#report + 1] = { label = ("lr %g"):format(r.lr), history = r.history, best_valid_loss = r.best_valid_loss,
                          best_epoch = r.best_epoch, test_accuracy = r.test_accuracy, run_dir = r.dir, error = r.error }
end
runexp.sweep_report(opt.dir .. "/sweep.html", report)
print("wrote " .. opt.dir .. "/sweep.csv and sweep.html")
