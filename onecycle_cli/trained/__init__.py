"""A trained run, used: `onecycle evaluate`, `onecycle predict`, `onecycle export`.

`load` rebuilds a run's model from one of its checkpoints (`last`, or `best` by validation
accuracy) with the preprocessing the run trained with; `scores` runs it over labelled images on the
device (test-time flips batched with the images) and reads the results once; `interpret` turns
those into the files fastai's ClassificationInterpretation shows (confusion matrix, most confused
pairs, top losses); `evaluate`, `predict` and `export` are the three commands' bodies.
"""
