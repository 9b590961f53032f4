"""Light heads on cached features: Keras MLPs, LightAutoML, torch fusion / temporal heads, pre-trained-only
rules and blends (imports `features` and `postprocess`)."""
import os as _os

# torch's OpenMP threads busy-wait between operations by default; on a shared 2-core machine that made a small
# fusion-MLP fit 70x slower (35 s instead of 0.5 s, measured under load). Read when torch is first imported.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
