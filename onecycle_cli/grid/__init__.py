"""Many runs at once: `onecycle grid --config mnist_sample --vary schedule.max_lr=0.01,0.1 --seeds 2 --parallel 2`.

Its rooms: `spec` (the members from --vary, --seeds and --around find, every one validated before
the first starts), `launch` (a parent running each member as its own `onecycle train` process,
signals forwarded, --resume), `array` (a cluster's job array: --index K tasks sharing one grid
directory, --collect), `submit` (the array sent out through submitit, --launcher slurm|local),
`record` (grid.json, grid.csv, grid.png and report.html) and `command` (what the CLI's flags ask
of them). Only the CLI imports this package, and none of it imports torch: the grid only spawns
processes and reads their files.
"""
