"""onecycle: LR range tests and 1cycle training for image classifiers, from the command line."""

__version__ = "0.1.0"
