"""A run is a directory: writing one (`directory`), finding past ones (`history`), and its views, derived
from its files alone: the PNGs (`plots`), report.html (`report`, drawn with the page kit `html`) and
runs side by side (`compare`). `onecycle runs`, `onecycle plot`, `onecycle report`, `onecycle compare`."""
