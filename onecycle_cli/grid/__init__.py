"""Many runs at once: `onecycle grid --config mnist_sample --vary schedule.max_lr=0.01,0.1 --seeds 2 --parallel 2`.

Three rooms: `spec` (the members from --vary, --seeds and --around find, every one validated before
the first starts), `launch` (each member its own `onecycle train` process, signals forwarded,
--resume) and `record` (grid.json, grid.csv, grid.png and report.html). Only the CLI imports this
package, and none of it imports torch: the parent only spawns processes and reads their files.
"""
