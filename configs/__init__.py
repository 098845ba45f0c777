"""The shipped presets (`--config cifar|mnist|mnist_sample`): package data of onecycle_cli.configs once installed."""
