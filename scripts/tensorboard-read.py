# Reads a run's TensorBoard event files with TensorBoard's own loader and prints every scalar
# tag with its steps: the independent check of svib's event writer (src/train/tensorboard.rs).
# Needs `pip install tensorboard` (not part of the set-up). Usage: python3 scripts/tensorboard-read.py RUN/tensorboard
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1]); acc.Reload()
for tag in sorted(acc.Tags()['scalars']):
    ev = acc.Scalars(tag)
    print(f"{tag}: {len(ev)} points, steps {[e.step for e in ev]}, last {ev[-1].value:.6g}")
