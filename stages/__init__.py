"""DVC stage entry points: `python -m stages.<name>` reads its params.yaml section and calls the
library. Outputs are written atomically by the library helpers."""
